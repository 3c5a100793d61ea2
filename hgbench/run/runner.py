"""`hgbench run`: train a case, validate every epoch, time the inference pass, and record everything.

The run is a short pipeline: a `RunPlan` resolves device, settings, data and identity once (hgbench.run.plan); the
training state (model, optimiser, schedule) is built or restored from a checkpoint (hgbench.run.run_setup); a `Recorder`
owns the record and writes it with the checkpoint atomically after every epoch (hgbench.run.recorder); the epoch loop
trains and validates; the timed inference pass and the finished record end the run (hgbench.run.final_pass).

`resume=True` continues from the last complete epoch and, on the same machine, ends with the same numbers as an
uninterrupted run: the data order and augmentation are functions of (seed, epoch, index), and the checkpoint carries
model, optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from hgbench.errors import HGBenchError, PeerLost, RunFailed
from hgbench.eval.metrics import evaluate_pckh
from hgbench.measure.contention import LoadMeter, combine_loads, window_entry
from hgbench.measure.nvml import NvmlSampler, combine_windows
from hgbench.measure.timing import reset_peak_memory
from hgbench.run.failures import sigterm_as_interrupt, unexpected_failure
from hgbench.run.final_pass import finish_run
from hgbench.run.plan import RunPlan, make_plan, resolve_device
from hgbench.run.progress import ProgressBar, say_once
from hgbench.run.recorder import Recorder
from hgbench.run.run_setup import claim_for, make_loaders, prepare_run
from hgbench.run.state import TrainingState
from hgbench.spec.cases import CaseSpec
from hgbench.spec.config import RunConfig
from hgbench.spec.variants import spec_of_config
from hgbench.tracking import TrackingOptions
from hgbench.train.distributed import (
    DistContext,
    all_gather_objects,
    barrier,
    init_distributed,
    peer_lost,
    shutdown,
    sum_over_ranks,
    wait_for_rank_0,
)
from hgbench.train.inference import PassResult, predict
from hgbench.train.training import EpochStats, train_one_epoch


@dataclass
class RunOutcome:
    """What `run` leaves behind."""

    status: str  # finished | interrupted | failed | skipped
    record_path: Path | None
    checkpoint_path: Path | None
    record: dict | None


def _skipped(ctx: DistContext, train_ds, val_ds) -> list[str]:
    """Every image any rank found corrupt so far (with --skip-bad-images), for the record."""
    mine = set(train_ds.bad_images) | set(val_ds.bad_images)
    return sorted(set().union(*all_gather_objects(ctx, sorted(mine))))


def _train(
    plan: RunPlan,
    state: TrainingState,
    train_loader,
    bar: ProgressBar,
    epoch: int,
    sampler: NvmlSampler,
    meter: LoadMeter,
) -> EpochStats:
    """Train one epoch between the telemetry marks that bound its window (this rank's stats)."""
    config = plan.config
    train_loader.set_epoch(epoch)
    bar.start_epoch(epoch, config.epochs, len(train_loader), config.batch_size)
    sampler.mark(f"epoch{epoch}-start")
    meter.mark(f"epoch{epoch}-start")
    stats = train_one_epoch(
        state.train_model,
        train_loader,
        state.optimizer,
        state.opts,
        epoch=epoch,
        on_progress=bar.step,
        on_batch=plan.train_ds.collect_bad if config.skip_bad_images else None,
        stop_on_nan=not plan.ctx.enabled,
    )
    sampler.mark(f"epoch{epoch}-end")
    meter.mark(f"epoch{epoch}-end")
    return stats


def _validate(plan: RunPlan, state: TrainingState, val_loader, bar: ProgressBar) -> PassResult:
    """The validation pass over this rank's shard, its predictions gathered from every rank."""
    bar.start_validation(len(val_loader))
    return predict(
        state.model,
        val_loader,
        state.opts,
        input_res=plan.config.input_res,
        ctx=plan.ctx,
        on_batch=plan.val_ds.collect_bad if plan.config.skip_bad_images else None,
        on_progress=bar.validation_step,
    )


def _telemetry(ctx: DistContext, sampler: NvmlSampler, meter: LoadMeter, epoch: int) -> tuple[dict, dict]:
    """The epoch's GPU telemetry and machine load, over every rank."""
    # Every rank samples its own GPU; the epoch's energy is the whole run's, not rank 0's share.
    window = f"epoch{epoch}-start", f"epoch{epoch}-end"
    gathered = all_gather_objects(ctx, (sampler.window(*window), meter.window(*window)))
    tel = combine_windows([g[0] for g in gathered])
    return tel, window_entry(combine_loads([g[1] for g in gathered]), tel)


def _epoch(
    plan: RunPlan,
    state: TrainingState,
    loaders: tuple,
    sampler: NvmlSampler,
    bar: ProgressBar,
    epoch: int,
    *,
    first: bool,
    meter: LoadMeter,
) -> tuple[dict, PassResult]:
    """Train and validate one epoch; the record's entry for it (and the validation pass, for its accuracy)."""
    ctx = plan.ctx
    train_loader, val_loader = loaders
    stats = _train(plan, state, train_loader, bar, epoch, sampler, meter)
    # Every rank's mean loss is over its share of the global batch; the epoch's loss is their mean. Every rank gets
    # the same sum, so under DDP a NaN on any rank stops all of them here, together.
    images, loss_sum = sum_over_ranks(ctx, stats.images, stats.train_loss)
    if not math.isfinite(loss_sum):
        raise RunFailed(
            f"loss became {loss_sum / ctx.world_size} in epoch {epoch} (on {ctx.world_size} processes); stopping"
        )
    val = _validate(plan, state, val_loader, bar)
    state.scheduler.step()
    pckh = parts = None
    if ctx.is_main:
        gt = plan.ground_truth.subset(plan.val_ds.indices_of(val.index))
        scores = evaluate_pckh(val.predictions, gt, interval=False)
        pckh, parts = scores.mean, dict(scores.parts)
    if pckh is not None and (state.best_pckh is None or pckh > state.best_pckh):
        state.best_pckh = pckh
    tel, load = _telemetry(ctx, sampler, meter, epoch)
    entry = {
        "epoch": epoch,
        "lr": state.optimizer.param_groups[0]["lr"],
        "train_loss": loss_sum / ctx.world_size,
        "val_loss": val.loss,
        "heatmap_acc": val.heatmap_acc,
        "pckh": pckh,
        "pckh_parts": parts,  # Head ... Ankle, no flip test, as `pckh`
        "wall_s": stats.wall_s,
        "compute_s": stats.compute_s,
        "data_wait_s": stats.data_wait_s,
        "device_idle_s": stats.device_idle_s,
        "decode_host_s": stats.decode_host_s,
        "steps": stats.steps,
        "images": int(images),
        "images_per_s": images / stats.wall_s if stats.wall_s > 0 else None,
        "val_wall_s": val.timing["wall_s"],
        "warmup": first,
        "energy_j": tel.get("energy_j"),
        "gpu_util_mean": tel.get("gpu_util_mean"),
        "gpu_mem_used_max_mib": tel.get("gpu_mem_used_max_mib"),
        "power_mean_w": tel.get("power_mean_w"),
        "load": load,  # how busy the machine was
    }
    return entry, val


def run(
    config: RunConfig,
    *,
    resume: bool = False,
    must_resume: bool = False,
    quiet: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    keep_checkpoint: bool = True,
    tracking: TrackingOptions | None = None,
    after_epoch: Callable[[int], None] | None = None,
    dist_timeout: timedelta | None = None,
) -> RunOutcome:
    """Train and evaluate one case as `config` says; returns where the record and checkpoint went.

    Args:
        config: every hyperparameter (see RunConfig).
        resume: continue from the last complete epoch of the same experiment, if its checkpoint exists.
        must_resume: the run must be continued, not started (`hgbench run --resume`): without its checkpoint it is an
            error, before any record is written.
        quiet: one log line per epoch instead of a progress bar.
        progress: print anything at all.
        stop_after_epoch: end the process's work right after this epoch's checkpoint, as a kill would (tests).
        keep_checkpoint: keep the last checkpoint once the run finished (False: delete it, e.g. smoke runs, whose
            checkpoints only serve a resume).
        tracking: where the figures go beside the record (None: TensorBoard under the checkpoint folder).
        after_epoch: called with the epoch's number once its checkpoint and record are written, the claim still held
            (the sweep worker's test seam holds a run there until a scheduler signals it).
        dist_timeout: under torchrun, how long a collective waits for the other processes (default
            `hgbench.train.distributed.GROUP_TIMEOUT`): a process silent that long is taken for lost.

    Raises:
        HGBenchError: bad configuration or data (before training starts where it can be checked).
        RunFailed: NaN / infinite loss; the record is written with status "failed".
        PeerLost: under torchrun, another process stopped or did not answer; the record says "interrupted".
        KeyboardInterrupt: Ctrl-C or SIGTERM; the record is written with status "interrupted".
    """
    spec = spec_of_config(config)  # a registry case, or the variant spec the config carries
    ctx = init_distributed(resolve_device(config.device).type, timeout=dist_timeout)
    try:
        return _run(
            config,
            spec,
            ctx,
            resume=resume or must_resume,
            must_resume=must_resume,
            quiet=quiet,
            progress=progress,
            stop_after_epoch=stop_after_epoch,
            keep_checkpoint=keep_checkpoint,
            tracking=tracking,
            after_epoch=after_epoch,
        )
    except RuntimeError as exc:  # a collective before the epochs began (the claim, the record) or after them
        lost = peer_lost(ctx, exc)
        if lost is None:
            raise
        raise PeerLost(f"{lost}; the run is interrupted") from None
    finally:
        shutdown(ctx)


def _run(config: RunConfig, spec: CaseSpec, ctx: DistContext, **options: Any) -> RunOutcome:
    """`_claimed_run`, the run's claim released however the run ends."""
    with ExitStack() as held:
        return _claimed_run(config, spec, ctx, held, **options)


def _say_finished(label: str, record_path: Path | None, kept: Path | None) -> None:
    """The finished run's last line: its record, and its checkpoint's size or that it was not kept."""
    where = (
        f"checkpoint {kept} ({kept.stat().st_size / 2**20:.0f} MiB)"
        if kept is not None
        else "checkpoint not kept (--keep-checkpoints keeps it)"
    )
    print(f"hgbench: {label} finished; record {record_path}; {where}", flush=True)


def _claimed_run(
    config: RunConfig,
    spec: CaseSpec,
    ctx: DistContext,
    held: ExitStack,
    *,
    resume: bool,
    quiet: bool,
    progress: bool,
    stop_after_epoch: int | None,
    keep_checkpoint: bool = True,
    must_resume: bool = False,
    tracking: TrackingOptions | None = None,
    after_epoch: Callable[[int], None] | None = None,
) -> RunOutcome:
    """The run, its claim held by `held`: the set-up, the epoch loop, and the record marked failed or interrupted
    however the loop ends early."""
    plan = make_plan(config, spec, ctx)
    config, device, say = plan.config, plan.device, progress and ctx.is_main
    if (claim := claim_for(plan)) is not None:  # before the checkpoint is read or a record written
        held.enter_context(claim)
    state, recorder, watch = prepare_run(plan, resume=resume, must_resume=must_resume, say=say)
    trackers = recorder.track(tracking, say=say)  # rank 0's; closed with the run's final status however it ends
    held.callback(lambda: trackers.close(str(recorder.record.get("status"))))
    loaders = make_loaders(plan)
    bar = ProgressBar(enabled=say, quiet=quiet, label=spec.label)
    # The first epoch of every process pays cuDNN autotuning, compilation and worker start-up: after --resume too.
    epoch = first = state.start_epoch + 1
    meter = LoadMeter()
    with NvmlSampler(device) as sampler, sigterm_as_interrupt():
        if say and not sampler.available:  # once a process: `--case all` would say it for every case
            say_once(f"hgbench: GPU telemetry unavailable ({sampler.reason}); energy and utilisation recorded as null")
        reset_peak_memory(device)
        try:
            for epoch in range(first, config.epochs + 1):
                entry, val = _epoch(plan, state, loaders, sampler, bar, epoch, first=epoch == first, meter=meter)
                recorder.add_epoch(
                    entry, heatmap_acc=val.heatmap_acc, skipped_images=_skipped(ctx, plan.train_ds, plan.val_ds)
                )
                bar.end_epoch(entry)
                recorder.checkpoint(epoch, state.checkpoint_state())
                trackers.log_epoch(entry, val.predictions, val.index)  # what the record now holds
                barrier(ctx)
                if after_epoch is not None:
                    after_epoch(epoch)
                if stop_after_epoch is not None and stop_after_epoch <= epoch < config.epochs:
                    return RunOutcome(
                        "interrupted", recorder.path, plan.last_path, recorder.record if ctx.is_main else None
                    )
            finish_run(  # rank 0's inference pass and finished record; the other ranks wait in its window
                plan, state, loaders[1], recorder, (sampler, meter), watch, say=say, keep_checkpoint=keep_checkpoint
            )
            if ctx.is_main:
                trackers.log_final(recorder.record)
                recorder.rewrite()  # with what the trackers could not take
        except RunFailed as exc:
            bar.abort()
            recorder.finish("failed", str(exc))
            raise
        except KeyboardInterrupt:
            bar.abort()
            recorder.interrupted(epoch)
            raise
        except HGBenchError:
            raise  # already one line; a checkpoint that could not be written leaves the run resumable, as it says
        except Exception as exc:  # noqa: BLE001 - a worker re-raises its own type (cv2.error), so OOM is any type
            bar.abort()
            _stopped_by(exc, plan, recorder, epoch)
        finally:
            bar.abort()  # however the run ends, no bar or heartbeat outlives it (--case all goes on to the next)
    wait_for_rank_0(ctx)  # outside the loop's handlers: nothing here may rewrite the finished record
    kept = plan.last_path if keep_checkpoint else None
    if say:
        _say_finished(spec.label, recorder.path, kept)
    return RunOutcome("finished", recorder.path, kept, recorder.record if ctx.is_main else None)


def _stopped_by(exc: Exception, plan: RunPlan, recorder: Recorder, epoch: int) -> NoReturn:
    """An error hgbench did not raise itself, in `epoch`: a lost process of the job interrupts the run (it did not
    fail), anything else fails it; the record says which, and the one-line error is raised."""
    if (lost := peer_lost(plan.ctx, exc)) is not None:
        recorder.interrupted(epoch, cause=lost)
        raise PeerLost(f"{lost} during epoch {epoch}; the run is interrupted") from None
    failure, cause = unexpected_failure(exc, epoch=epoch, device=plan.device, config=plan.config)
    recorder.finish("failed", str(failure))
    raise failure from cause
