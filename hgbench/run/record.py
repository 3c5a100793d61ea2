"""The run record's schema (``hgbench.run/1``, docs/record.md), in one place: building it and validating it.

The runner's `Recorder` builds records with `new_record`, `train_summary` and `inference_entry`; the store
(hgbench.run.results) validates every file it reads with `validate_record`; the reporter reads `RunSummary`s made by
`hgbench.run.run_summary.summarize`, which takes each figure from where docs/record.md says. Pure functions of their
inputs.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping
from typing import Any

from hgbench._version import __version__
from hgbench.errors import HGBenchError
from hgbench.eval.metrics import person_masks_from_dict
from hgbench.measure.contention import run_contention
from hgbench.measure.stats import describe

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


def is_number(value: Any) -> bool:
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
        if value is not None and not is_number(value):
            what = "past float's range" if isinstance(value, int) and not isinstance(value, bool) else "not a number"
            problems.append(f"{p} is {_short(value)}, {what}")
    math = record_value(record, "machine_info.float32_math")
    if math is not None and not (isinstance(math, Mapping) and math.get("conv") in FLOAT32_MATH):
        problems.append(f"machine_info.float32_math is {_short(math)}, not an object whose conv is tf32 or fp32")
    ci95 = record_value(record, "results.pckh.ci95")
    if ci95 is not None and not (isinstance(ci95, list) and len(ci95) == 2 and all(map(is_number, ci95))):
        problems.append(f"results.pckh.ci95 is {_short(ci95)}, not [low, high]")
    try:
        person_masks_from_dict(record_value(record, "results.pckh.per_person"))
    except HGBenchError as exc:
        problems.append(str(exc))
    return problems
