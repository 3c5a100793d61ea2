"""`hgbench compare` in a terminal: a one-line-per-case summary (`compare_summary`) and one compact rich table per
case (`compare_rich_table`), from a `hgbench.report.compare.compare_runs` frame."""

from __future__ import annotations

from typing import Any

import pandas as pd

from hgbench.report.compare import (
    _METRIC_KEYS,
    COMPARE_METRICS,
    NO_DIFFERENCE,
    PAIRED_METRIC,
    SEED_PAIRED_METRIC,
    SIGNIFICANCE_P,
    TIMING_METRICS,
    TIMING_MIN_EFFECT_PCT,
)
from hgbench.report.grouping import _is_missing
from hgbench.report.render import _decimals, _fmt


def _verdict(row: pd.Series) -> str:
    """``differs`` or ``within noise`` for a tested metric (naming the effect-size rule where it decided), else ""."""
    if _is_missing(row["significant"]):
        return ""
    if row["metric"] in (PAIRED_METRIC, SEED_PAIRED_METRIC):
        return "differs" if row["significant"] else NO_DIFFERENCE
    if row["significant"]:
        return "differs"
    small = _METRIC_KEYS.get(str(row["metric"])) in TIMING_METRICS and row["p_value"] < SIGNIFICANCE_P
    return f"within noise (< {TIMING_MIN_EFFECT_PCT:.0f}%)" if small else "within noise"


def compare_rich_table(df: pd.DataFrame) -> Any:
    """Render a `compare_runs` frame for the terminal: one compact rich table per group, p-value reasons beneath.

    Returns:
        A `rich.console.Group` of tables (print it with `rich.console.Console.print`).
    """
    from rich.console import Group
    from rich.table import Table

    tables = []
    for group, rows in df.groupby("group", sort=False):
        runs_a, runs_b = int(rows["a_n"].max()), int(rows["b_n"].max())
        table = Table(title=f"{group}  (A: {runs_a} run(s), B: {runs_b}; delta = B - A)", title_justify="left")
        for col in ("metric", "A", "B", "delta", "delta %", "p", "verdict"):
            table.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
        reasons = []
        for _, r in rows.iterrows():
            d = _decimals(float(r["a_mean"])) if not _is_missing(r["a_mean"]) else None

            def side(mean: Any, std: Any, d: int | None = d) -> str:
                if _is_missing(mean):
                    return "—"
                return _fmt(mean, d) + ("" if _is_missing(std) else f" ± {_fmt(std, d)}")

            dd = 2 if d is None else d
            delta = "—" if _is_missing(r["delta"]) else f"{float(r['delta']):+.{dd}f}"
            if not _is_missing(r["delta_ci95_low"]) and not _is_missing(r["delta_ci95_high"]):
                delta += f" [{float(r['delta_ci95_low']):+.{dd}f}, {float(r['delta_ci95_high']):+.{dd}f}]"
            pct = "—" if _is_missing(r["delta_pct"]) else f"{float(r['delta_pct']):+.1f}%"
            p = "" if _is_missing(r["p_value"]) else f"{float(r['p_value']):.3g}"
            if r["metric"] and r["p_note"] != "not tested":
                p = p or "—"
                reasons.append(f"{r['metric']}: {r['p_note']}")
            table.add_row(
                str(r["metric"]),
                side(r["a_mean"], r["a_std"]),
                side(r["b_mean"], r["b_std"]),
                delta,
                pct,
                p,
                _verdict(r),
            )
        if reasons:
            table.caption = "p: " + "; ".join(reasons)
            table.caption_justify = "left"
        tables.append(table)
    return Group(*tables)


def _delta_text(r: pd.Series) -> str:
    """``+1.60 [-0.30, +3.40]`` or ``-0.071 (-11.3%)``: B - A, with its interval where the row has one."""
    d = _decimals(float(r["a_mean"])) if not _is_missing(r["a_mean"]) else 2
    if _is_missing(r["delta"]):
        return "—"
    text = f"{float(r['delta']):+.{d}f}"
    if not _is_missing(r["delta_ci95_low"]) and not _is_missing(r["delta_ci95_high"]):
        return f"{text} [{float(r['delta_ci95_low']):+.{d}f}, {float(r['delta_ci95_high']):+.{d}f}]"
    return text + ("" if _is_missing(r["delta_pct"]) else f" ({float(r['delta_pct']):+.1f}%)")


def compare_summary(df: pd.DataFrame) -> list[str]:
    """One line per compared case: the accuracy's B - A with the verdict of its best test (paired by seed, else the
    paired bootstrap, else Welch's), and min/epoch's B - A with its verdict (or "untested")."""
    lines = []
    for group, rows in df.groupby("group", sort=False):
        by_metric = {str(r["metric"]): r for _, r in rows.iterrows()}
        accuracy = next(
            (
                by_metric[m]
                for m in (SEED_PAIRED_METRIC, PAIRED_METRIC, COMPARE_METRICS["pckh_mean"])
                if m in by_metric and not _is_missing(by_metric[m]["significant"])
            ),
            by_metric.get(COMPARE_METRICS["pckh_mean"]),
        )
        parts = []
        if accuracy is not None:
            verdict = _verdict(accuracy) or "untested"
            p = "" if _is_missing(accuracy["p_value"]) else f", p {float(accuracy['p_value']):.3g}"
            parts.append(f"PCKh B - A {_delta_text(accuracy)} ({accuracy['metric']}{p}): {verdict}")
        time = by_metric.get(COMPARE_METRICS["min_per_epoch"])
        if time is not None:
            parts.append(f"min/epoch B - A {_delta_text(time)}: {_verdict(time) or 'untested'}")
        lines.append(f"{group}: " + "; ".join(parts))
    return lines
