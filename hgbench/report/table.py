"""The comparison table: finished runs grouped into rows (one per case, form, device and setting), their notes.

It only reads `RunSummary` lists (from `hgbench.run.results.load_records`) and never runs anything, as
pytest-benchmark's ``compare`` only reads saved JSON. Only finished runs enter a table; the others are counted in a
note. Which runs pool into a row is `hgbench.report.grouping`'s; the warnings and notes are
`hgbench.report.table_notes`'s.

Comparison table (`comparison_table`), one row per (case, as_built, device, setting) in case order. A row pools only
runs identical in case, form, machine, dataset (name, sizes, fingerprint), hgbench version and every config key of
`hgbench.spec.config.RUN_IDENTITY_KEYS` except the seed, measured alike (alone, or on a contended machine or a shared
GPU); *setting* names whatever of these differs between rows (usually
nothing: one row per case and form), and a warning above the table says so. CSV columns (`to_csv` writes them), in
order:

- ``case`` (str), ``as_built`` (true/false), ``description``, ``runs`` (finished runs pooled), ``seeds`` (each run's
  seed, repeats kept: ``0 1 2``, or ``0 0`` for a rerun), ``device`` (GPU name or ``CPU: <model>``), ``setting``
  (``key=value, ...`` of the keys above that differ between rows; empty when every row shares one setting),
  ``smoke`` (why the row's accuracies are smoke figures, e.g. ``synthetic data, 2 epochs, 12 val people``; empty
  when they are not, see `smoke_reasons`), ``timing`` (``contended``, ``shared GPU``, ``MIG slice``, those that
  apply, or empty for runs measured alone on a whole GPU: `hgbench.report.time_trust`)
- ``params``, ``gflops`` (forward), ``gflops_input_res`` (the input side the GFLOPs were counted at),
  ``steady_epochs`` (the fewest steady epochs, warm-up left out, that a run of the row timed)
- ``min_per_epoch``, ``data_wait_pct``, ``pckh_mean`` (validation accuracy, PCKh@0.5 Mean, %), ``heatmap_acc``
  (fraction), ``inference_min`` (the wall-clock pass), ``inference_device_min`` (its GPU compute, CUDA events),
  ``images_per_s``, ``energy_j_per_epoch``;
  each followed by ``<name>_std``: the sample standard deviation over the row's runs, empty with fewer than 2 values;
  ``pckh_mean`` is also followed by ``pckh_mean_ci95_low`` and ``pckh_mean_ci95_high``: the 95% percentile bootstrap
  interval over validation people (`row_interval`; empty where the records hold no per-person data);
  ``min_per_epoch`` by ``min_per_epoch_low`` and ``_high`` (the fastest and slowest steady epoch of the row's runs;
  empty with fewer than 2) and ``inference_min`` by ``inference_min_low`` and ``_high`` (the fastest and slowest
  run's pass; empty for one run)
- with ``reference=True`` also ``published_min_per_epoch``, ``published_val_acc``, ``published_inference_min``
  (the study's figures, `hgbench.spec.cases.PUBLISHED_HARDWARE`), ``min_per_epoch_ratio``, ``inference_min_ratio``
  (ours / published, only where our runs are the study's setting: full MPII epochs at 256 px, `ratio_blockers`;
  the hardware still differs, so a ratio measures the gap between two set-ups, not a code difference) and
  ``ratio_note`` (why the ratios are empty, e.g. ``not the study's setting: synthetic data, 128 px input``)

Empty CSV cells mean "not measured" (null in the record).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from hgbench.errors import HGBenchError
from hgbench.eval.metrics import pckh_mean_interval
from hgbench.report.grouping import (
    _INT_COLUMNS,
    _TEXT_COLUMNS,
    INTERVAL_COLUMNS,
    METRICS,
    REFERENCE_COLUMNS,
    SMOKE_MARK,
    TABLE_COLUMNS,
    RowGroups,
    _case_order,
    _is_missing,
    _mean_std,
    _union,
    _values,
    group_runs,
    ratio_blockers,
    smoke_reasons,
)
from hgbench.report.table_notes import _ranking_warnings, _table_notes, _table_warnings, ranking_is_noise
from hgbench.report.time_trust import time_spread, time_warnings
from hgbench.run.results import RunSummary
from hgbench.spec.cases import PUBLISHED, get_spec


def comparison_table(summaries: Iterable[RunSummary], *, reference: bool = False) -> pd.DataFrame:
    """One row per (case, as_built, device, setting) of the finished runs, in case order; mean and std over runs.

    A row pools only runs identical in case, form, machine, dataset, hgbench version and every experiment-defining
    config key (`hgbench.spec.config.RUN_IDENTITY_KEYS`) but the seed; runs differing otherwise are separate rows whose
    setting column names the difference, with a warning above the table.

    Args:
        summaries: run summaries (any status; only finished ones are shown, the others are counted in a note).
        reference: add the study's published figures and the ours/published ratios of the two time columns (only
            where our run is the study's setting, `ratio_blockers`), and a row (with no runs) for every published
            case not measured yet.

    Returns:
        The table with the columns of `TABLE_COLUMNS` (+ `REFERENCE_COLUMNS`), numeric where numeric. ``df.attrs``
        holds ``warnings`` (mixed devices or settings) and ``notes`` (seeds, smoke figures, published hardware,
        skipped runs, shared setting) as lists of one-line strings, which `to_markdown` prints.
    """
    summaries = list(summaries)
    finished = [s for s in summaries if s.finished]
    unfinished = [s for s in summaries if not s.finished]
    grouped = group_runs(finished)
    rows = [_measured_row(key, runs, reference=reference) for key, runs in grouped.groups.items()]
    if reference:
        measured = {r["case"] for r in rows}
        rows += [_published_only_row(case) for case in PUBLISHED if case not in measured]
    rows.sort(key=lambda r: (_case_order(r["case"]), r["as_built"], r["device"], r["setting"]))
    columns = [*TABLE_COLUMNS, *(REFERENCE_COLUMNS if reference else ())]
    df = pd.DataFrame(rows, columns=columns)
    for col in _INT_COLUMNS:
        df[col] = pd.array([None if _is_missing(v) else int(v) for v in df[col]], dtype="Int64")
    for col in columns:
        if col not in _TEXT_COLUMNS and col not in _INT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["as_built"] = df["as_built"].astype(bool)
    df.attrs["warnings"] = _table_warnings(finished, grouped.varying) + time_warnings(df) + _ranking_warnings(df)
    df.attrs["notes"] = _table_notes(df, finished, unfinished, grouped, reference=reference)
    return df


def _measured_row(key: tuple[str, bool, str, str], runs: Sequence[RunSummary], *, reference: bool) -> dict[str, Any]:
    """One table row: the runs' identity, mean and std of every metric, and (reference) the published side."""
    case, as_built, device, setting = key
    row: dict[str, Any] = {
        "case": case,
        "as_built": as_built,
        "description": runs[0].description,
        "runs": len(runs),
        "seeds": " ".join(str(s) for s in sorted(r.seed for r in runs if r.seed is not None)),  # repeats kept
        "device": device,
        "setting": setting,
        "smoke": ", ".join(_union(smoke_reasons(r) for r in runs)),
        "params": next((r.params for r in runs if r.params is not None), None),
        "gflops": next((r.gflops for r in runs if r.gflops is not None), None),
        "gflops_input_res": next((r.gflops_input_res for r in runs if r.gflops_input_res is not None), None),
    }
    for metric in METRICS:
        row[metric], row[f"{metric}_std"] = _mean_std(_values(runs, metric))
    row["pckh_mean_ci95_low"], row["pckh_mean_ci95_high"] = row_interval(runs) or (None, None)
    row.update(time_spread(runs))
    if reference:
        row.update(_published_side(case, row, runs))
    return row


def _published_only_row(case: str) -> dict[str, Any]:
    """A published case we have not measured: the study's figures, our side empty."""
    row = {
        "case": case,
        "as_built": False,
        "description": get_spec(case).description,
        "runs": 0,
        "seeds": "",
        "device": "",
        "setting": "",
        "smoke": "",
        "timing": "",
    }
    return {**row, **_published_side(case, row, [])}


def _published_side(case: str, row: dict[str, Any], runs: Sequence[RunSummary]) -> dict[str, Any]:
    """The study's figures for a row, and our/published time ratios where our runs are the study's setting."""
    pub = PUBLISHED.get(case)
    out: dict[str, Any] = {
        "published_min_per_epoch": pub.min_per_epoch if pub else None,
        "published_val_acc": pub.val_acc if pub else None,
        "published_inference_min": pub.inference_min if pub else None,
    }
    blocked: list[str] = []
    for metric, phase in (("min_per_epoch", "train"), ("inference_min", "inference")):
        ours, theirs = row.get(metric), out[f"published_{metric}"]
        blockers = _union(ratio_blockers(r, phase) for r in runs)
        measured = not _is_missing(ours) and bool(theirs)
        out[f"{metric}_ratio"] = ours / theirs if measured and not blockers else None
        blocked += blockers if measured else []
    out["ratio_note"] = f"not the study's setting: {', '.join(_union([blocked]))}" if blocked else ""
    return out


def row_interval(runs: Sequence[RunSummary]) -> tuple[float, float] | None:
    """The 95% bootstrap interval of a row's PCKh Mean over validation people, or None where it cannot be had.

    One run: its record's interval (recomputed from its per-person masks where it kept them). Several seeds: the
    interval of their average Mean with the same people drawn for every seed
    (`hgbench.eval.metrics.pckh_mean_interval`), so it shows how much the figure depends on which people were scored;
    the ± beside it is the seed spread. None when a run lacks per-person data (records from before intervals) or the
    runs scored different people.
    """
    people = [r.pckh_people for r in runs]
    if all(p is not None for p in people):
        try:
            return pckh_mean_interval(people)  # type: ignore[arg-type]  # None ruled out above
        except HGBenchError:
            return None
    return runs[0].pckh_ci95 if len(runs) == 1 else None


__all__ = [
    "INTERVAL_COLUMNS",
    "REFERENCE_COLUMNS",
    "SMOKE_MARK",
    "TABLE_COLUMNS",
    "RowGroups",
    "comparison_table",
    "group_runs",
    "ranking_is_noise",
    "row_interval",
    "smoke_reasons",
]
