"""The end of a finished run, on rank 0 alone as on the study's single GPU: the timed inference pass over the whole
validation split (plain and with flip test), its PCKh and load window, what torch.compile compiled, and the finished
record. `hgbench.runner` calls `finish_run` once the last epoch's checkpoint is written.
"""

from __future__ import annotations

from torch import nn

from hgbench.compile_watch import CompileWatch, describe_fallback
from hgbench.config import RunConfig
from hgbench.contention import LoadMeter, window_entry
from hgbench.data.loader import make_loader
from hgbench.host_memory import peak_host_memory_mib
from hgbench.inference import timed_passes
from hgbench.metrics import evaluate_pckh
from hgbench.nvml import NvmlSampler
from hgbench.plan import RunPlan
from hgbench.record import inference_entry
from hgbench.recorder import Recorder
from hgbench.state import TrainingState
from hgbench.timing import peak_memory_mib
from hgbench.training import StepOptions


def finish_run(
    plan: RunPlan,
    state: TrainingState,
    val_loader,
    recorder: Recorder,
    meters: tuple[NvmlSampler, LoadMeter],
    watch: CompileWatch | None,
    *,
    say: bool,
    keep_checkpoint: bool,
) -> None:
    """Rank 0 alone, as on the study's single GPU: the timed inference pass, then the finished record."""
    loader = val_loader  # warm: validation ran it last epoch
    if plan.ctx.enabled:  # the whole split, not rank 0's shard
        loader = make_loader(
            plan.val_ds,
            plan.config.test_batch_size,
            shuffle=False,
            workers=plan.config.workers,
            pin_memory=plan.device.type == "cuda",
            drop_last=False,
            device=plan.device,
        )
    sampler, meter = meters
    for m in meters:
        m.mark("inference-start")
    results = inference_pass(
        state.inference_model(plan), loader, plan.val_ds, plan.ground_truth, plan.config, state.opts, say
    )
    for m in meters:
        m.mark("inference-end")
    marks = "inference-start", "inference-end"
    results["inference"]["load"] = window_entry(meter.window(*marks), sampler.window(*marks))
    compiled = watch.report() if watch is not None else None
    fallback = describe_fallback(compiled) if compiled is not None else None
    if say and fallback:
        print(f"hgbench: warning: {fallback}", flush=True)
    recorder.set_results(
        **results,
        peak_memory_mib=peak_memory_mib(plan.device),
        peak_host_memory_mib=peak_host_memory_mib(),
        telemetry=sampler.summary(),
        compile=compiled,
    )
    recorder.finish("finished", None, keep_checkpoint=keep_checkpoint)


def inference_pass(model: nn.Module, loader, val_ds, gt, config: RunConfig, opts: StepOptions, say: bool) -> dict:
    """One timed pass over the whole validation split at the test batch size, plain and with flip test.

    `model` is the network as trained (compiled with --compile) and `loader` one whose workers the passes share, so
    both passes start warm (`hgbench.inference.timed_passes`).
    """
    collect = val_ds.collect_bad if config.skip_bad_images else None
    passes = timed_passes(
        model,
        loader,
        opts,
        input_res=config.input_res,
        flip_test=config.flip_test,
        tail=len(val_ds) % config.test_batch_size,
        batch_size=config.test_batch_size,
        on_batch=collect,
    )
    scores = {k: evaluate_pckh(p.predictions, gt.subset(val_ds.indices_of(p.index))) for k, p in passes.items()}
    final = "flip" if config.flip_test else "plain"
    inference = {
        "n_images": len(val_ds),
        "n_excluded": len(passes[final].excluded),
        "batch_size": config.test_batch_size,
    }
    for k, p in passes.items():
        inference[k] = inference_entry(p.timing, scores[k].mean)
    if "flip" not in passes:
        inference["flip"] = None
    pckh = {**scores[final].to_dict(), "flip_test": final == "flip"}
    if say:
        print(
            f"hgbench: PCKh@0.5 Mean {pckh['Mean']:.2f} ({'flip test' if final == 'flip' else 'no flip'}); "
            f"inference {inference['plain']['wall_min']:.3f} min wall",
            flush=True,
        )
    return {"pckh": pckh, "inference": inference}
