"""The end of a finished run, on rank 0 alone as on the study's single GPU: the timed inference pass over the whole
validation split (plain and with flip test), its PCKh and load window, what torch.compile compiled, and the finished
record. `hgbench.run.runner` calls `finish_run` on every rank once the last epoch's checkpoint is written: the other
ranks wait out rank 0's pass in the same measured window, their CPU time counted as the run's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from hgbench.data.loader import make_loader
from hgbench.eval.metrics import evaluate_pckh
from hgbench.measure.compile_watch import CompileWatch, describe_fallback
from hgbench.measure.contention import LoadMeter, combine_loads, window_entry
from hgbench.measure.host_memory import peak_host_memory_mib
from hgbench.measure.nvml import NvmlSampler
from hgbench.measure.timing import peak_memory_mib
from hgbench.run.plan import RunPlan
from hgbench.run.record import inference_entry
from hgbench.run.recorder import Recorder
from hgbench.run.state import TrainingState
from hgbench.spec.config import RunConfig
from hgbench.train.distributed import DistContext, all_gather_objects, barrier
from hgbench.train.inference import timed_passes
from hgbench.train.training import StepOptions

T = TypeVar("T")


INFERENCE_MARKS = ("inference-start", "inference-end")


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
    """Every rank calls it: rank 0 alone runs the timed inference pass, as on the study's single GPU, and writes the
    finished record; the other ranks wait for it, and their CPU time while they wait counts as the run's own."""
    if not plan.ctx.is_main:
        while_rank0_works(plan.ctx, meters, None)
        return
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
    model = state.inference_model(plan)
    results, load = while_rank0_works(
        plan.ctx,
        meters,
        lambda: inference_pass(model, loader, plan.val_ds, plan.ground_truth, plan.config, state.opts, say),
    )
    results["inference"]["load"] = load
    compiled = watch.report() if watch is not None else None
    fallback = describe_fallback(compiled) if compiled is not None else None
    if say and fallback:
        print(f"hgbench: warning: {fallback}", flush=True)
    sampler = meters[0]
    recorder.set_results(
        **results,
        peak_memory_mib=peak_memory_mib(plan.device),
        peak_host_memory_mib=peak_host_memory_mib(),
        telemetry=sampler.summary(),
        compile=compiled,
    )
    recorder.finish("finished", None, keep_checkpoint=keep_checkpoint)


def while_rank0_works(
    ctx: DistContext, meters: tuple[NvmlSampler, LoadMeter], work: Callable[[], T] | None
) -> tuple[T, dict] | None:
    """`work` on rank 0 while every other rank waits (pass None there), in one measured window.

    The other ranks wait at a barrier, which on NCCL is a busy loop on their cores: their CPU time in the window is
    this run's own, not a competitor's, so it moves from "other" to "own" as for an epoch (`combine_loads`), and a
    DDP run's final pass is not called contended by its own processes.

    Returns:
        On rank 0, what `work` returned and the window's ``load`` entry (rank 0's GPU telemetry); elsewhere None.
    """
    barrier(ctx)  # the window opens on every rank at once
    for m in meters:
        m.mark(INFERENCE_MARKS[0])
    result = work() if work is not None else None
    if ctx.is_main:
        for m in meters:
            m.mark(INFERENCE_MARKS[1])
    barrier(ctx)  # where the other ranks wait while rank 0 works
    if not ctx.is_main:
        for m in meters:
            m.mark(INFERENCE_MARKS[1])
    sampler, meter = meters
    loads = all_gather_objects(ctx, meter.window(*INFERENCE_MARKS))
    if not ctx.is_main:
        return None
    return result, window_entry(combine_loads(loads), sampler.window(*INFERENCE_MARKS))


def inference_pass(model: nn.Module, loader, val_ds, gt, config: RunConfig, opts: StepOptions, say: bool) -> dict:
    """One timed pass over the whole validation split at the test batch size, plain and with flip test.

    `model` is the network as trained (compiled with --compile) and `loader` one whose workers the passes share, so
    both passes start warm (`hgbench.train.inference.timed_passes`).
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
