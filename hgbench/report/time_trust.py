"""How far the table's time figures can be trusted: their spread, and the warnings when they cannot rank the rows.

pyperf's habit is the bar: a time never stands alone. Every time column carries a spread as the accuracy carries
its interval: ``min_per_epoch_low``/``_high`` are the fastest and slowest steady epoch of the row's runs (the warm-up
epoch excluded, as from the mean), ``inference_min_low``/``_high`` the fastest and slowest run's pass (a single pass
per run: a row of one run has none). A warning says so when a row's training time rests on fewer than 2 steady
epochs, when rows' time ranges overlap (those runs cannot order the cases by time), and when a row was measured on a
contended machine, a shared GPU or a MIG slice (`hgbench.measure.contention`; such runs are their own rows, never pooled
with exclusive ones, `load_label`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from hgbench.measure.contention import OTHER_CPU_THRESHOLD, STEAL_THRESHOLD
from hgbench.run.results import RunSummary
from hgbench.spec.cases import case_label

CONTENDED_MARK = "‡"  # after a time measured on a contended machine, a shared GPU or a MIG slice
TIME_INTERVALS: dict[str, tuple[str, str]] = {
    "min_per_epoch": ("min_per_epoch_low", "min_per_epoch_high"),
    "inference_min": ("inference_min_low", "inference_min_high"),
}
_TIME_WORDS = {"min_per_epoch": "min/epoch", "inference_min": "inference min"}
_MAX_LISTED = 4  # overlapping pairs named in a warning


def load_label(run: RunSummary) -> str:
    """``contended``, ``shared GPU``, ``MIG slice``, those that apply, or "" for a run measured alone on a whole GPU
    (or an older record that cannot say)."""
    marks = (("contended", run.contended is True), ("shared GPU", run.shared_gpu), ("MIG slice", run.mig_slice))
    return ", ".join(w for w, on in marks if on)


def time_spread(runs: Sequence[RunSummary]) -> dict[str, Any]:
    """A row's time spread columns: ranges over steady epochs and over runs, the fewest steady epochs, the load."""
    epochs = [m for r in runs for m in r.epoch_minutes]
    passes = [r.inference_min for r in runs if r.inference_min is not None]
    return {
        "min_per_epoch_low": min(epochs) if len(epochs) >= 2 else None,
        "min_per_epoch_high": max(epochs) if len(epochs) >= 2 else None,
        "inference_min_low": min(passes) if len(passes) >= 2 else None,
        "inference_min_high": max(passes) if len(passes) >= 2 else None,
        "steady_epochs": min(len(r.epoch_minutes) for r in runs) if runs else None,
        "timing": ", ".join(dict.fromkeys(t for r in runs if (t := load_label(r)))),
    }


def _name(row: pd.Series) -> str:
    """``case 6`` or ``case 6 (epochs=2)``: the row as the warnings name it."""
    text = case_label(str(row["case"]), bool(row["as_built"]))
    return f"{text} ({row['setting']})" if row.get("setting") else text


def _names(rows: pd.DataFrame) -> str:
    return ", ".join(_name(r) for _, r in rows.iterrows())


def _overlaps(df: pd.DataFrame, metric: str) -> list[str]:
    """Pairs of rows of one device whose ranges of `metric` overlap."""
    low, high = TIME_INTERVALS[metric]
    rows = df[df[low].notna() & df[high].notna()] if {low, high} <= set(df.columns) else df.iloc[0:0]
    pairs = []
    for _, same in rows.groupby("device", sort=False):
        items = list(same.iterrows())
        for i, (_, a) in enumerate(items):
            for _, b in items[i + 1 :]:
                if a[low] <= b[high] and b[low] <= a[high]:
                    pairs.append(f"{_name(a)} and {_name(b)}")
    return pairs


def time_warnings(df: pd.DataFrame) -> list[str]:
    """The warnings above a table whose times cannot be trusted as they stand (none for an empty table)."""
    if df.empty or "steady_epochs" not in df.columns:
        return []
    out = []
    loaded = df[df["timing"].astype(str) != ""]
    if len(loaded):
        out.append(
            f"{CONTENDED_MARK} times of {_names(loaded)} were measured while "
            f"the machine was busy (contended: other processes took over {OTHER_CPU_THRESHOLD:.0%} of the CPU "
            f"time, steal over {STEAL_THRESHOLD:.0%}, or another process used the GPU), on a GPU shared with "
            "other runs or on a MIG slice of one (energy, power and memory then the whole board's): they are not "
            "this machine's speed and are never pooled with runs measured alone on a whole GPU; "
            "`hgbench run --force` measures again on a quiet machine."
        )
    few = df[df["steady_epochs"].notna() & (df["steady_epochs"] < 2) & df["min_per_epoch"].notna()]
    if len(few):
        out.append(
            f"The min/epoch of {_names(few)} rests on fewer than 2 steady epochs "
            "(the first epoch is warm-up, left out): it has no spread and cannot rank; run 3 or more epochs."
        )
    overlaps = {m: _overlaps(df, m) for m in TIME_INTERVALS}
    said = [
        f"{_TIME_WORDS[m]} of "
        + "; ".join(p[:_MAX_LISTED])
        + (f" and {len(p) - _MAX_LISTED} more" if len(p) > _MAX_LISTED else "")
        for m, p in overlaps.items()
        if p
    ]
    if said:
        out.append(
            "Time ranges overlap (" + "; ".join(said) + "): these runs cannot order those rows by time; more epochs "
            "or seeds, on a quiet machine, narrow the ranges."
        )
    return out


def time_note(df: pd.DataFrame) -> list[str]:
    """The note that says what the (low–high) after a time is."""
    if df.empty or not any(df[c].notna().any() for pair in TIME_INTERVALS.values() for c in pair if c in df):
        return []
    return [
        "(low–high) after a time: min/epoch's fastest and slowest steady epoch over the row's runs (warm-up epoch "
        "left out); inference min's fastest and slowest run (one pass each). Where a row pools runs, ± is the "
        "spread of their means."
    ]
