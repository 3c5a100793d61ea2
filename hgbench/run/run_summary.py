"""A run record flattened for readers: `summarize` takes each figure from where docs/record.md says into a
`RunSummary`, which the report, the sweep's view and the store's readers use. Missing or null fields (an interrupted
run's, a hand-edited record's) become None; a pure function of the record. The schema itself is `hgbench.run.record`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hgbench.errors import HGBenchError
from hgbench.eval.metrics import person_masks_from_dict
from hgbench.measure.environment import device_label, machine_id
from hgbench.run.record import is_number, record_value
from hgbench.spec.cases import CaseSpec, case_label


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
    return float(value) if is_number(value) and math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return int(value) if is_number(value) and float(value).is_integer() else None


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
