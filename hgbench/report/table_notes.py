"""The warnings above the comparison table and the notes under it: devices, settings, ranking noise, pooling,
intervals, smoke figures, time trust and the published reference."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from hgbench.measure.stats import BOOTSTRAP_RESAMPLES
from hgbench.report.grouping import (
    _SETTING_WORDS,
    ACCURACY_MIN_EPOCHS,
    ACCURACY_MIN_VAL_PEOPLE,
    INTERVAL_COLUMNS,
    SMOKE_MARK,
    STUDY_INPUT_RES,
    STUDY_TRAIN_PEOPLE,
    STUDY_VAL_PEOPLE,
    RowGroups,
    _union,
)
from hgbench.report.time_trust import time_note
from hgbench.run.results import RunSummary
from hgbench.spec.cases import PUBLISHED_HARDWARE


def ranking_is_noise(df: pd.DataFrame) -> bool:
    """Whether the accuracy intervals are too wide to rank the rows: every row's interval overlaps the best row's.

    Needs 2+ rows with an interval; the best row is the one with the highest PCKh Mean. One row whose interval lies
    clear of the best row's is enough for the ranking to say something.
    """
    cols = ["pckh_mean", *INTERVAL_COLUMNS["pckh_mean"]]
    if not set(cols) <= set(df.columns):
        return False
    rows = df[cols].dropna()
    if len(rows) < 2:
        return False
    best = rows.loc[rows["pckh_mean"].idxmax()]
    others = rows.drop(index=best.name)
    overlap = (others["pckh_mean_ci95_high"] >= best["pckh_mean_ci95_low"]) & (
        others["pckh_mean_ci95_low"] <= best["pckh_mean_ci95_high"]
    )
    return bool(overlap.all())


def _ranking_warnings(df: pd.DataFrame) -> list[str]:
    """The warning above a table whose accuracy ranking is noise (`ranking_is_noise`)."""
    if not ranking_is_noise(df):
        return []
    return [
        "The 95% accuracy intervals of every row overlap the best row's: these runs cannot rank the cases by "
        "accuracy (too few validation people). Read the accuracy column as 'the pipeline trains', not as an order; "
        "`hgbench compare` runs a paired test over the same people."
    ]


def _table_warnings(finished: Sequence[RunSummary], varying: Sequence[str]) -> list[str]:
    """Warnings printed above the table: rows from several devices, or of several settings."""
    warnings = []
    devices = sorted({s.device for s in finished})
    if len(devices) > 1:
        warnings.append(
            f"These runs come from {len(devices)} different devices ({'; '.join(devices)}): compare "
            "times only between rows of the same device."
        )
    if varying:
        warnings.append(
            f"The runs differ in more than case and form: {', '.join(varying)}. A row pools only runs "
            "identical in everything but the seed, and its setting column names what differs; compare "
            "rows only where it agrees."
        )
    return warnings


def _table_notes(
    df: pd.DataFrame,
    finished: Sequence[RunSummary],
    unfinished: Sequence[RunSummary],
    grouped: RowGroups,
    *,
    reference: bool,
) -> list[str]:
    """The footnotes under the table, one line each."""
    notes: list[str] = []
    if not finished:
        notes.append(
            "No finished runs yet: `make run` (or `hgbench run --case all --smoke`) measures this machine; "
            "the README's example records are in results/published/."
        )
    else:
        devices = sorted({s.device for s in finished})
        if len(devices) == 1:
            notes.append(f"Measured on {devices[0]}.")
        common = _common_setting(finished[0], grouped.settings[id(finished[0])], grouped.varying)
        if common:
            notes.append(f"Setting shared by every row: {common}.")
        notes += _pooling_notes(grouped)
        notes += _interval_notes(df, grouped)
        notes += time_note(df)
        notes += _smoke_notes(df)
        notes.append(
            "Validation accuracy is PCKh@0.5 Mean (%); inference min is one plain pass over the validation "
            "set on the wall clock, first batch requested to last prediction on the host (as the study "
            "timed it), on every device; GPU compute min is that pass's forward and decoding on the GPU's "
            "own clock (CUDA events), data loading excluded; — means not measured."
        )
    if reference:
        notes += _reference_notes(df)
    if unfinished:
        listed = ", ".join(f"{s.run_id} ({s.status})" for s in unfinished[:5])
        more = f" and {len(unfinished) - 5} more" if len(unfinished) > 5 else ""
        notes.append(f"Not shown, not finished: {listed}{more}.")
    return notes


def _pooling_notes(grouped: RowGroups) -> list[str]:
    """How a row of several runs reads, and that a repeated seed is a rerun, not another seed."""
    pooled = [runs for runs in grouped.groups.values() if len(runs) > 1]
    if not pooled:
        return []
    notes = [
        "Where a row pools several runs, each figure is mean ± sample standard deviation over them; seeds lists "
        "each run's seed."
    ]
    seeds = [[r.seed for r in runs] for runs in pooled]
    if any(len(set(s)) < len(s) for s in seeds):
        notes.append(
            "A seed listed twice is a rerun of the same experiment: the ± of its row is this machine's "
            "run-to-run noise, not seed-to-seed variation."
        )
    return notes


def _interval_notes(df: pd.DataFrame, grouped: RowGroups) -> list[str]:
    """What the accuracy's (low–high) is, which spread a pooled row shows, and why some intervals are missing."""
    has = df["pckh_mean_ci95_low"].notna()
    notes = []
    if has.any():
        pooled = any(len(runs) > 1 for runs in grouped.groups.values())
        notes.append(
            "(low–high) after an accuracy: its 95% bootstrap interval over validation people (percentile, "
            f"{BOOTSTRAP_RESAMPLES:,} resamples of the people, fixed seed)"
            + (
                "; where a row pools several seeds it is the interval of their average with the same people "
                "drawn for every seed, while ± is the spread between seeds."
                if pooled
                else "."
            )
        )
    if (df["pckh_mean"].notna() & ~has).any():
        notes.append(
            "(—) after an accuracy: no interval, the records hold no per-person PCKh (written before intervals)."
        )
    return notes


def _smoke_notes(df: pd.DataFrame) -> list[str]:
    """The footnote of the smoke marker on accuracies, naming why those figures are smoke figures."""
    texts = list(dict.fromkeys(str(s) for s in df["smoke"] if s))
    if not texts:
        return []
    if len(texts) == 1:
        why = texts[0]
    else:  # one clause per setting, never one list merging two settings' epochs and people
        clauses = []
        for text in texts:
            settings = _union([str(st)] for st in df.loc[df["smoke"] == text, "setting"] if st)
            clauses.append(f"{text} where {' / '.join(settings)}" if settings else text)
        why = "; ".join(clauses)
    return [
        f"{SMOKE_MARK} smoke accuracy ({why}): it shows that the pipeline trains, not what the case "
        f"reaches; an accuracy needs MPII, {ACCURACY_MIN_EPOCHS}+ epochs and {ACCURACY_MIN_VAL_PEOPLE}+ validation "
        "people (the study: 50 epochs, 2,958 people)."
    ]


def _reference_notes(df: pd.DataFrame) -> list[str]:
    """What the published columns are, when a ratio is shown, and why some are not."""
    notes = [
        f"published: the study's figures, {PUBLISHED_HARDWARE}. train ratio and infer ratio = our minutes / "
        f"published minutes, shown only where our run is the study's setting: full MPII epochs "
        f"({STUDY_TRAIN_PEOPLE:,} train people; {STUDY_VAL_PEOPLE:,} val people for inference) at "
        f"{STUDY_INPUT_RES} px. Even then the hardware differs, so a ratio measures the gap between the two "
        "set-ups, not between the codes."
    ]
    blocked = _union(str(n).removeprefix("not the study's setting: ").split(", ") for n in df["ratio_note"] if n)
    if blocked:
        notes.append(
            f"— in a ratio column: our runs are not the study's setting ({', '.join(blocked)}), so no ratio "
            "is shown: a smaller or lower-resolution epoch is not a faster one."
        )
    return notes


def _common_setting(run: RunSummary, setting: dict[str, str], varying: Sequence[str]) -> str:
    """A short phrase for the settings every row shares (dataset, epochs, batch, optimiser...)."""
    parts: list[str] = []
    if "dataset" not in varying and run.dataset:
        sizes = [
            f"{run.dataset_info[k]:,} {w}"
            for k, w in (("train_size", "train"), ("val_size", "val"))
            if "train_size" not in varying and "val_size" not in varying and isinstance(run.dataset_info.get(k), int)
        ]
        parts.append(f"{run.dataset} data" + (f" ({' / '.join(sizes)})" if sizes else ""))
    for key, word in _SETTING_WORDS:
        if key in setting and key not in varying:
            value = json.loads(setting[key])
            if value is not None and (text := word(value)):
                parts.append(text)
    return ", ".join(parts)
