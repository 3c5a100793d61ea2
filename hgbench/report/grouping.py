"""The comparison table's rows: which finished runs pool into one row, and the shared helpers of the reporter.

A row pools only runs identical in case, form, machine, dataset (name, sizes, fingerprint), hgbench version, every
config key of `hgbench.spec.config.RUN_IDENTITY_KEYS` except the seed, and how the machine was shared while they ran
(a contended run, or one on a shared GPU or a MIG slice, never pools with exclusive ones, `hgbench.report.time_trust`).
The columns, the smoke and ratio rules and the case order live here too, so the table, its notes and the plots agree.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hgbench.report.time_trust import TIME_INTERVALS, load_label
from hgbench.run.results import RunSummary
from hgbench.spec.cases import list_cases
from hgbench.spec.config import RUN_IDENTITY_KEYS

# (summary attribute, CSV column): the measured metrics averaged over runs, each also given a `<column>_std`.
METRICS: tuple[str, ...] = (
    "min_per_epoch",
    "data_wait_pct",
    "pckh_mean",
    "heatmap_acc",
    "inference_min",
    "inference_device_min",
    "images_per_s",
    "energy_j_per_epoch",
)

# Columns that follow a metric's mean and std: the accuracy's interval over validation people, the times' ranges
# (`hgbench.report.time_trust`).
INTERVAL_COLUMNS: dict[str, tuple[str, str]] = {
    "pckh_mean": ("pckh_mean_ci95_low", "pckh_mean_ci95_high"),
    **TIME_INTERVALS,
}

ID_COLUMNS: tuple[str, ...] = (
    "case",
    "as_built",
    "description",
    "runs",
    "seeds",
    "device",
    "setting",
    "smoke",
    "timing",
)
TABLE_COLUMNS: tuple[str, ...] = (
    *ID_COLUMNS,
    "params",
    "gflops",
    "gflops_input_res",
    "steady_epochs",
    *(c for m in METRICS for c in (m, f"{m}_std", *INTERVAL_COLUMNS.get(m, ()))),
)
REFERENCE_COLUMNS: tuple[str, ...] = (
    "published_min_per_epoch",
    "published_val_acc",
    "published_inference_min",
    "min_per_epoch_ratio",
    "inference_min_ratio",
    "ratio_note",
)
_TEXT_COLUMNS: frozenset[str] = frozenset({*ID_COLUMNS, "ratio_note"})
_INT_COLUMNS: tuple[str, ...] = ("runs", "params", "gflops_input_res", "steady_epochs")
# The study's setting, which a ratio to its published minutes needs: a full MPII epoch (and, for inference, a full
# validation pass) at 256 px. A smaller or lower-resolution epoch is not a faster one, so it gets no ratio. A run
# within 1% of the full size (a few corrupt images skipped) still counts as full.
STUDY_INPUT_RES = 256
STUDY_TRAIN_PEOPLE = 22_246
STUDY_VAL_PEOPLE = 2_958

# An accuracy measured below these, or on data other than MPII, is a smoke figure: it shows that the pipeline
# trains, not what the case reaches (the study trained 50 epochs and scored 2,958 people).
ACCURACY_MIN_EPOCHS = 10
ACCURACY_MIN_VAL_PEOPLE = 100
SMOKE_MARK = "†"

# The config keys that define the experiment (the runner's own list: resume and the sweep's skip use it too), less
# those that name the row or are averaged over; paths, workers, device and tags do not split rows.
_SETTING_KEYS: tuple[str, ...] = tuple(k for k in RUN_IDENTITY_KEYS if k not in {"case", "as_built", "seed"})

# The shared setting note names these, in this order, when every row agrees on them.
_SETTING_WORDS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("epochs", lambda v: _epochs(v)),
    ("batch_size", lambda v: f"batch {v}"),
    ("optimizer", str),
    ("lr", lambda v: f"lr {v}"),
    ("input_res", lambda v: f"input {v}"),
    ("amp", lambda v: "AMP" if v else "fp32"),
    ("channels_last", lambda v: "channels-last" if v else ""),
    ("compile", lambda v: "torch.compile" if v else ""),
    ("flip_test", lambda v: "flip test" if v else "no flip test"),
    ("world_size", lambda v: f"{v} processes" if v and v > 1 else ""),
)


# ----------------------------------------------------------------------------------------------------- helpers
def _epochs(n: Any) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _case_order(case: str) -> tuple[int, str]:
    """Registry order (1..8, hg1, hg2, hg8), unknown names after, naturally sorted."""
    known = list_cases()
    if case in known:
        return (known.index(case), "")
    return (len(known), re.sub(r"\d+", lambda m: m.group().zfill(8), case))


def _values(runs: Sequence[RunSummary], attr: str) -> list[float]:
    return [float(v) for r in runs if (v := getattr(r, attr)) is not None]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); NaN where undefined."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _union(lists: Iterable[Iterable[str]]) -> list[str]:
    """Every distinct item of the lists, in first-seen order."""
    return list(dict.fromkeys(item for items in lists for item in items))


def _setting(run: RunSummary) -> dict[str, str]:
    """Everything but case, form and seed that shapes a run's figures, as comparable JSON strings.

    The experiment-defining config keys, the dataset (name, sizes, fingerprint), the machine and the hgbench version:
    two runs pool into one table row only when all of these agree.
    """
    out = {k: json.dumps(run.config[k], sort_keys=True) for k in _SETTING_KEYS if k in run.config}
    out["dataset"] = json.dumps(run.dataset)
    for key in ("train_size", "val_size", "fingerprint"):
        out[key] = json.dumps(run.dataset_info.get(key))
    out["machine"] = json.dumps(run.machine_id)
    out["hgbench"] = json.dumps(run.hgbench_version)
    return out


def _setting_value(key: str, setting: dict[str, str]) -> str:
    """One setting value as the table shows it (a fingerprint by its first 8 characters)."""
    value = json.loads(setting[key]) if key in setting else None
    return str(value)[:8] if key == "fingerprint" and value else str(value)


def _is_missing(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def smoke_reasons(run: RunSummary) -> list[str]:
    """Why a run's accuracy is a smoke figure (data other than MPII, few epochs, a small validation set); [] if not."""
    reasons = []
    if run.dataset != "mpii":
        reasons.append(f"{run.dataset or 'unknown'} data")
    epochs = run.config.get("epochs")
    if isinstance(epochs, int) and epochs < ACCURACY_MIN_EPOCHS:
        reasons.append(_epochs(epochs))
    val_size = run.dataset_info.get("val_size")
    if isinstance(val_size, int) and val_size < ACCURACY_MIN_VAL_PEOPLE:
        reasons.append(f"{val_size} val people")
    return reasons


def ratio_blockers(run: RunSummary, phase: str) -> list[str]:
    """What keeps a run's minutes from being set against the study's: anything but a full MPII pass at 256 px.

    Args:
        run: the run.
        phase: ``train`` (an epoch over the training split) or ``inference`` (a pass over the validation split).

    Returns:
        One short phrase per difference (e.g. ``128 px input``, ``24 train people``); empty when comparable.
    """
    blockers = []
    if run.dataset != "mpii":
        blockers.append(f"{run.dataset or 'unknown'} data")
    res = run.config.get("input_res")
    if res != STUDY_INPUT_RES:
        blockers.append(f"{res} px input")
    key, full, word = (
        ("train_size", STUDY_TRAIN_PEOPLE, "train") if phase == "train" else ("val_size", STUDY_VAL_PEOPLE, "val")
    )
    size = run.dataset_info.get(key)
    if not isinstance(size, int) or size < 0.99 * full:
        blockers.append(f"{size} {word} people")
    return blockers


# ---------------------------------------------------------------------------------------------------- the table
@dataclass
class RowGroups:
    """Finished runs grouped into table rows: within a row the runs agree on everything but the seed."""

    groups: dict[tuple[str, bool, str, str], list[RunSummary]]  # (case, as_built, device, setting text) -> runs
    varying: list[str]  # setting keys (`_setting`) that differ between runs: what the setting column shows
    settings: dict[int, dict[str, str]]  # id(run) -> its `_setting`
    texts: dict[int, str]  # id(run) -> its setting text ("epochs=2, limit_train=24"; "" when nothing varies)


def group_runs(finished: Sequence[RunSummary]) -> RowGroups:
    """Group finished runs into rows of the same case, form, device and setting, so that only seeds are pooled.

    A key on which every run agrees needs no column; the keys that differ are written into each run's setting text,
    so grouping by (case, as_built, device, text) is grouping by every setting key at once. The machine id is left
    out of the text where the device column already tells the machines apart.
    """
    settings = {id(s): _setting(s) for s in finished}
    keys = sorted({k for st in settings.values() for k in st})
    varying = [k for k in keys if len({st.get(k) for st in settings.values()}) > 1]
    machines = {(s.device, settings[id(s)]["machine"]) for s in finished}
    if len(machines) == len({device for device, _ in machines}):  # one machine id per device
        varying = [k for k in varying if k != "machine"]
    texts = {i: ", ".join(f"{k}={_setting_value(k, st)}" for k in varying) for i, st in settings.items()}
    # Rows are labelled by name but hold one network: a name declared as two networks (two variant files) is two
    # rows, whose setting names the spec's fingerprint.
    specs: dict[tuple[str, bool], set[str | None]] = {}
    for run in finished:
        specs.setdefault((run.case, run.as_built), set()).add(run.spec_fingerprint)
    for run in finished:
        if len(specs[(run.case, run.as_built)]) > 1:
            texts[id(run)] = ", ".join(t for t in (texts[id(run)], f"spec={run.spec_fingerprint}") if t)
    for run in finished:  # contended, on a shared GPU or a MIG slice: a row of its own, never pooled with the others
        texts[id(run)] = ", ".join(t for t in (texts[id(run)], load_label(run)) if t)
    groups: dict[tuple[str, bool, str, str], list[RunSummary]] = {}
    for run in finished:
        groups.setdefault((run.case, run.as_built, run.device, texts[id(run)]), []).append(run)
    return RowGroups(groups=groups, varying=varying, settings=settings, texts=texts)
