"""The reporter: comparison table, CSV/Markdown rendering, README rewrite, run comparison and the frontier plot.

It only reads `RunSummary` lists (from `hgbench.run.results.load_records`) and `hgbench bench` records, never runs
anything, as pytest-benchmark's ``compare`` only reads saved JSON. One module per job:

- `hgbench.report.table`: the comparison table (`comparison_table`); its docstring lists the CSV columns. Its rows
  are `hgbench.report.grouping`'s, its warnings and notes `hgbench.report.table_notes`'s, the spread and warnings of
  its times `hgbench.report.time_trust`'s.
- `hgbench.report.render`: Markdown and CSV of that table, cell formats, the README's results section;
  `hgbench.report.terminal`: the table for a terminal (rich, fits its width).
- `hgbench.report.figures`: what the pictures share (PNG writing, short labels with a settings caption, the check
  that nothing is clipped).
- `hgbench.report.compare`: `compare_runs` (deltas, Welch's t-test, the paired tests); `hgbench.report.compare_view`
  its one-line-per-case summary and terminal tables.
- `hgbench.report.plot`: the accuracy/time frontier plot.
- `hgbench.report.epoch_plots`: the per-epoch plots: learning curves and where an epoch's time goes.
- `hgbench.report.bench`: the speed-mode tables of `hgbench bench` records.
- `hgbench.report.machines`: the machine folders of a results folder, a line each (`hgbench table --machines`).

The names the commands and tests use are re-exported here, so ``from hgbench.report import X`` works.
"""

from hgbench.report.bench import bench_markdown, bench_table, load_bench_records
from hgbench.report.compare import COMPARE_COLUMNS, TIMING_CAVEAT, compare_runs
from hgbench.report.compare_view import compare_rich_table, compare_summary
from hgbench.report.epoch_plots import PLOTS, curve_series, plot_curves, plot_time, time_bars
from hgbench.report.plot import frontier_panels, plot_frontier
from hgbench.report.render import README_END, README_START, rewrite_readme, to_csv, to_markdown
from hgbench.report.table import REFERENCE_COLUMNS, SMOKE_MARK, TABLE_COLUMNS, comparison_table

__all__ = [
    "COMPARE_COLUMNS",
    "PLOTS",
    "README_END",
    "README_START",
    "REFERENCE_COLUMNS",
    "SMOKE_MARK",
    "TABLE_COLUMNS",
    "TIMING_CAVEAT",
    "bench_markdown",
    "bench_table",
    "compare_rich_table",
    "compare_runs",
    "compare_summary",
    "comparison_table",
    "curve_series",
    "frontier_panels",
    "load_bench_records",
    "plot_curves",
    "plot_frontier",
    "plot_time",
    "rewrite_readme",
    "time_bars",
    "to_csv",
    "to_markdown",
]
