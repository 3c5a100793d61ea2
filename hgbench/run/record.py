"""The run record's schema (``hgbench.run/1``, docs/record.md), in one place: building it, validating it, reading it.

The runner's `Recorder` builds records with `new_record`, `train_summary` and `inference_entry`; the store
(hgbench.run.results) validates every file it reads with `validate_record`; the reporter reads `RunSummary`s made by
`summarize`, which takes each figure from where docs/record.md says. Pure functions of their inputs.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hgbench._version import __version__
from hgbench.errors import HGBenchError
from hgbench.eval.metrics import person_masks_from_dict
from hgbench.measure.contention import run_contention
from hgbench.measure.environment import device_label, machine_id
from hgbench.measure.stats import describe
from hgbench.spec.cases import CaseSpec, case_label

SCHEMA = "hgbench.run/1"
STATUSES: tuple[str, ...] = ("finished", "interrupted", "failed", "running")

# Top-level keys of every record (docs/record.md); values may be null where the doc allows it.
REQUIRED_KEYS: tuple[str, ...] = (
    "schema",
    "hgbench_version",
    "datetime",
    "started",
    "finished",
    "status",
    "status_reason",
    "run_id",
    "machine_info",
    "commit_info",
    "spec",
    "config",
    "dataset",
    "model",
    "results",
)

# Dotted paths the readers take from a *finished* record: each must be present (null allowed: "not measured").
READER_PATHS: tuple[str, ...] = (
    "spec.name",
    "spec.as_built",
    "spec.description",
    "model.params",
    "model.gflops",
    "results.train.min_per_epoch",
    "results.train.data_wait_fraction",
    "results.train.images_per_s",
    "results.train.energy_j_per_epoch",
    "results.pckh",
    "results.heatmap_acc",
    "results.inference",
    "config.seed",
)

# Numeric fields: when present and not null they must be numbers (a string here means a corrupt or foreign record).
NUMERIC_PATHS: tuple[str, ...] = (
    "model.params",
    "model.gflops",
    "results.train.min_per_epoch.mean",
    "results.train.data_wait_fraction",
    "results.train.images_per_s",
    "results.train.energy_j_per_epoch",
    "results.pckh.Mean",
    "results.heatmap_acc",
    "results.inference.plain.device_min",
    "results.inference.plain.wall_min",
    "results.peak_host_memory_mib",
    "results.compile.frames",
    "results.compile.frames_compiled",
    "results.compile.recompile_limit_hits",
)


# What float32 convolutions compute in (`machine_info.float32_math.conv`, `hgbench.measure.environment.float32_math`).
FLOAT32_MATH: tuple[str, ...] = ("tf32", "fp32")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def train_summary(epochs: list[dict]) -> dict:
    """Minutes per epoch (warm-up epoch excluded when there are two or more), data-wait fraction, images/s, energy."""
    if not epochs:
        return {
            "min_per_epoch": describe([]),
            "min_per_epoch_first": None,
            "data_wait_fraction": None,
            "images_per_s": None,
            "energy_j_per_epoch": None,
            "warmup_excluded": False,
        }
    steady = steady_epochs(epochs)
    wall = sum(e["wall_s"] for e in steady)
    wait = sum(e["data_wait_s"] for e in steady)
    imgs = sum(e["images"] for e in steady)
    energies = [e["energy_j"] for e in steady if e.get("energy_j") is not None]
    return {
        "min_per_epoch": describe([e["wall_s"] / 60 for e in steady]),
        "min_per_epoch_first": epochs[0]["wall_s"] / 60,
        "data_wait_fraction": wait / wall if wall > 0 else None,
        "images_per_s": imgs / wall if wall > 0 else None,
        "energy_j_per_epoch": sum(energies) / len(energies) if len(energies) == len(steady) else None,
        "warmup_excluded": len(steady) < len(epochs),
    }


def steady_epochs(epochs: list[dict]) -> list[dict]:
    """The epochs a run's time figures rest on: all but the warm-up epoch (all of them when that is the only one)."""
    return [e for e in epochs if not e.get("warmup")] or epochs


def contention_summary(results: dict, gpu_share: float, *, mig_slice: bool = False) -> dict:
    """``results.contention``: were the steady epochs or the inference pass contended, was the GPU shared (given to
    the run in part by a sweep, or a MIG slice of it: ``machine_info.gpu_state.mig``)."""
    inference = results.get("inference")
    load = inference.get("load") if isinstance(inference, dict) else None
    return run_contention(steady_epochs(results.get("epochs") or []), load, gpu_share, mig_slice=mig_slice)


def inference_entry(timing: dict, pckh_mean: float | None) -> dict:
    """One inference pass (plain or flip) as the record stores it."""
    device_s = timing.get("device_s")
    return {
        "device_min": device_s / 60 if device_s is not None else None,
        "wall_min": timing["wall_s"] / 60,
        "images_per_s": timing.get("images_per_s"),
        "compute_min": timing["compute_s"] / 60,  # on `clock`: CUDA events on a GPU (= device_min), else the host's
        "clock": timing.get("clock"),
        "data_wait_min": timing["data_wait_s"] / 60,
        "pckh_mean": pckh_mean,
    }


def limit_notes(config: dict, dataset: dict) -> list[str]:
    """What a --limit-train / --limit-val larger than its split did: every person of the split was used."""
    notes = []
    for flag, key, size_key in (
        ("--limit-train", "limit_train", "train_size"),
        ("--limit-val", "limit_val", "val_size"),
    ):
        asked, used = config.get(key), dataset.get(size_key)
        if isinstance(asked, int) and isinstance(used, int) and used < asked:
            notes.append(f"{flag} {asked}: the split has {used} people; all {used} are used")
    return notes


def new_record(
    *,
    run_id: str,
    machine_info: dict,
    commit_info: dict,
    spec: dict,
    config: dict,
    dataset: dict,
    model: dict,
    checkpoint: str | None = None,
    spec_fingerprint: str | None = None,
    fast_mode: dict | None = None,
    setting_notes: list[str] | None = None,
) -> dict:
    """The record as written when a run starts (status interrupted until the first epoch finishes)."""
    now = utc_now()
    return {
        "schema": SCHEMA,
        "hgbench_version": __version__,
        "datetime": now,
        "started": now,
        "finished": None,
        "status": "interrupted",
        "status_reason": "started; no epoch finished yet",
        "run_id": run_id,
        "checkpoint": checkpoint,  # the run's last.pt (resume, evaluate --checkpoint); null once deleted
        "machine_info": machine_info,
        "commit_info": commit_info,
        "spec": spec,
        "spec_fingerprint": spec_fingerprint,  # CaseSpec.fingerprint(): the network, whatever its name or file
        "config": config,
        "fast_mode": fast_mode,  # --fast only: the mode chosen, how (measured / cached / rule) and the probe's figures
        "setting_notes": list(setting_notes or []),  # settings asked for and not used (--compile under torchrun), why
        # A limit larger than its split is recorded with what was used (the sizes are dataset.train_size / val_size).
        "dataset": {**dataset, "limit_notes": limit_notes(config, dataset)},
        "model": model,
        "results": {
            "epochs": [],
            "train": train_summary([]),
            "pckh": None,
            "heatmap_acc": None,
            "inference": None,
            "peak_memory_mib": None,
            "peak_host_memory_mib": None,
            "telemetry": None,
            "compile": None,  # --compile only: what dynamo compiled (hgbench.measure.compile_watch)
            "contention": None,
        },
    }


# ------------------------------------------------------------------------------------------ validating, reading
_MISSING = object()


def _lookup(record: Any, dotted: str) -> Any:
    """``record["a"]["b"]`` for ``"a.b"``, or `_MISSING` when any level is missing or not a mapping."""
    node = record
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def record_value(record: Any, dotted: str) -> Any:
    """The value at ``dotted``; None when any level is missing."""
    value = _lookup(record, dotted)
    return None if value is _MISSING else value


def _has(record: Any, dotted: str) -> bool:
    """Whether every level of ``dotted`` exists (the last may hold null)."""
    return _lookup(record, dotted) is not _MISSING


def _is_number(value: Any) -> bool:
    """A JSON number a float can hold: an integer past float's range (JSON has no limit) would raise OverflowError in
    every reader that takes it as a float, so it is no number here, and `validate_record` names it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, float) or abs(value) <= sys.float_info.max


def _short(value: Any) -> str:
    """A value for a one-line problem: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def validate_record(record: Any) -> list[str]:
    """Check a parsed JSON document against ``hgbench.run/1`` (docs/record.md).

    Checks the schema string, every top-level key, the object-typed sections, the status value, and for a finished
    record every field the readers take (present; null allowed where not measured) and that numbers are numbers.

    Args:
        record: a parsed JSON document.

    Returns:
        One short line per problem; empty when the record is valid.
    """
    if not isinstance(record, Mapping):
        return [f"not a JSON object but a {type(record).__name__}"]
    schema = record.get("schema")
    if schema != SCHEMA:
        return [f"schema is {schema!r}, not {SCHEMA!r}" if "schema" in record else "no 'schema' key"]
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in record]
    for key in ("machine_info", "commit_info", "spec", "config", "dataset", "model", "results"):
        if key in record and not isinstance(record[key], Mapping):
            problems.append(f"{key!r} is not an object")
    status = record.get("status")
    if "status" in record and status not in STATUSES:
        problems.append(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(record_value(record, "spec.name"), str):
        problems.append("spec.name missing or not a string")
    if status == "finished":
        problems += [f"finished record lacks {p}" for p in READER_PATHS if not _has(record, p)]
    for p in NUMERIC_PATHS:
        value = record_value(record, p)
        if value is not None and not _is_number(value):
            what = "past float's range" if isinstance(value, int) and not isinstance(value, bool) else "not a number"
            problems.append(f"{p} is {_short(value)}, {what}")
    math = record_value(record, "machine_info.float32_math")
    if math is not None and not (isinstance(math, Mapping) and math.get("conv") in FLOAT32_MATH):
        problems.append(f"machine_info.float32_math is {_short(math)}, not an object whose conv is tf32 or fp32")
    ci95 = record_value(record, "results.pckh.ci95")
    if ci95 is not None and not (isinstance(ci95, list) and len(ci95) == 2 and all(map(_is_number, ci95))):
        problems.append(f"results.pckh.ci95 is {_short(ci95)}, not [low, high]")
    try:
        person_masks_from_dict(record_value(record, "results.pckh.per_person"))
    except HGBenchError as exc:
        problems.append(str(exc))
    return problems


@dataclass
class RunSummary:
    """One run record flattened to what the reporter shows (docs/record.md, "Readers take"); null -> None."""

    path: Path  # the record file
    run_id: str  # file stem, e.g. 0007_case3_seed0
    case: str  # spec.name: "1".."8", "hg1", ...
    as_built: bool  # the study's code as it ran (True) or the case as described (False)
    description: str  # spec.description
    seed: int | None  # config.seed
    status: str  # finished | interrupted | failed | running
    status_reason: str | None  # one line, for runs that did not finish
    device: str  # gpu_name, or "CPU: <cpu>"
    machine_id: str  # results sub-folder name, e.g. cpu-pt2.14.1
    datetime: str | None  # UTC ISO-8601, when the record was last written
    params: int | None  # model.params
    params_used: int | None  # model.params_used (parameters that get a gradient)
    gflops: float | None  # forward GFLOPs at model.gflops_input_res
    min_per_epoch: float | None  # mean training minutes per epoch (warm-up epoch excluded when 2+ epochs)
    min_per_epoch_first: float | None  # the first (warm-up) epoch on its own
    data_wait_pct: float | None  # 100 * fraction of epoch wall time spent waiting for data
    pckh_mean: float | None  # final PCKh@0.5 Mean (%), the table's "validation accuracy"
    heatmap_acc: float | None  # fraction, final validation epoch
    inference_min: float | None  # minutes for one plain pass over the validation set, wall clock, on every device
    inference_device_min: float | None  # the pass's per-batch compute on the GPU clock (CUDA events); None on CPU
    images_per_s: float | None  # training throughput
    energy_j_per_epoch: float | None  # None without an NVIDIA GPU
    peak_memory_mib: float | None  # torch.cuda.max_memory_allocated
    # The run process's peak resident memory (hgbench.measure.host_memory); None in an older record.
    peak_host_memory_mib: float | None
    epochs_done: int  # epochs with an entry in results.epochs
    dataset: str | None  # dataset.name: synthetic | mpii
    config: dict = field(default_factory=dict)  # every hyperparameter of the run
    pckh: dict = field(default_factory=dict)  # the PCKh table: Head, Shoulder, ..., Mean
    epoch_minutes: list[float] = field(default_factory=list)  # per-epoch minutes behind min_per_epoch (stats.data)
    dataset_info: dict = field(default_factory=dict)  # dataset section without the skipped-images list
    hgbench_version: str | None = None  # the code version that measured the run (rows never pool two versions)
    gflops_input_res: int | None = None  # the input side `gflops` was counted at (model.gflops_input_res)
    spec_fingerprint: str | None = None  # the network (spec_fingerprint; recomputed from spec for older records)
    pckh_ci95: tuple[float, float] | None = None  # results.pckh.ci95: bootstrap interval of pckh_mean over people
    pckh_people: tuple[np.ndarray, np.ndarray] | None = None  # (scored, correct) [N, 16] bool; None in old records
    epochs: list[dict] = field(default_factory=list)  # results.epochs: per-epoch losses, PCKh and time split
    contended: bool | None = None  # results.contention.contended: a steady epoch or the inference pass was busy
    shared_gpu: bool = False  # results.contention.shared_gpu: the run shared its GPU with other runs
    mig_slice: bool = False  # results.contention.mig_slice: the run had a MIG slice of its GPU
    contention_reasons: list[str] = field(default_factory=list)  # why contended (results.contention.reasons)
    torch_version: str | None = None  # machine_info.torch: the torch that measured the run

    @property
    def finished(self) -> bool:
        """Whether the run finished (only finished runs enter the table)."""
        return self.status == "finished"

    @property
    def label(self) -> str:
        """``case 3`` or ``case 5 (as built)``."""
        return case_label(self.case, self.as_built)


def _num(value: Any) -> float | None:
    return float(value) if _is_number(value) and math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return int(value) if _is_number(value) and float(value).is_integer() else None


def summarize(record: Mapping[str, Any], path: str | Path) -> RunSummary:
    """Flatten a (valid) record into a `RunSummary`, taking each field from where docs/record.md says.

    Missing or null fields become None, so a partial (interrupted) record summarises too.

    Args:
        record: the parsed record.
        path: the file it came from (its stem is the fallback run id).
    """
    path = Path(path)
    info = record.get("machine_info") or {}
    device = device_label(info)
    plain = record_value(record, "results.inference.plain")
    plain = plain if isinstance(plain, Mapping) else {}  # a hand-edited record must not crash every reader
    wait = _num(record_value(record, "results.train.data_wait_fraction"))
    stats = record_value(record, "results.train.min_per_epoch")
    data = stats.get("data") if isinstance(stats, Mapping) else None
    pckh = record_value(record, "results.pckh")
    epochs = record_value(record, "results.epochs")
    dataset = record.get("dataset") if isinstance(record.get("dataset"), Mapping) else {}
    config = record.get("config") if isinstance(record.get("config"), Mapping) else {}
    return RunSummary(
        path=path,
        run_id=str(record.get("run_id") or path.stem),
        case=str(record_value(record, "spec.name")),
        as_built=bool(record_value(record, "spec.as_built")),
        description=str(record_value(record, "spec.description") or ""),
        seed=_int(config.get("seed")),
        status=str(record.get("status")),
        status_reason=record.get("status_reason"),
        device=device,
        machine_id=str(info.get("machine_id") or machine_id(info)),
        datetime=record.get("datetime"),
        params=_int(record_value(record, "model.params")),
        params_used=_int(record_value(record, "model.params_used")),
        gflops=_num(record_value(record, "model.gflops")),
        min_per_epoch=_num(record_value(record, "results.train.min_per_epoch.mean")),
        min_per_epoch_first=_num(record_value(record, "results.train.min_per_epoch_first")),
        data_wait_pct=None if wait is None else 100.0 * wait,
        pckh_mean=_num(record_value(record, "results.pckh.Mean")),
        heatmap_acc=_num(record_value(record, "results.heatmap_acc")),
        inference_min=_num(plain.get("wall_min")),
        inference_device_min=_num(plain.get("device_min")),
        images_per_s=_num(record_value(record, "results.train.images_per_s")),
        energy_j_per_epoch=_num(record_value(record, "results.train.energy_j_per_epoch")),
        peak_memory_mib=_num(record_value(record, "results.peak_memory_mib")),
        peak_host_memory_mib=_num(record_value(record, "results.peak_host_memory_mib")),
        epochs_done=len(epochs) if isinstance(epochs, list) else 0,
        dataset=dataset.get("name"),
        config=dict(config),
        pckh=dict(pckh) if isinstance(pckh, Mapping) else {},
        epoch_minutes=[float(x) for x in data if _num(x) is not None] if isinstance(data, list) else [],
        dataset_info={k: v for k, v in dataset.items() if k != "skipped_images"},
        hgbench_version=str(record["hgbench_version"]) if record.get("hgbench_version") is not None else None,
        gflops_input_res=_int(record_value(record, "model.gflops_input_res")),
        spec_fingerprint=record.get("spec_fingerprint") or _spec_fingerprint(record.get("spec")),
        pckh_ci95=_interval(record_value(record, "results.pckh.ci95")),
        pckh_people=_people(record_value(record, "results.pckh.per_person")),
        epochs=[dict(e) for e in epochs if isinstance(e, Mapping)] if isinstance(epochs, list) else [],
        **_contention(record_value(record, "results.contention")),
        torch_version=str(info["torch"]) if info.get("torch") is not None else None,
    )


def _contention(value: Any) -> dict:
    """RunSummary's contention fields; an older record without the section is unknown, not contended."""
    if not isinstance(value, Mapping):
        return {}
    reasons = value.get("reasons")
    return {
        "contended": value["contended"] if isinstance(value.get("contended"), bool) else None,
        "shared_gpu": value.get("shared_gpu") is True,
        "mig_slice": value.get("mig_slice") is True,
        "contention_reasons": [str(r) for r in reasons] if isinstance(reasons, list) else [],
    }


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and all(_num(v) is not None for v in value):
        return float(value[0]), float(value[1])
    return None


def _people(value: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-person masks, or None where absent or malformed (`validate_record` reports the latter)."""
    try:
        return person_masks_from_dict(value)
    except HGBenchError:
        return None


def _spec_fingerprint(spec: Any) -> str | None:
    """`CaseSpec.fingerprint` of a record's spec; None for a spec this version cannot read."""
    try:
        return CaseSpec.from_dict(spec).fingerprint()
    except (KeyError, TypeError, ValueError):
        return None
