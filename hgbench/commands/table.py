"""`hgbench table`: the comparison table of the finished runs in results/, as Markdown or CSV, or into README.md (and
the manual's docs/reports.md: `--readme` is repeatable);
`--machines` lists the machine folders instead (the names to pass to --results and compare).

By default it reads results/ without results/published/ (the README's example, measured on another machine); name
that folder to read it: `--results results/published`.

Behaviour on bad input: a results folder (or pattern) that does not exist is an error (one line, exit 2); a folder
that exists but holds no finished run prints the table header with a "no finished runs" note and exits 0 (that is
a fresh clone's state before the first run: its results/ holds only published/, which the default leaves out). Corrupt
or foreign JSON files are skipped with a warning on stderr naming each file; the table still renders.
"""

from __future__ import annotations

import argparse
import sys

from hgbench.errors import HGBenchError
from hgbench.report import (
    bench_markdown,
    bench_table,
    comparison_table,
    load_bench_records,
    rewrite_readme,
    to_csv,
    to_markdown,
)
from hgbench.report.machines import machine_folders, machine_line
from hgbench.run.results import RunSummary, expand_sources, load_records

EXAMPLES = """examples:
  hgbench table                               your runs (results/, without results/published): on a terminal a
                                              table that fits it (--wide: every column), else Markdown
  hgbench table --format md                   Markdown, always
  hgbench table --reference                   with the study's published figures beside ours
  hgbench table --format csv > table.csv      for tools (one header line, stable snake_case columns)
  hgbench table --results 'results/cpu-*'     only this machine's records (files, folders or globs)
  hgbench table --reference --results results/published --readme README.md --readme docs/reports.md
                                              rewrite the results section of README and of the manual's
                                              reports page from the published example (what `make table` does)
  hgbench table --bench                       the speed modes measured by `hgbench bench` (results/bench)
  hgbench table --machines                    the machine folders under results/, a line each: the names to
                                              pass to --results and compare
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "table",
        help="comparison table of the runs in results/ (Markdown or CSV)",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--format",
        choices=("md", "csv"),
        default=None,
        help="output format (default: a table that fits the terminal on a terminal, else md)",
    )
    p.add_argument(
        "--wide", action="store_true", help="on a terminal: every column (default: those that rank the cases)"
    )
    p.add_argument(
        "--results",
        action="append",
        metavar="DIR",
        default=None,
        help="record file, folder or glob; repeatable (default: results, where published/ is read only when named)",
    )
    p.add_argument("--reference", action="store_true", help="add the study's published rows and ours/published ratios")
    p.add_argument(
        "--bench", action="store_true", help="the speed modes of hgbench bench records instead (default: results/bench)"
    )
    p.add_argument(
        "--machines",
        action="store_true",
        help="list the machine folders of --results instead (records, finished runs, torch, settings), a line each",
    )
    p.add_argument(
        "--readme",
        action="append",
        metavar="FILE",
        default=None,
        help="rewrite FILE between its hgbench:results markers instead of printing (Markdown only); repeatable",
    )
    p.set_defaults(func=cmd_table, _parser=p)


# What a missing source's error suggests: table and plot take --results, compare takes its paths as arguments.
RESULTS_HINT = "run `hgbench run` first or pass --results DIR"


def require_sources(sources: list[str], *, hint: str = RESULTS_HINT) -> None:
    """Raise a one-line `HGBenchError` naming every source (file, folder, glob) that matches nothing.

    Args:
        sources: record files, folders or globs.
        hint: what the user can do about it, in the calling command's own options.
    """
    _, missing = expand_sources(sources)
    if missing:
        raise HGBenchError(
            f"results not found: {', '.join(missing)} (no such file, folder or matching pattern; {hint})"
        )


def load_or_fail(sources: list[str], *, hint: str = RESULTS_HINT) -> list[RunSummary]:
    """Load the records of `sources`, printing skip warnings to stderr; a source that matches nothing is an error."""
    require_sources(sources, hint=hint)
    summaries, warnings = load_records(sources)
    for warning in warnings:
        print(f"hgbench: warning: {warning}", file=sys.stderr)
    return summaries


def cmd_table(args: argparse.Namespace) -> int:
    if args.readme and args.format == "csv":
        args._parser.error("--readme writes Markdown; drop --format csv")
    if args.wide and args.format is not None:
        args._parser.error(f"--wide is for the terminal table; drop it with --format {args.format}")
    if args.machines:
        return _machines(args)
    if args.bench:
        return _bench_table(args)
    summaries = load_or_fail(args.results or ["results"])
    df = comparison_table(summaries, reference=args.reference)
    if args.format == "csv":
        sys.stdout.write(to_csv(df))
        return 0
    if args.format is None and not args.readme and (args.wide or sys.stdout.isatty()):
        from rich.console import Console

        from hgbench.report.terminal import terminal_width, to_rich

        Console(width=terminal_width(wide=args.wide)).print(to_rich(df, wide=args.wide))
        return 0
    markdown = to_markdown(df)
    if args.readme:
        for readme in args.readme:  # in order: a file without its markers stops here, one line, itself unchanged
            changed = rewrite_readme(readme, markdown)
            print(f"{readme}: results section {'updated' if changed else 'already up to date'}")
        return 0
    sys.stdout.write(markdown)
    return 0


def _bench_table(args: argparse.Namespace) -> int:
    """`--bench`: one row per mode and phase of every `hgbench bench` record."""
    if args.readme:
        args._parser.error("--readme rewrites the run table; drop --bench")
    sources = args.results or ["results/bench"]
    require_sources(sources)
    records, warnings = load_bench_records(sources)
    for warning in warnings:
        print(f"hgbench: warning: {warning}", file=sys.stderr)
    if not records:
        raise HGBenchError(f"no hgbench bench records in {', '.join(sources)} (run `hgbench bench --case C` first)")
    df = bench_table(records)
    sys.stdout.write(to_csv(df) if args.format == "csv" else bench_markdown(df))
    return 0


def _machines(args: argparse.Namespace) -> int:
    """`--machines`: one line per folder of run records under the sources (default: results, without published/)."""
    given = [f"--{name}" for name in ("bench", "reference", "wide", "readme", "format") if getattr(args, name)]
    if given:
        args._parser.error(f"--machines lists folders, it prints no table; drop {' and '.join(given)}")
    sources = args.results or ["results"]
    folders = machine_folders(load_or_fail(sources))
    if not folders:
        print(
            f"no run records in {', '.join(sources)}: `hgbench run` writes them to results/<machine>/; the published "
            "example is read only when named (--results results/published)"
        )
    for folder in folders:
        print(machine_line(folder))
    return 0
