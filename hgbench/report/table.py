"""The comparison table: finished runs grouped into rows (one per case, form, device and setting), their notes.

It only reads `RunSummary` lists (from `hgbench.results.load_records`) and never runs anything, as pytest-benchmark's
``compare`` only reads saved JSON. Only finished runs enter a table; the others are counted in a note. The helpers
shared by the rest of the reporter (case order, mean and std over runs, missing values) live here too.

Comparison table (`comparison_table`), one row per (case, as_built, device, setting) in case order. A row pools only
runs identical in case, form, machine, dataset (name, sizes, fingerprint), hgbench version and every config key of
`hgbench.config.RUN_IDENTITY_KEYS` except the seed; *setting* names whatever of these differs between rows (usually
nothing: one row per case and form), and a warning above the table says so. CSV columns (`to_csv` writes them), in
order:

- ``case`` (str), ``as_built`` (true/false), ``description``, ``runs`` (finished runs pooled), ``seeds`` (each run's
  seed, repeats kept: ``0 1 2``, or ``0 0`` for a rerun), ``device`` (GPU name or ``CPU: <model>``), ``setting``
  (``key=value, ...`` of the keys above that differ between rows; empty when every row shares one setting),
  ``smoke`` (why the row's accuracies are smoke figures, e.g. ``synthetic data, 2 epochs, 12 val people``; empty
  when they are not, see `smoke_reasons`)
- ``params``, ``gflops`` (forward), ``gflops_input_res`` (the input side the GFLOPs were counted at)
- ``min_per_epoch``, ``data_wait_pct``, ``pckh_mean`` (validation accuracy, PCKh@0.5 Mean, %), ``heatmap_acc``
  (fraction), ``inference_min`` (the wall-clock pass), ``inference_device_min`` (its GPU compute, CUDA events),
  ``images_per_s``, ``energy_j_per_epoch``;
  each followed by ``<name>_std``: the sample standard deviation over the row's runs, empty with fewer than 2 values;
  ``pckh_mean`` is also followed by ``pckh_mean_ci95_low`` and ``pckh_mean_ci95_high``: the 95% percentile bootstrap
  interval over validation people (`row_interval`; empty where the records hold no per-person data)
- with ``reference=True`` also ``published_min_per_epoch``, ``published_val_acc``, ``published_inference_min``
  (the study's figures, `hgbench.cases.PUBLISHED_HARDWARE`), ``min_per_epoch_ratio``, ``inference_min_ratio``
  (ours / published, only where our runs are the study's setting: full MPII epochs at 256 px, `ratio_blockers`;
  the hardware still differs, so a ratio measures the gap between two set-ups, not a code difference) and
  ``ratio_note`` (why the ratios are empty, e.g. ``not the study's setting: synthetic data, 128 px input``)

Empty CSV cells mean "not measured" (null in the record).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hgbench.cases import PUBLISHED, PUBLISHED_HARDWARE, get_spec, list_cases
from hgbench.config import RUN_IDENTITY_KEYS
from hgbench.errors import HGBenchError
from hgbench.metrics import pckh_mean_interval
from hgbench.results import RunSummary
from hgbench.stats import BOOTSTRAP_RESAMPLES

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

# Columns that follow a metric's mean and std: the accuracy's interval over validation people.
INTERVAL_COLUMNS: dict[str, tuple[str, str]] = {"pckh_mean": ("pckh_mean_ci95_low", "pckh_mean_ci95_high")}

ID_COLUMNS: tuple[str, ...] = ("case", "as_built", "description", "runs", "seeds", "device", "setting", "smoke")
TABLE_COLUMNS: tuple[str, ...] = (
    *ID_COLUMNS,
    "params",
    "gflops",
    "gflops_input_res",
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
_INT_COLUMNS: tuple[str, ...] = ("runs", "params", "gflops_input_res")
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
    groups: dict[tuple[str, bool, str, str], list[RunSummary]] = {}
    for run in finished:
        groups.setdefault((run.case, run.as_built, run.device, texts[id(run)]), []).append(run)
    return RowGroups(groups=groups, varying=varying, settings=settings, texts=texts)


def comparison_table(summaries: Iterable[RunSummary], *, reference: bool = False) -> pd.DataFrame:
    """One row per (case, as_built, device, setting) of the finished runs, in case order; mean and std over runs.

    A row pools only runs identical in case, form, machine, dataset, hgbench version and every experiment-defining
    config key (`hgbench.config.RUN_IDENTITY_KEYS`) but the seed; runs differing otherwise are separate rows whose
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
    df.attrs["warnings"] = _table_warnings(finished, grouped.varying) + _ranking_warnings(df)
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
    interval of their average Mean with the same people drawn for every seed (`hgbench.metrics.pckh_mean_interval`),
    so it shows how much the figure depends on which people were scored; the ± beside it is the seed spread. None
    when a run lacks per-person data (records from before intervals) or the runs scored different people.
    """
    people = [r.pckh_people for r in runs]
    if all(p is not None for p in people):
        try:
            return pckh_mean_interval(people)  # type: ignore[arg-type]  # None ruled out above
        except HGBenchError:
            return None
    return runs[0].pckh_ci95 if len(runs) == 1 else None


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
    reasons = _union(str(s).split(", ") for s in df["smoke"] if s)
    if not reasons:
        return []
    return [
        f"{SMOKE_MARK} smoke accuracy ({', '.join(reasons)}): it shows that the pipeline trains, not what the case "
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
