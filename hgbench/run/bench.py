"""Model-only speed benchmark: training steps and inference batches of one case on synthetic tensors, per speed mode.

`hgbench bench` answers "how fast can this network go on this device, and which settings get it there", with no data
loading in the way (the study's timings were dominated by its input pipeline; see shared/spec/cases.md). The modes
form a ladder (`hgbench.train.speed_modes`), each adding one setting to the previous one where the device supports it:

    eager (fp32, the study's setting) -> + channels_last -> + bf16 autocast -> + torch.compile -> + CUDA graphs

A mode that does not apply on the device is reported as skipped with its reason; one that fails (a compiler error,
out of memory) is reported as failed with its reason, and the other modes still run. Times are per-iteration device
times from `hgbench.measure.timing.time_fn` (CUDA events, or `perf_counter` on the CPU) after warm-up; achieved TFLOP/s
come from the counted forward FLOPs of `hgbench.models.measure_cost` (a training step counts as 3 x forward).

References: timm `benchmark.py` (modes side by side, images/s), TorchBench `run.py` (event timing), nanoGPT
`bench.py` (burn-in before measuring).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hgbench._version import __version__
from hgbench.files.atomic_io import next_record_path, write_json_atomic
from hgbench.measure.environment import collect_commit_info, collect_environment, float32_label, machine_id
from hgbench.measure.timing import peak_memory_mib, reset_peak_memory, time_fn
from hgbench.models import ModelCost, measure_cost
from hgbench.spec.cases import CaseSpec
from hgbench.train.speed_modes import (  # noqa: F401 - MODES, best_mode, parse_modes: part of bench's interface
    MIN_WARMUP,
    MODES,
    ModePlan,
    ModeSettings,
    best_mode,
    parse_modes,
    plan_modes,
)
from hgbench.train.workload import LR, Workload, make_workload  # noqa: F401 - Workload, make_workload: bench's interface

SCHEMA = "hgbench.bench/1"


# --------------------------------------------------------------------------------------------------------------------
# The timed work
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchConfig:
    """Everything that shapes a benchmark run (stored as the record's ``config``)."""

    case: str  # registry id
    as_built: bool  # the study's code as it ran
    batch_size: int  # images per step, training and inference
    steps: int  # timed iterations per phase
    warmup: int  # untimed iterations per phase (raised to MIN_WARMUP[mode] where a mode needs more)
    input_res: int  # square input side
    device: str  # "cpu" or "cuda[:i]"
    modes: tuple[str, ...]  # requested modes, in order
    seed: int = 0  # synthetic tensors and initial weights


@contextlib.contextmanager
def _cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """cuDNN autotuning on for the duration (as the study's code and any serious run set it); restored after."""
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda" or old
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def _phase_result(
    stats: Any, *, batch: int, gflops_per_image: float, factor: int, peak_conv: float | None, peak_mem: float | None
) -> dict:
    """Stats dict plus the derived figures; throughput from the median step (robust to a stray slow step)."""
    med = stats.median
    tflops = factor * gflops_per_image * batch / med / 1e3
    return {
        **stats.to_dict(),
        "ms_per_step_median": med * 1e3,
        "images_per_s": batch / med,
        "tflops": tflops,
        "flops_per_step": factor * gflops_per_image * batch * 1e9,
        "pct_conv_peak": None if peak_conv is None else 100.0 * tflops / peak_conv,
        "peak_memory_mib": peak_mem,
    }


def bench_mode(
    spec: CaseSpec,
    settings: ModeSettings,
    *,
    batch: int,
    steps: int,
    warmup: int,
    input_res: int,
    device: str | torch.device,
    gflops_per_image: float,
    peak_conv: float | None = None,
    seed: int = 0,
    infer: bool = True,
) -> dict:
    """Time training steps, then inference batches, of one case under one mode.

    Args:
        spec: the case.
        settings: the mode's settings.
        batch: images per step.
        steps: timed iterations per phase.
        warmup: untimed iterations per phase.
        input_res: square input side.
        device: where to run.
        gflops_per_image: counted forward GFLOPs of one image at `input_res`.
        peak_conv: measured conv peak (TFLOP/s) to express throughput against, or None.
        seed: for the synthetic tensors and the initial weights.
        infer: time inference too (off: training only, and no inference graph to compile in a compiled mode).

    Returns:
        ``{"train": {...}, "infer": {...}}`` (``infer`` only when timed), each the `TimingStats` dict plus
        ms_per_step_median, images_per_s, tflops, pct_conv_peak and peak_memory_mib.
    """
    dev = torch.device(device)
    work = make_workload(spec, settings, batch=batch, input_res=input_res, device=dev, seed=seed)
    common = {"batch": batch, "gflops_per_image": gflops_per_image, "peak_conv": peak_conv}
    result = {}
    # No try/finally cleanup here: the caller releases memory once this frame (and any traceback holding it) is gone.
    with _cudnn_benchmark(dev):
        work.model.train()
        reset_peak_memory(dev)
        stats = time_fn(work.train_step, warmup=warmup, iters=steps, device=dev)
        result["train"] = _phase_result(stats, factor=3, peak_mem=peak_memory_mib(dev), **common)
        if not infer:
            return result
        work.model.eval()
        # Free the gradients and Adam's moments (twice the weights): inference memory counts neither.
        work.optimizer.zero_grad(set_to_none=True)
        work.optimizer.state.clear()
        reset_peak_memory(dev)
        stats = time_fn(work.infer_step, warmup=warmup, iters=steps, device=dev)
        result["infer"] = _phase_result(stats, factor=1, peak_mem=peak_memory_mib(dev), **common)
    return result


def _release(device: torch.device, *, compiled: bool) -> None:
    """Free one mode's memory and compiled graphs so the next mode starts clean."""
    if compiled:
        torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_peak_conv_tflops(
    device: str | torch.device,
    dtype: torch.dtype = torch.bfloat16,
    *,
    batch: int = 32,
    channels: int = 256,
    size: int = 64,
    iters: int = 20,
) -> float | None:
    """The device's achievable convolution throughput: one big 3x3 conv forward, channels_last, cuDNN autotuned.

    The reference for "% of measured conv peak" (issue 7's target: >= 40% of it at batch 32). CUDA only: on the
    CPU there is no meaningful single-kernel peak to compare against, so it returns None.

    Args:
        device: where to measure.
        dtype: the compute dtype (bf16 by default, the fast path's precision).
        batch: images; channels: input and output channels; size: square spatial side.
        iters: timed iterations after 5 warm-up ones.

    Returns:
        TFLOP/s from the median iteration (FLOPs = 2 x multiply-adds), or None on the CPU.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(dev, dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, channels, size, size, device=dev, dtype=dtype).to(memory_format=torch.channels_last)
    with torch.no_grad(), _cudnn_benchmark(dev):
        stats = time_fn(lambda: conv(x), warmup=5, iters=iters, device=dev)
    flops = 2 * batch * channels * channels * 9 * size * size
    return flops / stats.median / 1e12


def _cudagraph_skips() -> int:
    """How often inductor has declined to use CUDA graphs in this process (0 where torch does not count it)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except (ImportError, KeyError, TypeError):
        return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# Said before a mode whose warm-up compiles (compile, cudagraphs): the only slow step with nothing to count.
SLOW_WARMUP_NOTE = (
    "torch.compile compiles the model in its first warm-up steps, for training and again for inference{graphs}; "
    "this can take minutes"
)

# Wraps a mode whose warm-up is slow; given what is going on, shows that it still is (`hgbench.run.progress.slow_work`).
Heartbeat = Callable[[str], contextlib.AbstractContextManager[None]]


def _run_mode(
    spec: CaseSpec,
    plan: ModePlan,
    config: BenchConfig,
    dev: torch.device,
    cost: ModelCost,
    peak_conv: float | None,
    progress: Callable[[str], None] | None,
    float32: str = "fp32",
    heartbeat: Heartbeat | None = None,
) -> dict[str, Any]:
    """One mode's entry of the record: skipped (with the plan's reason), ok (with its phases) or failed (why)."""
    entry: dict[str, Any] = {
        "status": "skipped",
        "reason": plan.skip_reason,
        "settings": None,
        "label": None,
        "warmup": None,
        "train": None,
        "infer": None,
    }
    if plan.settings is None:
        return entry
    warmup = max(config.warmup, MIN_WARMUP[plan.mode])
    label = plan.settings.label(float32)
    entry.update(settings=asdict(plan.settings), label=label, warmup=warmup)
    slow = plan.settings.compile
    if progress:
        progress(f"{plan.mode} ({label}): {warmup} warm-up + {config.steps} timed steps")
        if slow:
            graphs = " (then captures CUDA graphs)" if plan.settings.cudagraphs else ""
            progress(f"{plan.mode}: {SLOW_WARMUP_NOTE.format(graphs=graphs)}")
    watch = heartbeat(f"{plan.mode} ({label})") if slow and heartbeat else contextlib.nullcontext()
    try:
        skips = _cudagraph_skips()
        with watch:
            phases = bench_mode(
                spec,
                plan.settings,
                batch=config.batch_size,
                steps=config.steps,
                warmup=warmup,
                input_res=config.input_res,
                device=dev,
                gflops_per_image=cost.gflops,
                peak_conv=peak_conv,
                seed=config.seed,
            )
        entry.update(status="ok", reason=None, **phases)
        if plan.settings.cudagraphs:
            # Inductor silently falls back to plain compiled code when a graph cannot be captured: say so.
            entry["cudagraph_skips"] = _cudagraph_skips() - skips
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - a mode failing (compiler error, OOM) is a result, not a crash
        entry.update(status="failed", reason=_one_line(exc))
    _release(dev, compiled=plan.settings.compile)  # after the except: no traceback keeps the model alive
    return entry


def run_bench(
    spec: CaseSpec,
    config: BenchConfig,
    *,
    progress: Callable[[str], None] | None = None,
    heartbeat: Heartbeat | None = None,
) -> dict:
    """Benchmark every requested mode of one case and return the full record (not yet written).

    Args:
        spec: the case (its `as_built` form already chosen).
        config: sizes, device and modes.
        progress: called with a short line before each mode, and before a compiled mode's slow warm-up with what it
            does and that it can take minutes (the CLI prints them to stderr).
        heartbeat: wraps each compiled mode to show that it is still going (the CLI: a spinner on a terminal, else
            a line every 30 s; `hgbench.run.progress.slow_work`).

    Returns:
        The ``hgbench.bench/1`` record: schema, hgbench_version, datetime, machine_info, commit_info, spec, config,
        model, device_peak, results ({mode: {status, reason, settings, label, warmup, train, infer}}).
    """
    dev = torch.device(config.device)
    started = dt.datetime.now(dt.UTC)
    machine = collect_environment(dev)
    math = machine["float32_math"]  # TF32 or not: what the fp32 modes' convolutions compute in
    cost = measure_cost(spec, input_res=config.input_res)
    peak_error = None
    try:
        peak_conv = measure_peak_conv_tflops(dev)
    except RuntimeError as exc:  # e.g. out of memory on a small GPU: the case figures still stand without it
        peak_conv, peak_error = None, _one_line(exc)
    _release(dev, compiled=False)
    results = {
        plan.mode: _run_mode(spec, plan, config, dev, cost, peak_conv, progress, float32_label(math), heartbeat)
        for plan in plan_modes(config.modes, dev)
    }
    return {
        "schema": SCHEMA,
        "hgbench_version": __version__,
        "datetime": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "started": started.isoformat(timespec="seconds"),
        "machine_info": machine,
        "commit_info": collect_commit_info(),
        "spec": spec.to_dict(),
        "config": {
            **asdict(config),
            "modes": list(config.modes),
            "cudnn_benchmark": dev.type == "cuda",
            # fp32 convolutions on Ampere+ use TF32 unless this is False (machine_info.float32_math has the rest).
            "cudnn_allow_tf32": math["cudnn_allow_tf32"],
            "matmul_precision": math["matmul_precision"],
            "optimizer": "adam",
            "lr": LR,
            "loss": "hgbench.train.loss.heatmap_loss (masked MSE, every stack)",
        },
        "model": {
            "params": cost.params,
            "params_used": cost.params_used,
            "gflops": cost.gflops,
            "gflops_input_res": cost.input_res,
        },
        "device_peak": {
            "conv_tflops": peak_conv,
            "dtype": "bfloat16",
            "shape": "conv3x3 256->256, 32x256x64x64, channels_last, forward",
            "error": peak_error,
        },
        "results": results,
    }


# --------------------------------------------------------------------------------------------------------------------
# Writing records
# --------------------------------------------------------------------------------------------------------------------


def record_stem(spec: CaseSpec) -> str:
    """File stem of a bench record, e.g. ``bench_case3`` or ``bench_case3-asbuilt`` or ``bench_hg1``."""
    name = f"case{spec.name}" if spec.name.isdigit() else spec.name
    return f"bench_{name}{'-asbuilt' if spec.as_built else ''}"


def write_record(record: dict, out_dir: str | os.PathLike) -> Path:
    """Write a bench record as ``out_dir/<machine_id>/NNNN_bench_case<C>.json`` (numbered, never overwritten)."""
    stem = record_stem(CaseSpec.from_dict(record["spec"]))
    path = next_record_path(out_dir, machine_id(record["machine_info"]), stem)  # claims the number (O_EXCL)
    write_json_atomic(path, record)
    return path
