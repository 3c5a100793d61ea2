"""The comparison table for a terminal: a rich table that fits its width (about 120 columns), warnings above and
notes beneath wrapped to the same width.

By default it shows the columns that rank and identify the cases (`NARROW`: case, setting, runs, GFLOPs, the time
and accuracy figures with their spreads); ``wide=True`` shows every column of the Markdown table. Markdown and CSV
(`hgbench.report.render`) stay as they are: this is only what a person reads in a terminal.
"""

from __future__ import annotations

import shutil
from typing import Any

import pandas as pd

from hgbench.report.render import markdown_columns

DEFAULT_WIDTH = 120  # the width aimed at when the terminal's own cannot be read
# The columns a terminal shows without --wide, by their Markdown headers (GFLOPs by prefix: its header names a size).
NARROW: tuple[str, ...] = (
    "case",
    "setting",
    "runs",
    "GFLOPs",
    "min/epoch",
    "data-wait %",
    "val. acc (PCKh@0.5 %)",
    "inference min",
    "published min/epoch",  # with --reference
    "published val. acc",
)


def terminal_width(*, wide: bool = False) -> int:
    """The width to render at: the terminal's columns, at most `DEFAULT_WIDTH` unless `wide`."""
    columns = shutil.get_terminal_size((DEFAULT_WIDTH, 40)).columns
    return columns if wide else min(columns, DEFAULT_WIDTH)


def to_rich(df: pd.DataFrame, *, wide: bool = False) -> Any:
    """A `rich` renderable of a `comparison_table`: warnings, the table, notes (print with `Console.print`)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    columns = markdown_columns(df)
    if not wide:
        columns = [c for c in columns if c[0] in NARROW or c[0].startswith("GFLOPs")]
    table = Table(show_lines=False, header_style="bold", pad_edge=False, expand=False)
    for header, _, align in columns:
        table.add_column(header, justify="right" if align == "right" else "left", overflow="fold")
    for _, row in df.iterrows():
        table.add_row(*(f(row) for _, f, _ in columns))
    parts: list[Any] = [Text(f"Warning: {w}", style="yellow") for w in df.attrs.get("warnings", [])]
    parts.append(table)
    if not wide:
        shown = {c[0] for c in columns}
        hidden = [h for h, _, _ in markdown_columns(df) if h not in shown]
        if hidden:
            parts.append(Text(f"Not shown (--wide shows them): {', '.join(hidden)}.", style="dim"))
    parts += [Text(f"- {note}") for note in df.attrs.get("notes", [])]
    return Group(*parts)
