"""The reporter: comparison table, CSV/Markdown rendering, README rewrite, run comparison and the frontier plot.

It only reads `RunSummary` lists (from `hgbench.results.load_records`) and never runs anything, as pytest-benchmark's
``compare`` only reads saved JSON. Only finished runs enter a table; the others are counted in a note.

Comparison table (`comparison_table`), one row per (case, as_built, device, setting) in case order. A row pools only
runs identical in case, form, machine, dataset (name, sizes, fingerprint), hgbench version and every config key of
`hgbench.config.RUN_IDENTITY_KEYS` except the seed; *setting* names whatever of these differs between rows (usually
nothing: one row per case and form), and a warning above the table says so. CSV columns, in order:

- ``case`` (str), ``as_built`` (true/false), ``description``, ``runs`` (finished runs pooled), ``seeds`` (each run's
  seed, repeats kept: ``0 1 2``, or ``0 0`` for a rerun), ``device`` (GPU name or ``CPU: <model>``), ``setting``
  (``key=value, ...`` of the keys above that differ between rows; empty when every row shares one setting),
  ``smoke`` (why the row's accuracies are smoke figures, e.g. ``synthetic data, 2 epochs, 12 val people``; empty
  when they are not, see `smoke_reasons`)
- ``params``, ``gflops`` (forward), ``gflops_input_res`` (the input side the GFLOPs were counted at)
- ``min_per_epoch``, ``data_wait_pct``, ``pckh_mean`` (validation accuracy, PCKh@0.5 Mean, %), ``heatmap_acc``
  (fraction), ``inference_min`` (the wall-clock pass), ``inference_device_min`` (its GPU compute, CUDA events),
  ``images_per_s``, ``energy_j_per_epoch``;
  each followed by ``<name>_std``: the sample standard deviation over the row's runs, empty with fewer than 2 values
- with ``reference=True`` also ``published_min_per_epoch``, ``published_val_acc``, ``published_inference_min``
  (the study's figures, `hgbench.cases.PUBLISHED_HARDWARE`), ``min_per_epoch_ratio``, ``inference_min_ratio``
  (ours / published, only where our runs are the study's setting: full MPII epochs at 256 px, `ratio_blockers`;
  the hardware still differs, so a ratio measures the gap between two set-ups, not a code difference) and
  ``ratio_note`` (why the ratios are empty, e.g. ``not the study's setting: synthetic data, 128 px input``)

Empty CSV cells mean "not measured" (null in the record). Run comparison (`compare_runs`) CSV columns: ``group,
metric, a_mean, a_std, a_n, b_mean, b_std, b_n, delta, delta_pct, p_value, p_note, significant`` (delta = B - A,
delta_pct relative to A; p_value from Welch's t-test, `scipy.stats.ttest_ind(equal_var=False)`, and p_note says which
test or why none; significant: p < 0.05 and, for a timing, a change of 5% or more, `TIMING_CAVEAT`; empty untested).
"""

from __future__ import annotations

import io
import json
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hgbench.cases import PUBLISHED, PUBLISHED_HARDWARE, get_spec, list_cases
from hgbench.config import RUN_IDENTITY_KEYS
from hgbench.errors import HGBenchError
from hgbench.results import RunSummary, expand_sources, write_bytes_atomic

README_START = "<!-- hgbench:results:start -->"
README_END = "<!-- hgbench:results:end -->"

# (summary attribute, CSV column): the measured metrics averaged over runs, each also given a `<column>_std`.
METRICS: tuple[str, ...] = (
    "min_per_epoch", "data_wait_pct", "pckh_mean", "heatmap_acc", "inference_min", "inference_device_min",
    "images_per_s", "energy_j_per_epoch",
)  # fmt: skip

ID_COLUMNS: tuple[str, ...] = ("case", "as_built", "description", "runs", "seeds", "device", "setting", "smoke")
TABLE_COLUMNS: tuple[str, ...] = (
    *ID_COLUMNS, "params", "gflops", "gflops_input_res", *(c for m in METRICS for c in (m, f"{m}_std")),
)  # fmt: skip
REFERENCE_COLUMNS: tuple[str, ...] = (
    "published_min_per_epoch", "published_val_acc", "published_inference_min", "min_per_epoch_ratio",
    "inference_min_ratio", "ratio_note",
)  # fmt: skip
_TEXT_COLUMNS: frozenset[str] = frozenset({*ID_COLUMNS, "ratio_note"})
_INT_COLUMNS: tuple[str, ...] = ("runs", "params", "gflops_input_res")
COMPARE_COLUMNS: tuple[str, ...] = (
    "group", "metric", "a_mean", "a_std", "a_n", "b_mean", "b_std", "b_n", "delta", "delta_pct", "p_value", "p_note",
    "significant",
)  # fmt: skip

# Metrics of `hgbench compare`, with their labels; the two tested ones get a Welch p-value where possible.
COMPARE_METRICS: dict[str, str] = {
    "min_per_epoch": "min/epoch",
    "data_wait_pct": "data-wait %",
    "pckh_mean": "PCKh@0.5 Mean",
    "heatmap_acc": "heatmap acc",
    "inference_min": "inference min",
    "inference_device_min": "inference GPU compute min",
    "images_per_s": "images/s",
    "energy_j_per_epoch": "energy J/epoch",
}
TESTED_METRICS: tuple[str, ...] = ("pckh_mean", "min_per_epoch")

# A difference is called significant at p < SIGNIFICANCE_P; a timing also needs a change of TIMING_MIN_EFFECT_PCT or
# more, because timings on one machine are not independent draws: load from other processes shifts whole runs, so two
# seeds of one config can differ by a few percent with a low p and no difference in the code.
SIGNIFICANCE_P = 0.05
TIMING_MIN_EFFECT_PCT = 5.0
TIMING_METRICS: frozenset[str] = frozenset({"min_per_epoch"})
TIMING_CAVEAT = (
    "What a timing p-value means: it says that A's and B's minutes differ by more than the spread within each side. "
    "It cannot say why: on a shared or busy machine, other processes' load shifts whole runs, so a low p between "
    "two seeds of one config is noise of the machine, not a speed difference of the code. A timing counts as "
    f"different here only with p < {SIGNIFICANCE_P} and a change of {TIMING_MIN_EFFECT_PCT:.0f}% or more; to "
    "measure a small one, alternate A and B runs on an idle machine."
)
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
    key, full, word = ("train_size", STUDY_TRAIN_PEOPLE, "train") if phase == "train" else (
        "val_size", STUDY_VAL_PEOPLE, "val")  # fmt: skip
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
    df.attrs["warnings"] = _table_warnings(finished, grouped.varying)
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
    if reference:
        row.update(_published_side(case, row, runs))
    return row


def _published_only_row(case: str) -> dict[str, Any]:
    """A published case we have not measured: the study's figures, our side empty."""
    row = {"case": case, "as_built": False, "description": get_spec(case).description, "runs": 0, "seeds": "",
           "device": "", "setting": "", "smoke": ""}  # fmt: skip
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


def _table_warnings(finished: Sequence[RunSummary], varying: Sequence[str]) -> list[str]:
    """Warnings printed above the table: rows from several devices, or of several settings."""
    warnings = []
    devices = sorted({s.device for s in finished})
    if len(devices) > 1:
        warnings.append(f"These runs come from {len(devices)} different devices ({'; '.join(devices)}): compare "
                        "times only between rows of the same device.")  # fmt: skip
    if varying:
        warnings.append(f"The runs differ in more than case and form: {', '.join(varying)}. A row pools only runs "
                        "identical in everything but the seed, and its setting column names what differs; compare "
                        "rows only where it agrees.")  # fmt: skip
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
        notes.append("No finished runs yet: `make run` (or `hgbench run --case all --smoke`) measures this machine; "
                     "the README's example records are in results/published/.")  # fmt: skip
    else:
        devices = sorted({s.device for s in finished})
        if len(devices) == 1:
            notes.append(f"Measured on {devices[0]}.")
        common = _common_setting(finished[0], grouped.settings[id(finished[0])], grouped.varying)
        if common:
            notes.append(f"Setting shared by every row: {common}.")
        notes += _pooling_notes(grouped)
        notes += _smoke_notes(df)
        notes.append("Validation accuracy is PCKh@0.5 Mean (%); inference min is one plain pass over the validation "
                     "set on the wall clock, first batch requested to last prediction on the host (as the study "
                     "timed it), on every device; GPU compute min is that pass's forward and decoding on the GPU's "
                     "own clock (CUDA events), data loading excluded; — means not measured.")  # fmt: skip
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
    notes = ["Where a row pools several runs, each figure is mean ± sample standard deviation over them; seeds lists "
             "each run's seed."]  # fmt: skip
    seeds = [[r.seed for r in runs] for runs in pooled]
    if any(len(set(s)) < len(s) for s in seeds):
        notes.append("A seed listed twice is a rerun of the same experiment: the ± of its row is this machine's "
                     "run-to-run noise, not seed-to-seed variation.")  # fmt: skip
    return notes


def _smoke_notes(df: pd.DataFrame) -> list[str]:
    """The footnote of the smoke marker on accuracies, naming why those figures are smoke figures."""
    reasons = _union(str(s).split(", ") for s in df["smoke"] if s)
    if not reasons:
        return []
    return [f"{SMOKE_MARK} smoke accuracy ({', '.join(reasons)}): it shows that the pipeline trains, not what the case "
            f"reaches; an accuracy needs MPII, {ACCURACY_MIN_EPOCHS}+ epochs and {ACCURACY_MIN_VAL_PEOPLE}+ validation "
            "people (the study: 50 epochs, 2,958 people)."]  # fmt: skip


def _reference_notes(df: pd.DataFrame) -> list[str]:
    """What the published columns are, when a ratio is shown, and why some are not."""
    notes = [f"published: the study's figures, {PUBLISHED_HARDWARE}. train ratio and infer ratio = our minutes / "
             f"published minutes, shown only where our run is the study's setting: full MPII epochs "
             f"({STUDY_TRAIN_PEOPLE:,} train people; {STUDY_VAL_PEOPLE:,} val people for inference) at "
             f"{STUDY_INPUT_RES} px. Even then the hardware differs, so a ratio measures the gap between the two "
             "set-ups, not between the codes."]  # fmt: skip
    blocked = _union(str(n).removeprefix("not the study's setting: ").split(", ") for n in df["ratio_note"] if n)
    if blocked:
        notes.append(f"— in a ratio column: our runs are not the study's setting ({', '.join(blocked)}), so no ratio "
                     "is shown: a smaller or lower-resolution epoch is not a faster one.")  # fmt: skip
    return notes


def _common_setting(run: RunSummary, setting: dict[str, str], varying: Sequence[str]) -> str:
    """A short phrase for the settings every row shares (dataset, epochs, batch, optimiser...)."""
    parts: list[str] = []
    if "dataset" not in varying and run.dataset:
        sizes = [f"{run.dataset_info[k]:,} {w}" for k, w in (("train_size", "train"), ("val_size", "val"))
                 if "train_size" not in varying and "val_size" not in varying
                 and isinstance(run.dataset_info.get(k), int)]  # fmt: skip
        parts.append(f"{run.dataset} data" + (f" ({' / '.join(sizes)})" if sizes else ""))
    for key, word in _SETTING_WORDS:
        if key in setting and key not in varying:
            value = json.loads(setting[key])
            if value is not None and (text := word(value)):
                parts.append(text)
    return ", ".join(parts)


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
    case = str(row["case"])
    return f"{case} (as built)" if row["as_built"] else case


def _fmt_params(x: Any) -> str:
    return "—" if _is_missing(x) else f"{int(x) / 1e6:.2f} M"


def _fmt_ratio(x: Any) -> str:
    return "—" if _is_missing(x) else f"{_fmt(x)}×"


def _md_cell(text: Any) -> str:
    """Escape what would break a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _fmt_accuracy(row: pd.Series, metric: str, decimals: int) -> str:
    """``mean ± std``, with the smoke mark where the row's setting cannot measure an accuracy (`smoke_reasons`)."""
    text = _fmt_pm(row, metric, decimals)
    return f"{text} {SMOKE_MARK}" if text != "—" and row.get("smoke") else text


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
    ("min/epoch", "right", lambda r: _fmt_pm(r, "min_per_epoch"), False),
    ("published min/epoch", "right", lambda r: _fmt(r["published_min_per_epoch"], 1), True),
    ("train ratio", "right", lambda r: _fmt_ratio(r["min_per_epoch_ratio"]), True),
    ("data-wait %", "right", lambda r: _fmt_pm(r, "data_wait_pct", 1), False),
    ("val. acc (PCKh@0.5 %)", "right", lambda r: _fmt_accuracy(r, "pckh_mean", 2), False),
    ("published val. acc", "right", lambda r: _fmt(r["published_val_acc"], 2), True),
    ("heatmap acc", "right", lambda r: _fmt_accuracy(r, "heatmap_acc", 3), False),
    ("inference min", "right", lambda r: _fmt_pm(r, "inference_min"), False),
    ("GPU compute min", "right", lambda r: _fmt_pm(r, "inference_device_min"), False),
    ("published inference min", "right", lambda r: _fmt(r["published_inference_min"], 2), True),
    ("infer ratio", "right", lambda r: _fmt_ratio(r["inference_min_ratio"]), True),
    ("images/s", "right", lambda r: _fmt_pm(r, "images_per_s"), False),
    ("energy J/epoch", "right", lambda r: _fmt_pm(r, "energy_j_per_epoch", 0, thousands=True), False),
    ("device", "left", lambda r: str(r["device"]) or "—", False),
)


def to_markdown(df: pd.DataFrame, *, title: str | None = None, notes: bool = True) -> str:
    """Render a `comparison_table` as a GitHub Markdown table (no `tabulate` needed), warnings above, notes below.

    Args:
        df: the output of `comparison_table` (its ``attrs`` carry the warnings and notes).
        title: an optional bold line above everything.
        notes: print the notes under the table.

    Returns:
        The Markdown text, ending with a newline; deterministic (no timestamps), so a README rewrite is idempotent.
    """
    reference = "published_min_per_epoch" in df.columns
    gflops = _gflops_column(df)
    columns = [gflops + (a,) if h == "GFLOPs" else (h, f, a) for h, a, f, ref in _MD_COLUMNS if reference or not ref]
    if "setting" in df.columns and (df["setting"].astype(str) != "").any():
        columns.insert(2, ("setting", lambda r: str(r["setting"]), "left"))
    lines: list[str] = []
    if title:
        lines += [f"**{title}**", ""]
    for warning in df.attrs.get("warnings", []):
        lines += [f"> **Warning:** {warning}", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h, _, _ in columns) + " |")
    lines.append("|" + "|".join("---:" if a == "right" else ":---" for _, _, a in columns) + "|")
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_md_cell(f(row)) for _, f, _ in columns) + " |")
    if notes and df.attrs.get("notes"):
        lines.append("")
        lines += [f"- {note}" for note in df.attrs["notes"]]
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    """CSV with one header line and the module docstring's snake_case columns; booleans as true/false, null empty."""
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
            raise HGBenchError(f"{path}: results marker {marker} {what}; the file needs exactly one start and one "
                               f"end marker, start first")  # fmt: skip
    start = text.index(README_START) + len(README_START)
    end = text.index(README_END)
    if end < start:
        raise HGBenchError(f"{path}: results marker {README_END} comes before {README_START}")
    newline = "\r\n" if "\r\n" in text else "\n"
    body = table_markdown.replace("\r\n", "\n").strip("\n").replace("\n", newline)
    new = text[:start] + newline + body + newline + text[end:]
    if new == text:
        return False
    write_bytes_atomic(path, new.encode("utf-8"))
    return True


# ------------------------------------------------------------------------------------------------------ compare
def _by_case(runs: Iterable[RunSummary]) -> dict[tuple[str, bool], list[RunSummary]]:
    out: dict[tuple[str, bool], list[RunSummary]] = {}
    for run in runs:
        out.setdefault((run.case, run.as_built), []).append(run)
    return out


def _group_label(key: tuple[str, bool]) -> str:
    case, as_built = key
    return f"case {case}" + (" (as built)" if as_built else "") if case.isdigit() else case + (
        " (as built)" if as_built else "")  # fmt: skip


def _welch(metric: str, a: Sequence[RunSummary], b: Sequence[RunSummary]) -> tuple[float | None, str]:
    """Welch's t-test between the sides' per-run values (per-epoch times for min/epoch with single runs)."""
    if metric not in TESTED_METRICS:
        return None, "not tested"
    xa, xb, unit = _values(a, metric), _values(b, metric), "per-seed values"
    if metric == "min_per_epoch" and (len(xa) < 2 or len(xb) < 2):  # one run a side: compare its epochs
        ea = [m for r in a for m in r.epoch_minutes]
        eb = [m for r in b for m in r.epoch_minutes]
        if len(ea) >= 2 and len(eb) >= 2:  # pytest-benchmark style: per-iteration times when both sides kept them
            xa, xb, unit = ea, eb, "per-epoch times"
    if len(xa) < 2 or len(xb) < 2:
        return None, f"needs 2+ seeds per side (A has {len(xa)}, B has {len(xb)})"
    from scipy.stats import ttest_ind  # imported here: scipy.stats costs about a second

    result = ttest_ind(xa, xb, equal_var=False)
    p = float(result.pvalue)
    if math.isnan(p):
        return None, f"no variance on either side ({unit} {len(xa)} vs {len(xb)})"
    return p, f"Welch t-test on {unit}, {len(xa)} vs {len(xb)}"


def compare_runs(a: Iterable[RunSummary], b: Iterable[RunSummary]) -> pd.DataFrame:
    """Two runs, or two sets of runs, side by side per metric with absolute and relative deltas and a p-value.

    Finished runs are grouped by (case, as_built). When each side holds a single group (e.g. two runs, or two seeds
    of case 1 against three of case 8) the two are compared directly; otherwise (two result folders) each group
    present on both sides is compared with its counterpart. Where both sides have 2+ runs of a group, Welch's t-test
    (`scipy.stats.ttest_ind(equal_var=False)`) gives a p-value for PCKh Mean and min/epoch (min/epoch falls back
    to the per-epoch times when there are fewer runs); elsewhere p is null and ``p_note`` says why.

    Args:
        a: the baseline side.
        b: the side compared with it (delta = B - A).

    Returns:
        A frame with `COMPARE_COLUMNS`; ``significant`` is true where p < `SIGNIFICANCE_P` and, for a timing, the
        change is at least `TIMING_MIN_EFFECT_PCT` (null without a p-value); ``attrs["notes"]`` has the devices,
        what was left out and, where a timing was tested, `TIMING_CAVEAT`.

    Raises:
        HGBenchError: a side has no finished run, or the sides share no case to compare.
    """
    a, b = list(a), list(b)
    fa, fb = [r for r in a if r.finished], [r for r in b if r.finished]
    for side, runs, done in (("A", a, fa), ("B", b, fb)):
        if not done:
            extra = f" ({len(runs)} unfinished)" if runs else ""
            raise HGBenchError(f"side {side} has no finished run to compare{extra}")
    ga, gb = _by_case(fa), _by_case(fb)
    notes: list[str] = []
    if len(ga) == 1 and len(gb) == 1:
        (ka, ra), (kb, rb) = next(iter(ga.items())), next(iter(gb.items()))
        label = _group_label(ka) if ka == kb else f"{_group_label(ka)} vs {_group_label(kb)}"
        pairs = [(label, ra, rb)]
    else:
        common = sorted(set(ga) & set(gb), key=lambda k: (_case_order(k[0]), k[1]))
        if not common:
            has_a, has_b = ", ".join(map(_group_label, ga)), ", ".join(map(_group_label, gb))
            raise HGBenchError(f"A and B share no case: A has {has_a}; B has {has_b}")
        pairs = [(_group_label(k), ga[k], gb[k]) for k in common]
        for side, groups in (("A", ga), ("B", gb)):
            only = [_group_label(k) for k in groups if k not in common]
            if only:
                notes.append(f"Only in {side}, not compared: {', '.join(only)}.")

    rows: list[dict[str, Any]] = []
    for label, ra, rb in pairs:
        for metric, name in COMPARE_METRICS.items():
            va, vb = _values(ra, metric), _values(rb, metric)
            ma, sa = _mean_std(va)
            mb, sb = _mean_std(vb)
            delta = mb - ma if va and vb else math.nan
            pct = 100.0 * delta / ma if va and vb and ma != 0 else math.nan
            p, why = _welch(metric, ra, rb)
            if p is not None and metric in TIMING_METRICS:
                why += f"; a timing: significant only with a change of {TIMING_MIN_EFFECT_PCT:.0f}%+ (see below)"
            rows.append({"group": label, "metric": name, "a_mean": ma, "a_std": sa, "a_n": len(va), "b_mean": mb,
                         "b_std": sb, "b_n": len(vb), "delta": delta, "delta_pct": pct, "p_value": p,
                         "p_note": why, "significant": _significant(metric, p, pct)})  # fmt: skip
    df = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    df["p_value"] = pd.to_numeric(df["p_value"], errors="coerce").astype("float64")
    df["significant"] = df["significant"].astype("boolean")
    for side, runs in (("A", fa), ("B", fb)):
        devices = sorted({r.device for r in runs})
        notes.insert(0, f"{side}: {len(runs)} finished run(s) on {'; '.join(devices)}"
                        + (" (mixed devices within one side: its times are not one machine's)" if len(devices) > 1
                           else "") + ".")  # fmt: skip
    notes[:2] = sorted(notes[:2])
    for side, runs in (("A", a), ("B", b)):
        skipped = [r.run_id for r in runs if not r.finished]
        if skipped:
            notes.append(f"{side}: not finished, left out: {', '.join(skipped)}.")
    if any(m in TIMING_METRICS for m in df.loc[df["p_value"].notna(), "metric"].map(_METRIC_KEYS)):
        notes.append(TIMING_CAVEAT)
    df.attrs["notes"] = notes
    return df


_METRIC_KEYS: dict[str, str] = {label: key for key, label in COMPARE_METRICS.items()}


def _significant(metric: str, p: float | None, delta_pct: float) -> bool | None:
    """Whether a tested difference counts: p below `SIGNIFICANCE_P` and, for a timing, a large enough change.

    None where there is no p-value. A timing's p alone is not enough (`TIMING_CAVEAT`): the runs of one machine share
    its load, so a tiny, consistent shift gives a low p without any difference in the code.
    """
    if p is None:
        return None
    if metric in TIMING_METRICS and not abs(delta_pct) >= TIMING_MIN_EFFECT_PCT:
        return False
    return p < SIGNIFICANCE_P


def _verdict(row: pd.Series) -> str:
    """``differs`` or ``within noise`` for a tested metric (naming the effect-size rule where it decided), else ""."""
    if _is_missing(row["significant"]):
        return ""
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

            delta = "—" if _is_missing(r["delta"]) else f"{float(r['delta']):+.{2 if d is None else d}f}"
            pct = "—" if _is_missing(r["delta_pct"]) else f"{float(r['delta_pct']):+.1f}%"
            p = "" if _is_missing(r["p_value"]) else f"{float(r['p_value']):.3g}"
            if r["metric"] and r["p_note"] != "not tested":
                p = p or "—"
                reasons.append(f"{r['metric']}: {r['p_note']}")
            table.add_row(str(r["metric"]), side(r["a_mean"], r["a_std"]), side(r["b_mean"], r["b_std"]), delta, pct,
                          p, _verdict(r))  # fmt: skip
        if reasons:
            table.caption = "p: " + "; ".join(reasons)
            table.caption_justify = "left"
        tables.append(table)
    return Group(*tables)


# -------------------------------------------------------------------------------------------------------- plot
def _pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The accuracy/cost frontier: points no other point beats on both time (lower) and accuracy (higher)."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _merge_close(
    labels: Sequence[str], xs: Sequence[float], ys: Sequence[float], ax: Any, within_pt: float = 5.0
) -> tuple[list[str], list[float], list[float]]:
    """One label ("4, 6") for markers drawn on top of each other, placed at the group's highest point."""
    to_pt = 72.0 / ax.figure.dpi
    disp = ax.transData.transform(list(zip(xs, ys, strict=True))) * to_pt
    groups: list[list[int]] = []
    for i in sorted(range(len(xs)), key=lambda i: (disp[i][1], disp[i][0])):
        for g in groups:
            j = g[-1]
            if abs(disp[i][0] - disp[j][0]) < within_pt and abs(disp[i][1] - disp[j][1]) < within_pt:
                g.append(i)
                break
        else:
            groups.append([i])
    out = [(", ".join(labels[i] for i in sorted(g, key=lambda i: labels[i])), xs[g[-1]], ys[g[-1]]) for g in groups]
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]


def _place_labels(
    labels: Sequence[str],
    xs: Sequence[float],
    ys: Sequence[float],
    markers: Sequence[tuple[float, float]],
    ax: Any,
    *,
    font_pt: float = 8.0,
    marker_pt: float = 5.0,
) -> list[tuple[float, float, str]]:
    """Where each label goes, as (dx, dy, ha) in points from its marker: clear of every marker and placed label.

    Labels are placed bottom to top; each takes the first free spot of: right, right and up, right and down, left,
    then further up or down on either side. A spot is free when the label's box (about 0.6 em per character) misses
    every marker's square (half-side `marker_pt`) and every label placed before it; with no free spot the label
    goes right, as before.
    """
    to_pt = 72.0 / ax.figure.dpi
    pts = ax.transData.transform(list(zip(xs, ys, strict=True))) * to_pt
    obstacles = [tuple(m) for m in ax.transData.transform(list(markers)) * to_pt] if markers else []
    half_h = 0.6 * font_pt
    gap = 8.0
    step = 2 * half_h + 1.0
    placed: list[tuple[float, float, float, float]] = []  # x0, y0, x1, y1 of labels placed so far

    def box(i: int, dx: float, dy: float, ha: str) -> tuple[float, float, float, float]:
        width = 0.6 * font_pt * len(labels[i])
        x, y = pts[i][0] + dx, pts[i][1] + dy
        x0 = x if ha == "left" else x - width
        return x0, y - half_h, x0 + width, y + half_h

    def free(b: tuple[float, float, float, float]) -> bool:
        hits_marker = any(b[0] - marker_pt < mx < b[2] + marker_pt and b[1] - marker_pt < my < b[3] + marker_pt
                          for mx, my in obstacles)  # fmt: skip
        hits_label = any(b[0] < q[2] and q[0] < b[2] and b[1] < q[3] and q[1] < b[3] for q in placed)
        return not hits_marker and not hits_label

    spots = [(gap, 0.0, "left"), (gap, step, "left"), (gap, -step, "left"), (-gap, 0.0, "right"),
             (gap, 2 * step, "left"), (gap, -2 * step, "left"), (-gap, step, "right"), (-gap, -step, "right"),
             (gap, 3 * step, "left"), (-gap, 2 * step, "right")]  # fmt: skip
    out: list[tuple[float, float, str]] = [spots[0]] * len(labels)
    for i in sorted(range(len(labels)), key=lambda i: (pts[i][1], pts[i][0])):
        choice = next((s for s in spots if free(box(i, *s))), spots[0])
        placed.append(box(i, *choice))
        out[i] = choice
    return out


def _panel_setting(runs: Sequence[RunSummary]) -> str:
    """What a panel's runs were trained on (data, epochs, batch, input), so synthetic accuracy is not read as MPII's."""

    def one(values: set) -> str:
        return "/".join(map(str, sorted(values, key=str)))

    data = one({r.dataset or "?" for r in runs})
    people = one({r.dataset_info.get("train_size", "?") for r in runs})
    epochs = one({r.config.get("epochs", "?") for r in runs})
    batch = one({r.config.get("batch_size", "?") for r in runs})
    res = one({r.config.get("input_res", "?") for r in runs})
    smoke = f"{SMOKE_MARK} smoke accuracy: " if any(smoke_reasons(r) for r in runs) else ""
    return f"{smoke}{data} data ({people} train) · {epochs} epochs · batch {batch} · {res} px"


@dataclass
class FrontierPanel:
    """One panel of our runs in the frontier plot: one device and one setting, so its frontier joins only those."""

    device: str  # GPU name or "CPU: <model>"
    setting: str  # the setting text of its rows (`group_runs`); "" when every run shares one setting
    rows: pd.DataFrame  # its `comparison_table` rows that have both an accuracy and a time
    runs: list[RunSummary]  # the finished runs behind those rows


def frontier_panels(finished: Sequence[RunSummary]) -> tuple[list[FrontierPanel], list[str]]:
    """Our panels of the frontier plot, one per (device, setting), and the rows left out (no accuracy or time).

    A frontier line joining a 2-epoch, 24-image point to a 6-epoch, 240-image one would read as a trade-off between
    cases when it is a difference of settings: each setting gets its own panel and line.
    """
    df = comparison_table(finished, reference=False)
    drawable = df["pckh_mean"].notna() & df["min_per_epoch"].notna()
    left_out = [f"{_fmt_case(r)} on {r['device']}" for _, r in df[~drawable].iterrows()]
    texts = group_runs(finished).texts
    panels = []
    for (device, setting), rows in df[drawable].groupby(["device", "setting"], sort=True):
        runs = [r for r in finished if r.device == device and texts[id(r)] == setting]
        panels.append(FrontierPanel(device=str(device), setting=str(setting), rows=rows, runs=runs))
    return panels, left_out


def plot_frontier(summaries: Iterable[RunSummary], out_png: str | Path, *, reference: bool = True) -> Path:
    """Write a PNG of validation accuracy (PCKh@0.5 Mean) against training minutes per epoch, one point per case.

    One panel per device and setting of our finished runs (`frontier_panels`), and (with `reference`) one for the
    published figures: they were measured on different hardware or settings (and perhaps data), so each panel has
    its own axes and the same case keeps the same colour across panels; read the *shape* of the frontier across
    panels, not absolute positions. Error bars show the standard deviation over runs; hollow markers are as-built
    forms; the dashed line joins the points no other point in the panel beats on both time and accuracy.

    Args:
        summaries: run summaries (only finished runs with both figures are drawn).
        out_png: the PNG to write (atomically; its folder is created).
        reference: draw the published panel.

    Returns:
        The PNG's path.

    Raises:
        HGBenchError: nothing to draw, or matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HGBenchError("`hgbench plot` needs matplotlib: pip install matplotlib") from None

    summaries = [r for r in summaries if r.finished]
    ours, left_out = frontier_panels(summaries)
    panels: list[FrontierPanel | None] = [*ours, *([None] if reference else [])]  # None: the published panel
    if not panels:
        raise HGBenchError("no finished run has both an accuracy and a time to plot")

    measured = {r.case for r in summaries}
    cases = [c for c in list_cases() if c in measured or (reference and c in PUBLISHED)]
    cases += sorted(measured - set(cases), key=_case_order)
    cmap = plt.get_cmap("tab10")
    colour = {c: cmap(i % 10) for i, c in enumerate(cases)}

    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False, dpi=120)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel is None:
            xs = [p.min_per_epoch for p in PUBLISHED.values()]
            ys = [p.val_acc for p in PUBLISHED.values()]
            labels, xerr = list(PUBLISHED), [0.0] * len(xs)
            ax.scatter(xs, ys, marker="s", s=46, c=[colour[c] for c in labels], edgecolors="black", linewidths=0.6,
                       zorder=3, label="published (Quadro RTX 6000)")  # fmt: skip
            ax.set_title("published (Quadro RTX 6000, PyTorch 1.8.1)", fontsize=10)
            ax.set_ylabel("validation accuracy, as published (%)")
            ax.text(0.98, 0.02, "MPII · 50 epochs · batch 6", ha="right", transform=ax.transAxes, fontsize=7.5,
                    color="0.35")  # fmt: skip
        else:
            rows = panel.rows
            xs, ys = rows["min_per_epoch"].tolist(), rows["pckh_mean"].tolist()
            labels = [str(c) + ("ab" if ab else "") for c, ab in zip(rows["case"], rows["as_built"], strict=True)]
            xerr, yerr = rows["min_per_epoch_std"].fillna(0).tolist(), rows["pckh_mean_std"].fillna(0).tolist()
            for x, y, xe, ye, case, h in zip(xs, ys, xerr, yerr, rows["case"], rows["as_built"], strict=True):
                ax.errorbar(x, y, xerr=xe or None, yerr=ye or None, fmt="o", ms=7, color=colour[case],
                            ecolor="0.5", elinewidth=0.8, capsize=2, mfc="white" if h else colour[case], mew=1.4,
                            zorder=3)  # fmt: skip
            title = f"ours: {panel.device}"
            title = title if len(title) < 48 else title[:45] + "..."
            setting = panel.setting if len(panel.setting) < 60 else panel.setting[:57] + "..."
            ax.set_title(f"{title}\n{setting}" if setting else title, fontsize=10 if not setting else 9)
            ax.set_ylabel("validation accuracy, PCKh@0.5 Mean (%)")
            ax.text(0.98, 0.02, _panel_setting(panel.runs), ha="right", transform=ax.transAxes, fontsize=7.5,
                    color="0.35")  # fmt: skip
        ax.set_xlabel("training minutes per epoch")
        front = _pareto(list(zip(xs, ys, strict=True)))
        if len(front) > 1:
            ax.plot(*zip(*front, strict=True), ls="--", lw=1, color="0.55", zorder=2)
        ax.grid(True, alpha=0.3)
        ax.margins(y=0.15)
        # Time from zero: a 3% faster epoch looks 3% shorter, as it is; the right edge leaves room for labels.
        ax.set_xlim(0, 1.15 * max(x + e for x, e in zip(xs, xerr, strict=True)) or 1.0)
        fig.canvas.draw()  # labels are placed in display space, which needs the final limits
        markers = list(zip(xs, ys, strict=True))
        labels, xs, ys = _merge_close(labels, xs, ys, ax)
        spots = _place_labels(labels, xs, ys, markers, ax)
        for label, x, y, (dx, dy, ha) in zip(labels, xs, ys, spots, strict=True):
            leader = {"arrowstyle": "-", "color": "0.6", "lw": 0.5} if dy else None  # a moved label points home
            ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, zorder=4, ha=ha,
                        va="center", arrowprops=leader)  # fmt: skip
    notes = ["numbers: case; 'ab' and hollow markers: as built",
             "dashed: frontier (nothing is both faster and more accurate)"]  # fmt: skip
    if len(panels) > 1:
        notes.append("each panel has its own axes: different hardware or setting")
    if left_out:
        notes.append("not drawn (no accuracy or time): " + ", ".join(left_out[:4]))
    fig.suptitle("Stacked Hourglass variants: accuracy against training cost", fontsize=12)
    # About 85 characters of 7.5-point text fit under one 5.2-inch panel: wrap so a one-panel figure keeps it all.
    footer = textwrap.fill(" · ".join(notes), width=85 * len(panels))
    fig.text(0.5, 0.01, footer, ha="center", va="bottom", fontsize=7.5, color="0.35")
    fig.tight_layout(rect=(0, 0.035 * (footer.count("\n") + 1) + 0.01, 1, 0.97))

    out = Path(out_png)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(out, buf.getvalue())
    return out


# ---------------------------------------------------------------------------------------------- speed-mode records
BENCH_SCHEMA = "hgbench.bench/1"
BENCH_COLUMNS = ("case", "as_built", "device", "batch", "input_res", "mode", "settings", "phase", "status",
                 "ms_per_step", "images_per_s", "speedup_vs_eager", "tflops", "pct_conv_peak", "peak_memory_mib",
                 "record")  # fmt: skip


def load_bench_records(sources: Iterable[str | Path]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """`hgbench bench` records (schema hgbench.bench/1) among files, folders (recursive) and globs; others skipped."""
    files, missing = expand_sources(sources)
    warnings = [f"{m}: no such file, folder or matching pattern" for m in missing]
    found = []
    for path in sorted(files):
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            warnings.append(f"{path}: skipped, not readable JSON ({exc})")
            continue
        if isinstance(doc, dict) and doc.get("schema") == BENCH_SCHEMA:
            found.append((Path(path), doc))
    return found, warnings


def bench_table(records: Sequence[tuple[Path, dict]]) -> pd.DataFrame:
    """One row per (record, mode, phase): ms/step (median, device clock), images/s, speed-up over eager, TFLOP/s."""
    rows = []
    for path, rec in records:
        cfg, info = rec.get("config", {}), rec.get("machine_info", {})
        device = info.get("gpu_name") or f"CPU: {info.get('cpu', '?')}"
        results = rec.get("results", {})
        for mode, res in results.items():
            for phase in ("train", "infer"):
                stats = res.get(phase) or {}
                eager = (results.get("eager") or {}).get(phase) or {}
                speedup = None
                if stats.get("images_per_s") and eager.get("images_per_s"):
                    speedup = stats["images_per_s"] / eager["images_per_s"]
                rows.append({
                    "case": rec.get("spec", {}).get("name", cfg.get("case")), "as_built": cfg.get("as_built"),
                    "device": device, "batch": cfg.get("batch_size"), "input_res": cfg.get("input_res"),
                    "mode": mode, "settings": res.get("label"), "phase": phase,
                    "status": "ok" if res.get("status") == "ok" else f"{res.get('status')}: {res.get('reason')}",
                    "ms_per_step": stats.get("ms_per_step_median"), "images_per_s": stats.get("images_per_s"),
                    "speedup_vs_eager": speedup, "tflops": stats.get("tflops"),
                    "pct_conv_peak": stats.get("pct_conv_peak"), "peak_memory_mib": stats.get("peak_memory_mib"),
                    "record": Path(path).stem,
                })  # fmt: skip
    return pd.DataFrame(rows, columns=list(BENCH_COLUMNS))


def bench_markdown(df: pd.DataFrame) -> str:
    """The speed-mode table as Markdown (— where a figure was not measured)."""

    def cell(v: Any, fmt: str) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = ["| case | device | batch | input | mode | phase | ms/step | images/s | x eager | TFLOP/s | % conv peak "
             "| peak MiB | status |", "|:---|:---|---:|---:|:---|:---|---:|---:|---:|---:|---:|---:|:---|"]  # fmt: skip
    for _, r in df.iterrows():
        case = f"{r['case']}{' (as built)' if r['as_built'] else ''}"
        lines.append(
            f"| {case} | {_md_cell(str(r['device']))} | {r['batch']} | {r['input_res']} | {r['mode']} | {r['phase']} "
            f"| {cell(r['ms_per_step'], '.1f')} | {cell(r['images_per_s'], '.1f')} "
            f"| {cell(r['speedup_vs_eager'], '.2f')} "
            f"| {cell(r['tflops'], '.3f')} | {cell(r['pct_conv_peak'], '.1f')} | {cell(r['peak_memory_mib'], '.0f')} "
            f"| {_md_cell(str(r['status']))} |"
        )
    return "\n".join(lines) + "\n"
