"""`hgbench run --fast` on the CPU: choose the mode by measuring it, once per machine, torch version and workload.

A CPU's fastest mode depends on the chip (bf16 is several times faster than fp32 with AVX512-BF16 or AMX, and slower
without), on the model and on the batch, so a rule cannot know it. The probe times a few training steps of the
run's own case at its batch and input size (`hgbench.train.workload`, the step `hgbench bench` times) in each candidate
mode of the ladder that applies here (`hgbench.train.speed_modes.plan_modes`: eager, channels_last, bf16 autocast; the
native-bf16 check drops bf16 where the CPU would only emulate it; torch.compile is left out: its first step costs
minutes on a CPU, which a short run never earns back) and keeps the fastest. A higher rung must beat the best lower
one by `MIN_GAIN` to be chosen, so noise never trades the study's fp32 for nothing.

The result is cached as JSON under ``cache_root()/fast-mode/`` (written atomically), keyed by the host, CPU model,
core count, torch version, the case's fingerprint, batch and input size: a second run of the same case reads it.
``HGBENCH_FAST_PROBE=0`` skips the probe (the rule of `hgbench.train.speed_modes.best_mode` decides, and the record says
so); a CPU run under DDP also uses the rule, so every rank picks the same mode.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from hgbench.files.atomic_io import write_json_atomic
from hgbench.files.bounded_read import read_json
from hgbench.measure.environment import cpu_has_native_bf16, cpu_model
from hgbench.measure.timing import time_fn
from hgbench.spec.cases import CaseSpec
from hgbench.spec.config import cache_root
from hgbench.train import compile_probe
from hgbench.train.distributed import COMPILE_UNDER_DDP
from hgbench.train.speed_modes import ModeSettings, best_mode, plan_modes
from hgbench.train.workload import make_workload

CANDIDATES: tuple[str, ...] = ("eager", "channels_last", "bf16")  # the CPU rungs worth a short run
PROBE_WARMUP = 1  # untimed steps per mode (allocator growth, oneDNN kernel selection)
PROBE_STEPS = 2  # timed steps per mode: a few seconds for hg1, about a minute for an 8-stack case at 256 px
MIN_GAIN = 0.05  # a higher rung must be at least 5% faster per step than the best lower one
CACHE_VERSION = 1
PROBE_ENV = "HGBENCH_FAST_PROBE"  # "0": no probe, the rule decides

# Seconds per training step of one mode's settings (the default builds the workload and times it).
Measure = Callable[[ModeSettings], float]


@dataclass(frozen=True)
class FastChoice:
    """The mode `--fast` runs, and how it was chosen (the record's ``fast_mode``)."""

    mode: str  # one of `hgbench.train.speed_modes.MODES`
    settings: dict[str, Any]  # channels_last, amp, compile, decode: what the run turns on
    how: str  # "measured" (probed now), "cached" (probed earlier, same key), or "rule" (no probe: CUDA, DDP, off)
    probe: dict[str, Any] | None = None  # seconds per step by mode, skipped modes, steps, key: the evidence

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_key(spec: CaseSpec, *, batch: int, input_res: int) -> dict[str, Any]:
    """What the probe's answer depends on: the machine, the software and the workload."""
    return {
        "version": CACHE_VERSION,
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "spec": spec.fingerprint(),
        "batch": batch,
        "input_res": input_res,
    }


def cache_path(key: dict[str, Any], cache_dir: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (cache_dir or cache_root() / "fast-mode") / f"{digest}.json"


def measure_step(spec: CaseSpec, *, batch: int, input_res: int) -> Measure:
    """The real measurement: median seconds of `PROBE_STEPS` training steps after `PROBE_WARMUP`, on the CPU."""

    def measure(settings: ModeSettings) -> float:
        work = make_workload(spec, settings, batch=batch, input_res=input_res, device="cpu")
        work.model.train()
        seconds = time_fn(work.train_step, warmup=PROBE_WARMUP, iters=PROBE_STEPS, device="cpu").median
        del work
        gc.collect()
        return seconds

    return measure


def pick_fastest(seconds: dict[str, float]) -> str:
    """The mode to run: walking up the ladder, a rung replaces the best so far only if `MIN_GAIN` faster.

    Args:
        seconds: seconds per step of each measured mode, in ladder order.
    """
    best = next(iter(seconds))
    for mode, s in seconds.items():
        if s < (1.0 - MIN_GAIN) * seconds[best]:
            best = mode
    return best


def _settings_dict(settings: ModeSettings) -> dict[str, Any]:
    return {"channels_last": settings.channels_last, "amp": settings.amp, "compile": settings.compile}


def probe_cpu(measure: Measure) -> tuple[str, ModeSettings, dict[str, Any]]:
    """Time every candidate mode that applies on this CPU; the fastest (`pick_fastest`), its settings, the figures."""
    plans = plan_modes(CANDIDATES, "cpu")
    seconds = {p.mode: float(measure(p.settings)) for p in plans if p.settings is not None}
    chosen = pick_fastest(seconds)
    settings = next(p.settings for p in plans if p.mode == chosen)
    figures = {
        "s_per_step": seconds,
        "speedup_vs_eager": {m: seconds["eager"] / s for m, s in seconds.items()} if "eager" in seconds else None,
        "skipped": {p.mode: p.skip_reason for p in plans if p.settings is None},
        "warmup": PROBE_WARMUP,
        "steps": PROBE_STEPS,
        "min_gain": MIN_GAIN,
        "native_bf16": cpu_has_native_bf16(),
    }
    return chosen, settings, figures  # type: ignore[return-value]  # the chosen mode was measured, so it applies


def _from_rule(device: torch.device, why: str, *, compile_ok: bool = True) -> FastChoice:
    rule = best_mode(device)
    evidence: dict[str, Any] = {"reason": why}
    if not compile_ok:
        rule = {**rule, "compile": False}
    elif device.type == "cuda" and torch.cuda.is_available():
        probe = compile_probe.probe_compile(device)  # best_mode asked it already: the answer kept for this process
        evidence["compile_probe"] = probe.to_dict()
        if not probe.ok:
            evidence["reason"] = f"CUDA: the fast path without torch.compile, which fails here: {probe.reason}"
    mode = "compile" if rule["compile"] else "bf16" if rule["amp"] else "channels_last"
    return FastChoice(mode, rule, "rule", evidence)


def choose_fast_mode(
    device: str | torch.device,
    spec: CaseSpec,
    *,
    batch: int,
    input_res: int,
    world_size: int = 1,
    measure: Measure | None = None,
    cache_dir: Path | None = None,
) -> FastChoice:
    """The mode `hgbench run --fast` uses on `device` for this case, batch and input size.

    CUDA: the rule (`best_mode`: channels_last, native bf16, torch.compile, GPU decoding; no compile under DDP,
    `hgbench.train.distributed.COMPILE_UNDER_DDP`, nor where a tiny function does not compile:
    `hgbench.train.compile_probe`, its reason in the choice's ``probe``). CPU: the fastest
    measured mode (`probe_cpu`), read from the cache when this machine, torch and workload were probed before;
    the rule where the probe is off (``HGBENCH_FAST_PROBE=0``) or the run is distributed. Decoding stays in the
    DataLoader workers on a CPU (main-process decoding would serialise what they do in parallel).

    Args:
        device: the run's device.
        spec: the case.
        batch: the per-process training batch.
        input_res: square input side.
        world_size: processes of the run.
        measure: seconds per training step of given settings (tests inject a fake); default: `measure_step`.
        cache_dir: where the probe's answers are cached (default ``cache_root()/fast-mode``).
    """
    dev = torch.device(device)
    if dev.type != "cpu" and world_size > 1:
        return _from_rule(dev, COMPILE_UNDER_DDP, compile_ok=False)  # as an explicit --compile (hgbench.run.plan)
    if dev.type != "cpu":
        return _from_rule(dev, "CUDA: the fast path's settings are fixed (see hgbench bench)")
    if os.environ.get(PROBE_ENV, "1").strip() == "0":
        return _from_rule(dev, f"probe turned off ({PROBE_ENV}=0)")
    if world_size > 1:
        return _from_rule(dev, "distributed CPU run: every rank must pick the same mode, so no probe")
    key = probe_key(spec, batch=batch, input_res=input_res)
    path = cache_path(key, cache_dir)
    cached = _read_cache(path, key)
    if cached is not None:
        return FastChoice(cached["mode"], cached["settings"], "cached", {**cached["probe"], "cache": str(path)})
    chosen, settings, figures = probe_cpu(measure or measure_step(spec, batch=batch, input_res=input_res))
    figures["measured_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    choice = FastChoice(chosen, {**_settings_dict(settings), "decode": "workers"}, "measured", figures)
    write_json_atomic(path, {"key": key, "mode": choice.mode, "settings": choice.settings, "probe": figures})
    return FastChoice(choice.mode, choice.settings, "measured", {**figures, "cache": str(path)})


def _read_cache(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """A cached answer for exactly this key, or None (missing, unreadable or another key: probe again)."""
    try:
        data = read_json(path)  # a cache is never trusted: a FIFO or a huge file is a miss
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("key") == key and isinstance(data.get("settings"), dict)
    return data if ok and isinstance(data.get("mode"), str) and isinstance(data.get("probe"), dict) else None


def describe_fast_mode(choice: dict[str, Any]) -> str:
    """One line for the run's log: the mode `--fast` chose, how, and the probe's seconds per step."""
    probe = choice.get("probe") or {}
    how = {"measured": "measured now", "cached": "measured earlier, cached", "rule": "by rule"}.get(
        str(choice.get("how")), str(choice.get("how"))
    )
    seconds = probe.get("s_per_step") or {}
    figures = ", ".join(f"{m} {s:.3g} s/step" for m, s in seconds.items())
    why = probe.get("reason")
    detail = f" ({figures})" if figures else f" ({why})" if why else ""
    return f"--fast runs {choice.get('mode')} ({how}){detail}"
