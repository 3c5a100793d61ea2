"""The sweep's driver: which runs to launch, launching them on an engine, and following them to the end.

A run already finished with the same identity is skipped (`hgbench.run.plan.planned_identity`, the definition resume
uses too); every other run is submitted, and the worker resumes it from its checkpoint when an earlier call left one.
A worker that dies (killed, out of host memory, its node lost, preempted) is submitted again up to `retries` times,
resuming from its last checkpoint; a run that fails on its own terms (NaN loss, bad data) is reported failed and not
retried. Ctrl-C (or SIGTERM) cancels what has not ended and waits for the workers to mark their records interrupted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from hgbench.errors import HGBenchError
from hgbench.spec.cases import case_label
from hgbench.spec.config import RunConfig
from hgbench.sweep.engines import Engine, Job
from hgbench.sweep.watch import RecordWatch

ACTIVE = ("queued", "running")  # the states of a run still in the engine's hands
CANCEL_GRACE_S = 60.0  # how long Ctrl-C waits for the cancelled workers to write their interrupted records
CLOCK_SLACK_S = 5.0  # a shared filesystem stamps files with its own clock, a little off the driver's


@dataclass(eq=False)
class SweepRun:
    """One run of the sweep and what the driver knows of it."""

    config: RunConfig
    identity: str | None  # None when it cannot be planned here (the run's device is not on this machine)
    keep_checkpoint: bool
    status: str = "queued"  # queued | running | finished | skipped | busy (another process has it) | failed | cancelled
    attempts: int = 0  # submissions so far
    epochs_done: int = 0
    pckh: float | None = None  # the last epoch's PCKh
    record: str | None = None  # the record's path once known
    reason: str | None = None  # why it failed, was skipped or cancelled
    handle: Any = None  # the engine's handle of the current attempt
    submitted_at: float = 0.0
    force: bool = False  # measure again even if finished (--force): the worker starts a new record
    tracking: dict | None = None  # where the worker sends the figures (hgbench.tracking.TrackingOptions.to_dict)

    @property
    def label(self) -> str:
        tag = f" [{self.config.tag}]" if self.config.tag else ""
        return f"{case_label(self.config.case, self.config.as_built)} seed {self.config.seed}{tag}"

    @property
    def name(self) -> str:
        """A file-name-safe, unique label (logs, engine job names)."""
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{self.label}").strip("-").lower()
        return f"{slug}-{self.identity}" if self.identity else slug


class View(Protocol):
    def changed(self, run: SweepRun, note: str | None = None) -> None:
        """`run`'s state changed (`note`: what happened, when there is more to say than its state)."""


@dataclass(frozen=True)
class Workers:
    """Where a sweep's runs execute, as far as the driver knows before it submits them."""

    device: str | None  # "cuda" or "cpu": what `--device auto` resolves to on them; None: not known here
    here: bool = False  # they are this machine (the local engine): planning may resolve and measure here

    @classmethod
    def local(cls) -> Workers:
        return cls(None, here=True)


def plan_runs(
    configs: Sequence[tuple[RunConfig, bool]], *, machine_id: str | None, workers: Workers | None = None
) -> list[SweepRun]:
    """The sweep's runs, those already finished marked skipped.

    Args:
        configs: one (config, keep its checkpoint once finished) per run.
        machine_id: count only this machine's finished records (the local engine, as `hgbench run --case all`);
            None: any machine's (a cluster's workers are machines the driver cannot name in advance).
        workers: where the runs execute (`driver_identity`); default: this machine.

    Raises:
        HGBenchError: two runs are the same run (same identity), or a run cannot be planned (bad data directory, ...).
    """
    from hgbench.run.results import find_finished

    runs, seen = [], {}
    for cfg, keep_checkpoint in configs:
        run = SweepRun(cfg, driver_identity(cfg, workers or Workers.local()), keep_checkpoint)
        if run.identity is not None:
            if run.identity in seen:
                raise HGBenchError(f"the sweep lists one run twice: {seen[run.identity]} and {run.label}")
            seen[run.identity] = run.label
            done = find_finished(cfg.out, run.identity, machine_id=machine_id)
            if done is not None:
                run.status, run.record, run.reason = "skipped", str(done), "already finished with this config"
        runs.append(run)
    return runs


def driver_identity(cfg: RunConfig, workers: Workers) -> str | None:
    """The run's identity as its worker will compute it, planned on the driver, which may lack the workers' GPUs.

    Planned for the workers' device, never by resolving or measuring the driver's where the workers are elsewhere: a
    login node without a GPU would resolve ``--device auto --fast`` to its CPU, time the CPU probe for every run and
    plan an identity no GPU worker's record has. Without --fast the identity does not depend on the device. With it,
    CUDA workers take the fast path's fixed rule (`hgbench.train.speed_modes.best_mode`: no probe, nothing of the
    driver's measured); CPU workers on this machine the probe's answer here (theirs too: the same machine and cache);
    CPU workers elsewhere, or workers of unknown device, whatever they measure or resolve, so the identity is left to
    the worker (its own skip check): None.
    """
    import torch

    from hgbench.run.plan import planned_identity, resolve_device
    from hgbench.spec.variants import spec_of_config

    spec_of_config(cfg)  # a CaseError line, e.g. for an as-built form of a case that has none
    explicit = cfg.device != "auto"
    device = _device_type(cfg.device) if explicit else workers.device
    if not cfg.fast:
        return planned_identity(replace(cfg, device="cpu"))  # the same identity on every device
    if device is None and workers.here:
        device = resolve_device("auto").type
    if device == "cuda":
        return planned_identity(cfg, device=torch.device(cfg.device if explicit else "cuda"))
    if device == "cpu" and workers.here:
        return planned_identity(replace(cfg, device="cpu"))
    return None


def _device_type(name: str) -> str:
    """``cpu`` or ``cuda`` for a --device value other than auto (a one-line error for anything else)."""
    import torch

    try:
        kind = torch.device(name).type
    except RuntimeError:
        kind = None
    if kind not in ("cpu", "cuda"):
        raise HGBenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return kind


def log_path(run: SweepRun) -> Path:
    """Where the worker writes the run's own output: beside the checkpoints, so on the shared filesystem too."""
    return Path(run.config.checkpoint_dir) / "sweep-logs" / f"{run.name}.log"


def drive(runs: Sequence[SweepRun], engine: Engine, *, retries: int, view: View, poll_s: float = 1.0) -> bool:
    """Submit the runs not skipped and follow every one to its end; True when Ctrl-C cut the sweep short."""
    watch = RecordWatch()
    todo = [run for run in runs if run.status in ACTIVE]
    _submit(engine, todo)
    try:
        while any(run.status in ACTIVE for run in runs):
            _follow(runs, engine, watch, retries=retries, view=view)
            if any(run.status in ACTIVE for run in runs):
                time.sleep(poll_s)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`hgbench sweep` raises it for the signal)
        _cancel(runs, engine, view, cause=str(exc) or "Ctrl-C")
        return True
    finally:
        _progress(runs, watch, view)  # the record paths of failed runs, the last epoch of each
    return False


def _submit(engine: Engine, runs: Sequence[SweepRun]) -> None:
    if not runs:
        return
    jobs = [
        Job(
            run.name,
            {
                **run.config.to_dict(),
                **({"force": True} if run.force else {}),
                **({"tracking": run.tracking} if run.tracking else {}),
            },
            run.keep_checkpoint,
            str(log_path(run)),
        )
        for run in runs
    ]
    now = time.time()
    for run, handle in zip(runs, engine.submit(jobs), strict=True):
        run.handle, run.attempts, run.submitted_at, run.status = handle, run.attempts + 1, now, "queued"


def _follow(runs: Sequence[SweepRun], engine: Engine, watch: RecordWatch, *, retries: int, view: View) -> None:
    """One look at every active run: its progress from its record, then whether its job ended and how."""
    _progress(runs, watch, view)
    for run in runs:
        if run.status not in ACTIVE:
            continue
        ended = engine.poll(run.handle)
        if ended is None:
            continue
        result = ended.result
        if result is None or result["status"] == "interrupted":
            what = f"worker died ({ended.reason})" if result is None else f"worker stopped ({result['reason']})"
            if run.attempts <= retries:
                _submit(engine, [run])
                view.changed(run, f"{what}; retry {run.attempts - 1} of {retries}, from its checkpoint")
                continue
            run.status, run.reason = "failed", f"{what}; no retries left (--retries {retries})"
        else:
            _ended(run, result)
        view.changed(run)


def _ended(run: SweepRun, result: dict[str, Any]) -> None:
    """A worker's summary of a run that ended on its own terms: finished, skipped, busy or failed."""
    run.status, run.reason = result["status"], result["reason"]
    run.record = result["record"] or run.record


def _progress(runs: Sequence[SweepRun], watch: RecordWatch, view: View) -> None:
    """Epochs done and last PCKh of the runs whose records changed; a run with a record is running."""
    known = [run for run in runs if run.identity is not None and run.submitted_at]
    if not known:
        return
    newest = watch.scan({run.config.out for run in known})
    for run in known:
        seen = newest.get(run.identity)
        if seen is None or seen.mtime < run.submitted_at - CLOCK_SLACK_S:  # an earlier call's record, not this one's
            continue
        before = (run.status, run.epochs_done, run.record)
        run.record, run.epochs_done, run.pckh = str(seen.path), seen.epochs_done, seen.pckh
        if run.status == "queued":
            run.status = "running"
        if (run.status, run.epochs_done, run.record) != before:
            view.changed(run)


def _cancel(runs: Sequence[SweepRun], engine: Engine, view: View, *, cause: str = "Ctrl-C") -> None:
    """Ctrl-C (or SIGTERM, the `cause`): cancel every active job, then wait (a while) for the workers to write their
    interrupted records."""
    active = [run for run in runs if run.status in ACTIVE]
    # All at once and queued first: a running job that stops frees its slot, which the scheduler (Slurm's array
    # throttle, Ray) would otherwise give at once to a queued job of this very sweep that is about to be cancelled.
    engine.cancel([run.handle for run in sorted(active, key=lambda run: run.status != "queued")])
    deadline = time.monotonic() + CANCEL_GRACE_S
    try:
        while active and time.monotonic() < deadline:
            for run in active:
                ended = engine.poll(run.handle)
                if ended is not None and ended.result is not None and ended.result["status"] != "interrupted":
                    _ended(run, ended.result)  # it ended on its own before the cancel reached it
                elif ended is not None:
                    run.status = "cancelled"
            active = [run for run in active if run.status in ACTIVE]
            if active:
                time.sleep(0.2)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
        pass
    for run in runs:
        if run.status in (*ACTIVE, "cancelled"):
            run.status, run.reason = "cancelled", f"cancelled by {cause}; the same sweep again resumes it"
            view.changed(run)
