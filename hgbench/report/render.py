"""Rendering: the comparison table as Markdown or CSV, its cell formats, and the README's results section.

Markdown output is deterministic (no timestamps), so rewriting the README between its markers (`README_START`,
`README_END`) with the same records changes nothing. CSV columns are those of `hgbench.report.table`; empty CSV
cells mean "not measured" (null in the record).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hgbench.errors import HGBenchError
from hgbench.report.table import INTERVAL_COLUMNS, SMOKE_MARK, _is_missing
from hgbench.report.time_trust import CONTENDED_MARK, TIME_INTERVALS
from hgbench.run.results import write_bytes_atomic
from hgbench.spec.cases import case_label

README_START = "<!-- hgbench:results:start -->"
README_END = "<!-- hgbench:results:end -->"


# ------------------------------------------------------------------------------------------------- formatting
def _decimals(x: float) -> int:
    """Decimals for about 3 significant figures, none past the units above 100."""
    a = abs(x)
    if a >= 100:
        return 0
    if a >= 10:
        return 1
    if a >= 1 or a == 0:
        return 2
    return min(6, 2 - math.floor(math.log10(a)))


def _fmt(x: Any, decimals: int | None = None, *, thousands: bool = False) -> str:
    if _is_missing(x):
        return "—"
    d = _decimals(float(x)) if decimals is None else decimals
    return f"{float(x):,.{d}f}" if thousands else f"{float(x):.{d}f}"


def _fmt_pm(row: pd.Series, metric: str, decimals: int | None = None, *, thousands: bool = False) -> str:
    """``mean ± std`` (std shown with the mean's decimals), or the mean alone for a single run."""
    mean, std = row.get(metric), row.get(f"{metric}_std")
    if _is_missing(mean):
        return "—"
    d = _decimals(float(mean)) if decimals is None else decimals
    text = _fmt(mean, d, thousands=thousands)
    return text if _is_missing(std) else f"{text} ± {_fmt(std, d, thousands=thousands)}"


def _fmt_case(row: pd.Series) -> str:
    return case_label(str(row["case"]), row["as_built"], short=True)


def _fmt_params(x: Any) -> str:
    return "—" if _is_missing(x) else f"{int(x) / 1e6:.2f} M"


def _fmt_ratio(x: Any) -> str:
    return "—" if _is_missing(x) else f"{_fmt(x)}×"


# Control characters (C0, DEL, C1) and Unicode's line and paragraph separators: each would end or garble a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _md_text(text: Any) -> str:
    """Text from a record (a variant's description, a device name, a warning) made inert in Markdown: every control
    character a space, and ``& < >`` as HTML entities, so no comment, tag or results marker can enter the README
    (GitHub shows the entities as the characters)."""
    return "".join(_HTML.get(c, c) for c in _CONTROL.sub(" ", str(text)))


def _md_cell(text: Any) -> str:
    """Escape what would break a Markdown table cell (`_md_text`, then backslashes and pipes)."""
    return _md_text(text).replace("\\", "\\\\").replace("|", "\\|")


def _fmt_accuracy(row: pd.Series, metric: str, decimals: int) -> str:
    """``mean ± std``, then ``(low–high)`` for a metric with an interval column (``(—)`` where the records hold
    none), with the smoke mark where the row's setting cannot measure an accuracy (`smoke_reasons`)."""
    text = _fmt_pm(row, metric, decimals)
    if text != "—" and metric in INTERVAL_COLUMNS and metric not in TIME_INTERVALS:
        low, high = (row.get(c) for c in INTERVAL_COLUMNS[metric])
        interval = "—" if _is_missing(low) or _is_missing(high) else f"{_fmt(low, decimals)}–{_fmt(high, decimals)}"
        text = f"{text} ({interval})"
    return f"{text} {SMOKE_MARK}" if text != "—" and row.get("smoke") else text


def _fmt_time(row: pd.Series, metric: str) -> str:
    """``mean ± std (low–high)`` of a time (the range where there is one, `hgbench.report.time_trust`), marked
    ``‡`` where the row was measured on a contended machine, a shared GPU or a MIG slice."""
    text = _fmt_pm(row, metric)
    if text == "—":
        return text
    low, high = (row.get(c) for c in TIME_INTERVALS[metric])
    d = _decimals(float(row[metric]))
    if not _is_missing(low) and not _is_missing(high):
        text = f"{text} ({_fmt(low, d)}–{_fmt(high, d)})"
    return f"{text} {CONTENDED_MARK}" if row.get("timing") else text


def _gflops_column(df: pd.DataFrame) -> tuple[str, Callable[[pd.Series], str]]:
    """The GFLOPs header and cell: the input size in the header when every row shares it, else in each cell."""
    sizes = {int(v) for v in df["gflops_input_res"].dropna()} if "gflops_input_res" in df.columns else set()
    if len(sizes) == 1:
        return f"GFLOPs @{sizes.pop()}px", lambda r: _fmt(r["gflops"], 2)

    def cell(r: pd.Series) -> str:
        res = r.get("gflops_input_res")
        return _fmt(r["gflops"], 2) + ("" if _is_missing(r["gflops"]) or _is_missing(res) else f" @{int(res)}px")

    return "GFLOPs", cell


# (header, alignment, cell) for the Markdown table; reference-only columns are marked. "GFLOPs" is resolved per
# table by `_gflops_column` (its header names the input size).
_MD_COLUMNS: tuple[tuple[str, str, Callable[[pd.Series], str], bool], ...] = (
    ("case", "left", _fmt_case, False),
    ("description", "left", lambda r: str(r["description"]), False),
    ("runs", "right", lambda r: str(r["runs"]), False),
    ("seeds", "left", lambda r: str(r["seeds"]) or "—", False),
    ("params", "right", lambda r: _fmt_params(r["params"]), False),
    ("GFLOPs", "right", lambda r: _fmt(r["gflops"], 2), False),
    ("min/epoch", "right", lambda r: _fmt_time(r, "min_per_epoch"), False),
    ("published min/epoch", "right", lambda r: _fmt(r["published_min_per_epoch"], 1), True),
    ("train ratio", "right", lambda r: _fmt_ratio(r["min_per_epoch_ratio"]), True),
    ("data-wait %", "right", lambda r: _fmt_pm(r, "data_wait_pct", 1), False),
    ("val. acc (PCKh@0.5 %)", "right", lambda r: _fmt_accuracy(r, "pckh_mean", 1), False),
    ("published val. acc", "right", lambda r: _fmt(r["published_val_acc"], 2), True),
    ("heatmap acc", "right", lambda r: _fmt_accuracy(r, "heatmap_acc", 3), False),
    ("inference min", "right", lambda r: _fmt_time(r, "inference_min"), False),
    ("GPU compute min", "right", lambda r: _fmt_pm(r, "inference_device_min"), False),
    ("published inference min", "right", lambda r: _fmt(r["published_inference_min"], 2), True),
    ("infer ratio", "right", lambda r: _fmt_ratio(r["inference_min_ratio"]), True),
    ("images/s", "right", lambda r: _fmt_pm(r, "images_per_s"), False),
    ("energy J/epoch", "right", lambda r: _fmt_pm(r, "energy_j_per_epoch", 0, thousands=True), False),
    ("device", "left", lambda r: str(r["device"]) or "—", False),
)


def markdown_columns(df: pd.DataFrame) -> list[tuple[str, Callable[[pd.Series], str], str]]:
    """(header, cell, alignment) of every column the table shows (the Markdown table's, and the terminal's)."""
    reference = "published_min_per_epoch" in df.columns
    gflops = _gflops_column(df)
    columns = [gflops + (a,) if h == "GFLOPs" else (h, f, a) for h, a, f, ref in _MD_COLUMNS if reference or not ref]
    if "setting" in df.columns and (df["setting"].astype(str) != "").any():
        columns.insert(2, ("setting", lambda r: str(r["setting"]), "left"))
    return columns


def to_markdown(df: pd.DataFrame, *, title: str | None = None, notes: bool = True) -> str:
    """Render a `comparison_table` as a GitHub Markdown table (no `tabulate` needed), warnings above, notes below.

    Args:
        df: the output of `comparison_table` (its ``attrs`` carry the warnings and notes).
        title: an optional bold line above everything.
        notes: print the notes under the table.

    Returns:
        The Markdown text, ending with a newline; deterministic (no timestamps), so a README rewrite is idempotent.
    """
    columns = markdown_columns(df)
    lines: list[str] = []
    if title:
        lines += [f"**{_md_text(title)}**", ""]
    for warning in df.attrs.get("warnings", []):
        lines += [f"> **Warning:** {_md_text(warning)}", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h, _, _ in columns) + " |")
    lines.append("|" + "|".join("---:" if a == "right" else ":---" for _, _, a in columns) + "|")
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_md_cell(f(row)) for _, f, _ in columns) + " |")
    if notes and df.attrs.get("notes"):
        lines.append("")
        lines += [f"- {_md_text(note)}" for note in df.attrs["notes"]]
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    """CSV with one header line (the snake_case columns of `hgbench.report.table`); booleans true/false, null empty."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == bool:
            out[col] = out[col].map({True: "true", False: "false"})
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n", float_format="%.10g")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------- README
def rewrite_readme(readme_path: str | Path, table_markdown: str) -> bool:
    """Replace the text between the results markers in a README with `table_markdown`; change nothing else.

    The markers are ``<!-- hgbench:results:start -->`` and ``<!-- hgbench:results:end -->``, each on its own line;
    what lies between them becomes ``\\n<table>\\n`` in the file's own line ending. The file is rewritten atomically
    and only when the content changes, so a second run with the same records changes nothing (not even mtime).

    Args:
        readme_path: the README to rewrite.
        table_markdown: the new section body (e.g. `to_markdown` output).

    Returns:
        Whether the file changed.

    Raises:
        HGBenchError: the file is missing, or a marker is missing, duplicated or out of order (one line).
    """
    path = Path(readme_path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HGBenchError(f"{path}: README not found") from None
    text = raw.decode("utf-8")
    for marker in (README_START, README_END):
        count = text.count(marker)
        if count != 1:
            what = "missing" if count == 0 else f"found {count} times"
            raise HGBenchError(
                f"{path}: results marker {marker} {what}; the file needs exactly one start and one "
                f"end marker, start first"
            )
    start = text.index(README_START) + len(README_START)
    end = text.index(README_END)
    if end < start:
        raise HGBenchError(f"{path}: results marker {README_END} comes before {README_START}")
    for marker in (README_START, README_END):
        if marker in table_markdown:  # never written: the next rewrite would find the marker twice
            raise HGBenchError(f"{path}: the new results section holds the marker {marker}; README left as it was")
    newline = "\r\n" if "\r\n" in text else "\n"
    body = table_markdown.replace("\r\n", "\n").strip("\n").replace("\n", newline)
    new = text[:start] + newline + body + newline + text[end:]
    if new == text:
        return False
    write_bytes_atomic(path, new.encode("utf-8"))
    return True
