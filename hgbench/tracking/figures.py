"""The figures a tracker logs, named once and read from the record: one epoch's entry, the finished run, its settings.

Every tracker (TensorBoard, MLflow) and `hgbench export` log exactly these, so what a person sees in either tool is
the record's own numbers under one set of names. Pure functions of the record's JSON; a figure the record holds as
null (not measured: GPU telemetry on a CPU, the flip pass with --no-flip-test) is left out, never logged as 0.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Mapping
from typing import Any

from hgbench.spec.skeleton import PCKH_PARTS

# The seven joint groups of the PCKh table, in its order (Head ... Ankle).
GROUPS: tuple[str, ...] = tuple(PCKH_PARTS)

# Per-epoch scalars: name -> how to read it from an epoch entry (docs/record.md, results.epochs[]). The validation
# PCKh of the curves is without flip test, as the runner measures it every epoch; the names say so.
SENTINEL = "loss/train"  # every epoch entry has it: a step holding it was logged


def _minutes(key: str) -> Any:
    return lambda e: e[key] / 60 if _is_num(e.get(key)) else None


EPOCH_FIGURES: dict[str, Any] = {
    "loss/train": lambda e: e.get("train_loss"),
    "loss/val": lambda e: e.get("val_loss"),
    "accuracy/heatmap": lambda e: e.get("heatmap_acc"),
    "pckh_no_flip/Mean": lambda e: e.get("pckh"),
    **{f"pckh_no_flip/{g}": (lambda e, g=g: (e.get("pckh_parts") or {}).get(g)) for g in GROUPS},
    "time/min_per_epoch": _minutes("wall_s"),
    "time/compute_min": _minutes("compute_s"),
    "time/data_wait_min": _minutes("data_wait_s"),
    "time/device_idle_min": _minutes("device_idle_s"),
    "time/validation_min": _minutes("val_wall_s"),
    "speed/images_per_s": lambda e: e.get("images_per_s"),
    "contention/others_cpu_share": lambda e: (e.get("load") or {}).get("other_cpu_frac"),
    "contention/steal_share": lambda e: (e.get("load") or {}).get("steal_frac"),
    "gpu/utilisation_pct": lambda e: e.get("gpu_util_mean"),
    "gpu/power_w": lambda e: e.get("power_mean_w"),
    "gpu/energy_j": lambda e: e.get("energy_j"),
    "gpu/memory_max_mib": lambda e: e.get("gpu_mem_used_max_mib"),
    "train/lr": lambda e: e.get("lr"),
}


def _at(record: Mapping[str, Any], dotted: str) -> Any:
    node: Any = record
    for key in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


# Once per finished run, at the step of its last epoch: the final figures, from where docs/record.md keeps them.
FINAL_FIGURES: dict[str, str] = {
    "final/pckh_Mean": "results.pckh.Mean",  # the run's final PCKh (flip test unless --no-flip-test)
    **{f"final/pckh_{g}": f"results.pckh.{g}" for g in GROUPS},
    "final/pckh_flip_Mean": "results.inference.flip.pckh_mean",
    "final/pckh_no_flip_Mean": "results.inference.plain.pckh_mean",
    "final/inference_min": "results.inference.plain.wall_min",
    "final/inference_flip_min": "results.inference.flip.wall_min",
    "final/inference_device_min": "results.inference.plain.device_min",
    "final/heatmap_acc": "results.heatmap_acc",
    "final/min_per_epoch": "results.train.min_per_epoch.mean",
    "final/images_per_s": "results.train.images_per_s",
    "final/data_wait_fraction": "results.train.data_wait_fraction",
    "final/energy_j_per_epoch": "results.train.energy_j_per_epoch",
    "final/peak_memory_mib": "results.peak_memory_mib",
    "final/peak_host_memory_mib": "results.peak_host_memory_mib",
}
FINAL_SENTINEL = "final/pckh_Mean"


def _is_num(value: Any) -> bool:
    # numpy's scalars too; NaN (a joint group never annotated) is no figure
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def epoch_figures(entry: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one epoch entry, by name; null figures left out."""
    values = {name: read(entry) for name, read in EPOCH_FIGURES.items()}
    return {name: float(v) for name, v in values.items() if _is_num(v)}


def final_figures(record: Mapping[str, Any]) -> dict[str, float]:
    """The finished run's figures, by name; empty for a run that did not finish."""
    if record.get("status") != "finished":
        return {}
    values = {name: _at(record, path) for name, path in FINAL_FIGURES.items()}
    return {name: float(v) for name, v in values.items() if _is_num(v)}


def final_step(record: Mapping[str, Any]) -> int:
    """The step the final figures are logged at: the last epoch (0 for a run without one)."""
    epochs = _at(record, "results.epochs")
    return len(epochs) if isinstance(epochs, list) else 0


def epochs_of(record: Mapping[str, Any]) -> list[dict]:
    """The record's epoch entries, each with its epoch number (the step every tracker logs it at)."""
    epochs = _at(record, "results.epochs")
    if not isinstance(epochs, list):
        return []
    return [dict(e) for e in epochs if isinstance(e, Mapping) and isinstance(e.get("epoch"), int)]


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flat(f"{prefix}.{key}", inner, out)
    elif value is None:
        out[prefix] = "none"
    elif isinstance(value, (bool, int, float, str)):
        out[prefix] = value
    else:
        out[prefix] = json.dumps(value, sort_keys=True)  # lists (milestones): one comparable value


def hparams(record: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The run's settings as flat hyperparameters: the whole spec and config, and the model's size.

    ``config.variant`` repeats the spec (a variant file's whole network) and is left out.
    """
    out: dict[str, Any] = {}
    for section in ("spec", "config", "model"):
        value = record.get(section)
        if isinstance(value, Mapping):
            _flat(section, {k: v for k, v in value.items() if (section, k) != ("config", "variant")}, out)
    return out


def run_key(record: Mapping[str, Any]) -> str:
    """What names one run for every tracker: its machine, run id and start (two results folders on one machine may
    both hold a ``0001_hg1``)."""
    return f"{machine_of(record)}/{record.get('run_id')}@{record.get('started')}"


def machine_of(record: Mapping[str, Any]) -> str:
    info = record.get("machine_info")
    machine = info.get("machine_id") if isinstance(info, Mapping) else None
    return str(machine or "unknown-machine")


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str) -> str:
    """A single path component from a name a record holds (it may be a stranger's): no separators, no dot-names."""
    name = _UNSAFE.sub("-", text).strip("-.")[:120]
    return name or "run"
