"""The speed checks: `--fast`'s training speed-up over eager fp32, and its share of the measured conv peak, against
the targets the manual states (docs/speed.md: "the issue-7 targets")."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from hgbench.gpu_check.checks._common import no_cuda
from hgbench.gpu_check.protocol import Outcome, StepContext

if TYPE_CHECKING:
    import torch

FAST_SPEEDUP_TARGET = 3.0
CONV_PEAK_PCT_TARGET = 40.0


def _release() -> None:
    import torch

    torch._dynamo.reset()
    gc.collect()
    torch.cuda.empty_cache()


def _fast_settings(dev: torch.device) -> Any:
    """The settings `hgbench run --fast` picks on this device (channels_last, bf16, compile on CUDA)."""
    from hgbench.train.speed_modes import ModeSettings, best_mode

    rule = best_mode(dev)
    return ModeSettings(channels_last=bool(rule["channels_last"]), amp=bool(rule["amp"]), compile=bool(rule["compile"]))


def _phase(result: dict[str, Any]) -> dict[str, Any]:
    keep = ("images_per_s", "ms_per_step_median", "tflops", "pct_conv_peak", "peak_memory_mib", "warmup_s")
    return {k: result.get(k) for k in keep}


def compile_seconds(result: dict[str, Any], warmup: int) -> float:
    """Seconds the warm-up calls of a bench result took beyond as many steady steps, over its phases: in a compiled
    mode the first compile (and cuDNN's autotuning), reported apart from the steady figures it never enters."""
    return sum(max(0.0, r["warmup_s"] - warmup * r["ms_per_step_median"] / 1e3) for r in result.values())


def fast_vs_eager(ctx: StepContext) -> Outcome:
    """Case 1 at batch 6 (256 px): training images/s of `--fast`'s settings over eager fp32, in one process."""
    if skip := no_cuda():
        return skip
    import torch

    from hgbench.models import measure_cost
    from hgbench.run.bench import bench_mode
    from hgbench.spec.cases import get_spec
    from hgbench.train.speed_modes import MIN_WARMUP, ModeSettings

    dev = torch.device("cuda", torch.cuda.current_device())
    spec = get_spec("1")
    gflops = measure_cost(spec, input_res=256).gflops
    fast = _fast_settings(dev)
    common = {"batch": 6, "steps": 10, "input_res": 256, "device": dev, "gflops_per_image": gflops}
    eager = bench_mode(spec, ModeSettings(), warmup=2, **common)
    ctx.update(eager_train=_phase(eager["train"]), eager_infer=_phase(eager["infer"]), fast_label=fast.label())
    _release()
    warmup = MIN_WARMUP["compile"] if fast.compile else 2
    quick = bench_mode(spec, fast, warmup=warmup, **common)
    ratio = quick["train"]["images_per_s"] / eager["train"]["images_per_s"]
    infer_ratio = quick["infer"]["images_per_s"] / eager["infer"]["images_per_s"]
    compiled = compile_seconds(quick, warmup)
    ctx.update(
        fast_train=_phase(quick["train"]),
        fast_infer=_phase(quick["infer"]),
        speedup=ratio,
        infer_speedup=infer_ratio,
        compile_s=compiled,
    )
    summary = (
        f"{fast.label()} {ratio:.2f}x eager ({quick['train']['images_per_s']:.0f} vs "
        f"{eager['train']['images_per_s']:.0f} images/s training; inference {infer_ratio:.2f}x); "
        f"compile {compiled:.0f} s apart"
    )
    if ratio < FAST_SPEEDUP_TARGET:
        return Outcome("fail", f"fast is {ratio:.2f}x eager, below the 3x target", summary)
    return Outcome("pass", None, summary)


def conv_peak(ctx: StepContext) -> Outcome:
    """Case 1's training step at batch 32 in `--fast`'s settings, as % of the measured bf16 3x3 conv peak."""
    if skip := no_cuda():
        return skip
    import torch

    from hgbench.models import measure_cost
    from hgbench.run.bench import bench_mode, measure_peak_conv_tflops
    from hgbench.spec.cases import get_spec
    from hgbench.train.speed_modes import MIN_WARMUP

    dev = torch.device("cuda", torch.cuda.current_device())
    peak = measure_peak_conv_tflops(dev)
    ctx.update(peak_conv_tflops=peak)
    _release()
    spec = get_spec("1")
    fast = _fast_settings(dev)
    warmup = MIN_WARMUP["compile"] if fast.compile else 2
    result = bench_mode(
        spec,
        fast,
        batch=32,
        steps=5,
        warmup=warmup,
        input_res=256,
        device=dev,
        gflops_per_image=measure_cost(spec, input_res=256).gflops,
        peak_conv=peak,
        infer=False,  # the claim is training's: no inference graph to compile at batch 32
    )
    pct = result["train"]["pct_conv_peak"]
    compiled = compile_seconds(result, warmup)
    ctx.update(settings=fast.label(), train=_phase(result["train"]), pct=pct, compile_s=compiled)
    summary = (
        f"{result['train']['tflops']:.1f} of {peak:.1f} TFLOP/s = {pct:.1f}% ({fast.label()}, training); "
        f"compile {compiled:.0f} s apart"
    )
    if pct < CONV_PEAK_PCT_TARGET:
        return Outcome("fail", f"{pct:.1f}% of the conv peak, below the 40% target", summary)
    return Outcome("pass", None, summary)
