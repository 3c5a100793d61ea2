"""Assembling the run record (docs/record.md) from what the runner measured. Pure functions of their inputs."""

from __future__ import annotations

import datetime as dt

from hgbench import __version__
from hgbench.stats import describe

SCHEMA = "hgbench.run/1"


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
    steady = [e for e in epochs if not e.get("warmup")] or epochs
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


def inference_entry(timing: dict, pckh_mean: float | None) -> dict:
    """One inference pass (plain or flip) as the record stores it."""
    device_s = timing.get("device_s")
    return {
        "device_min": device_s / 60 if device_s is not None else None,
        "wall_min": timing["wall_s"] / 60,
        "images_per_s": timing.get("images_per_s"),
        "compute_min": timing["compute_s"] / 60,
        "data_wait_min": timing["data_wait_s"] / 60,
        "pckh_mean": pckh_mean,
    }


def new_record(
    *, run_id: str, machine_info: dict, commit_info: dict, spec: dict, config: dict, dataset: dict, model: dict,
    checkpoint: str | None = None,
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
        "config": config,
        "dataset": dataset,
        "model": model,
        "results": {
            "epochs": [],
            "train": train_summary([]),
            "pckh": None,
            "heatmap_acc": None,
            "inference": None,
            "peak_memory_mib": None,
            "telemetry": None,
        },
    }
