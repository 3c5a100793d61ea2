"""The engines that run a sweep's runs, each a thin adapter over a scheduler people already operate.

hgbench schedules nothing itself: the local engine runs one child process after another, Ray places tasks by the
resources they ask for, Slurm (through submitit) queues jobs. Each engine offers the same four calls, `Engine`:
submit a job (a handle back), poll a handle (None while it runs), cancel it, close the engine. Every job runs
`hgbench.sweep.worker.run_one`, which writes the run's record into the shared results folder itself; an engine only
carries back the worker's small summary, or says that the worker died.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import io
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hgbench.errors import HGBenchError
from hgbench.files.atomic_io import NotAPlainFile, open_append, write_json_atomic
from hgbench.sweep.slurm import RUNS_AGAIN, SlurmRequest, sbatch_error
from hgbench.sweep.worker import run_one

ENGINES: tuple[str, ...] = ("local", "ray", "slurm")
SCANCEL_TIMEOUT_S = 60.0  # a controller that does not answer scancel in this long is said to, not waited on


@dataclass(frozen=True)
class Job:
    """One run as an engine submits it: the arguments of `run_one`."""

    name: str  # a file-name-safe label, unique in the sweep (engine-side names, logs)
    config: dict[str, Any]  # RunConfig.to_dict()
    keep_checkpoint: bool
    log_path: str | None


@dataclass(frozen=True)
class Ended:
    """A job that stopped: the worker's summary (`run_one`'s dict), or None and why when the worker died."""

    result: dict[str, Any] | None
    reason: str | None = None


class Engine(Protocol):
    name: str

    def describe(self) -> str:
        """Where the runs go and what each asks for, one line (for --dry-run and the sweep's first line)."""

    def start(self) -> None:
        """Connect (start a local Ray, make submitit's folder); nothing before this call, so --dry-run starts none."""

    def submit(self, jobs: Sequence[Job]) -> list[Any]:
        """Start (or queue) `jobs`; one handle each."""

    def poll(self, handle: Any) -> Ended | None:
        """None while the job is queued or running."""

    def cancel(self, handles: Sequence[Any]) -> None:
        """Stop these jobs as Ctrl-C would (their records say interrupted), queued ones first: a running job that
        stops frees its slot, which the scheduler would otherwise give to one of them. A no-op for a job that ended."""

    def close(self) -> None:
        """Release what the engine started (a local Ray, temporary files)."""


def require(module: str, engine: str, extra: str) -> Any:
    """Import an optional engine's package, or a one-line error saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise HGBenchError(
            f"--engine {engine} needs the {module} package, which is not installed: pip install 'hgbench[{extra}]'"
        ) from None


class LocalEngine:
    """The runs one after another on this machine, each in a child process of its own.

    A child that crashes or is killed ends only its run (the sweep retries it); on Ctrl-C the driver sends the running
    child one SIGINT, so its record is marked interrupted before it exits.
    """

    name = "local"

    def __init__(self, *, threads: int | None = None) -> None:
        self.threads = threads  # torch's CPU threads in each child (None: every core)
        self._context = multiprocessing.get_context("spawn")  # no fork of a driver that may hold threads
        self._folder: Path | None = None  # the children's summaries
        self._queue: list[_LocalJob] = []
        self._running: _LocalJob | None = None
        self._submitted = 0  # numbers the children's summary files

    def describe(self) -> str:
        threads = f" using {self.threads} CPU thread{'s' if self.threads > 1 else ''}" if self.threads else ""
        return f"local: one run at a time on this machine, each in a child process{threads}"

    def start(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="hgbench-sweep-"))

    def submit(self, jobs: Sequence[Job]) -> list[Any]:
        handles = []
        for job in jobs:
            self._submitted += 1
            handles.append(_LocalJob(job, self._folder / f"{self._submitted}.json"))
        self._queue += handles
        self._start_next()
        return handles

    def poll(self, handle: _LocalJob) -> Ended | None:
        if handle.ended is None and handle.process is not None and not handle.process.is_alive():
            handle.process.join()
            handle.ended = handle.collect()
            if self._running is handle:
                self._running = None
        self._start_next()
        return handle.ended

    def cancel(self, handles: Sequence[_LocalJob]) -> None:
        for handle in sorted(handles, key=lambda handle: handle.process is not None):
            if handle.process is None:
                handle.ended = handle.ended or Ended(None, "cancelled before it started")
                if handle in self._queue:
                    self._queue.remove(handle)
            elif handle.process.is_alive():
                os.kill(handle.process.pid, signal.SIGINT)

    def close(self) -> None:
        for handle in [self._running, *self._queue]:
            if handle is not None and handle.process is not None and handle.process.is_alive():
                handle.process.kill()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def _start_next(self) -> None:
        if self._running is not None or not self._queue:
            return
        handle = self._queue.pop(0)
        if handle.ended is not None:  # cancelled while queued
            return self._start_next()
        handle.process = self._context.Process(
            target=_child, args=(handle.job, str(handle.result_path), self.threads, os.getpid())
        )
        handle.process.start()
        self._running = handle
        return None


@dataclass(eq=False)
class _LocalJob:
    job: Job
    result_path: Path
    process: Any = None  # multiprocessing.Process once started
    ended: Ended | None = None

    def collect(self) -> Ended:
        if self.result_path.is_file():
            return Ended(json.loads(self.result_path.read_text(encoding="utf-8")))
        return Ended(None, f"worker process exited with code {self.process.exitcode}")


def end_with_parent(parent: int) -> None:
    """Have this process sent SIGTERM when its parent dies (Linux), so a `kill -9`'d sweep leaves no run behind.

    The runner treats SIGTERM as Ctrl-C, so the orphaned run writes an "interrupted" record that the next sweep
    resumes. Elsewhere (no prctl) this does nothing: the child then finishes its run on its own. `parent` is the pid
    the parent had when it started the child: read here, it could already be the reaper's.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)


def _child(job: Job, result_path: str, threads: int | None, parent: int) -> None:
    """The local engine's child process: the worker, its summary written atomically for the parent."""
    # Its own process group: the terminal's Ctrl-C reaches the driver alone, which cancels the child with one SIGINT
    # (two could cut short the interrupted record the first one is writing).
    os.setpgrp()
    end_with_parent(parent)
    result = run_one(job.config, keep_checkpoint=job.keep_checkpoint, log_path=job.log_path, threads=threads)
    write_json_atomic(result_path, result)


class RayEngine:
    """Each run a Ray task asking for `gpus` (fractions share a GPU) and `cpus`; Ray places them on the cluster.

    With an `address` it joins that cluster; else it starts a local Ray for the sweep (or uses the one this process
    already started) and shuts down only what it started.
    """

    name = "ray"

    def __init__(self, *, address: str | None, gpus: float | None, cpus: float) -> None:
        self._ray = require("ray", "ray", "ray")
        self.address, self.gpus, self.cpus = address, gpus, cpus  # gpus None: 1 where the cluster has GPUs, else 0
        self._started = False
        self._remote = None

    def describe(self) -> str:
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray on this machine"
        gpus = "1 GPU (0 where the cluster has none)" if self.gpus is None else f"{self.gpus:g} GPU"
        return f"ray: one task per run on {where}, each asking for {gpus} and {self.cpus:g} CPU"

    def start(self) -> None:
        ray = self._ray
        if not ray.is_initialized():
            options = {"address": self.address} if self.address else {"include_dashboard": False}
            ray.init(**options, log_to_driver=False, logging_level=logging.WARNING)
            self._started = True
        have = ray.cluster_resources().get("GPU", 0)
        if self.gpus is None:
            self.gpus = 1.0 if have else 0.0
        if self.gpus > have:
            self.close()
            raise HGBenchError(
                f"--gpus-per-run {self.gpus:g}: the Ray cluster has {have:g} GPUs, so no run could start; "
                "use --gpus-per-run 0 with --device cpu"
            )
        # max_retries=0: retries are the sweep's (--retries), counted and resumed from the checkpoint.
        self._remote = ray.remote(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=0)(ray_run_one)

    def submit(self, jobs: Sequence[Job]) -> list[Any]:
        return [
            self._remote.options(name=job.name).remote(
                job.config, keep_checkpoint=job.keep_checkpoint, log_path=job.log_path, threads=max(1, int(self.cpus))
            )
            for job in jobs
        ]

    def poll(self, handle: Any) -> Ended | None:
        ray = self._ray
        ready, _ = ray.wait([handle], timeout=0)
        if not ready:
            return None
        try:
            return Ended(ray.get(handle))
        except ray.exceptions.RayError as exc:  # the worker or its node died, the task was cancelled, ...
            return Ended(None, f"{type(exc).__name__}: {_last_line(exc)}")

    def cancel(self, handles: Sequence[Any]) -> None:
        for handle in handles:  # Ray tells no queued task from a running one: the driver's order, queued first
            self._ray.cancel(handle)  # KeyboardInterrupt in the task: the runner marks its record interrupted

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def ray_run_one(
    config: dict[str, Any], *, keep_checkpoint: bool, log_path: str | None = None, threads: int | None = None
) -> dict[str, Any]:
    """`run_one` as a Ray task: the run's log first says which Ray node and process this attempt runs on.

    On a cluster that lost a node, the log then tells each attempt apart: where the run was when the node went, and
    where its retry resumed it.
    """
    import ray

    if log_path is not None:
        node = ray.get_runtime_context().get_node_id()
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        where = f"hgbench: attempt on Ray node {node} ({ray.util.get_node_ip_address()}), pid {os.getpid()}\n"
        with contextlib.suppress(NotAPlainFile), open_append(log_path) as log:  # a link: run_one says so, one line
            log.write(where.encode())
    return run_one(config, keep_checkpoint=keep_checkpoint, log_path=log_path, threads=threads)


class SubmititEngine:
    """Each run a Slurm job through submitit (`local`: submitit's local executor, the same path without a cluster).

    The first submission goes out as one Slurm job array, so `array_parallelism` caps how many run at once. A job
    Slurm requeues (a time limit's or a preemption's USR2, on which submitit checkpoints and requeues it through
    `RequeuedRun`; `scontrol requeue`; a preemption in requeue mode) runs the run again in the same job, which resumes
    it from its checkpoint: the driver follows the job on, rather than taking its last attempt's "interrupted" for
    the end and submitting a second job that would race it for the run.
    """

    name = "slurm"

    def __init__(
        self,
        *,
        folder: Path,
        local: bool,
        partition: str | None,
        time_min: int,
        gpus: int,
        cpus: int,
        array_parallelism: int,
        memory: str | None = None,
        gpus_as: str = "gpus-per-node",
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._submitit = require("submitit", "slurm", "slurm")
        self.folder, self.local = folder, local
        self.request = SlurmRequest(partition, time_min, gpus, gpus_as, cpus, memory, tuple(extra), array_parallelism)
        self.cpus = cpus
        self.executor = None
        self._cancelled: set[str] = set()  # job ids cancelled by the driver
        self._requeued: dict[str, int] = {}  # job id: mtime of the interrupted result its requeued attempt follows
        self._asked_at = float("-inf")  # when sacct was last asked about the jobs (monotonic)

    def start(self) -> None:
        if not self.local and shutil.which("sbatch") is None:  # else submitit would quietly run the jobs here
            raise HGBenchError(
                "--engine slurm: no Slurm on this machine (sbatch not found); start the sweep on the cluster's login "
                "node, or add --slurm-local to run the jobs here"
            )
        self.executor = self._submitit.AutoExecutor(folder=self.folder, cluster="local" if self.local else "slurm")
        if self.local:
            request = self.request
            params = {"timeout_min": request.time_min, "gpus_per_node": request.gpus, "cpus_per_task": request.cpus}
            self.executor.update_parameters(name="hgbench-sweep", **params)
        else:
            self.executor.update_parameters(**self.request.parameters())

    def describe(self) -> str:
        request = self.request
        if self.local:
            what = (
                f"submitit's local executor on this machine, each asking for {request.gpus} GPU, {request.cpus} CPU "
                f"and {request.time_min} min"
            )
        else:
            partition = f" on partition {request.partition}" if request.partition else ""
            at_once = f", at most {request.array_parallelism} at once"
            what = f"Slurm{partition}, {request.describe()}{at_once}"
        return f"slurm: one job per run through {what}; submitit's files in {self.folder}"

    def submit(self, jobs: Sequence[Job]) -> list[Any]:
        def one(job: Job) -> Any:
            return self.executor.submit(
                RequeuedRun(), job.config, keep_checkpoint=job.keep_checkpoint, log_path=job.log_path, threads=self.cpus
            )

        said = io.StringIO()  # submitit prints a refusing sbatch's errors: they go into the one line below instead
        try:
            with self._own_sessions(), contextlib.redirect_stderr(said):
                if len(jobs) < 2:
                    return [one(job) for job in jobs]
                with self.executor.batch():  # one job array
                    delayed = [one(job) for job in jobs]
        except self._submitit.core.utils.FailedJobError as exc:  # sbatch refused the jobs (a bad partition, ...)
            raise HGBenchError(f"--engine slurm: sbatch refused the jobs: {sbatch_error(exc)}") from None
        finally:
            if said.getvalue() and not said.getvalue().startswith("sbatch: error"):
                sys.stderr.write(said.getvalue())  # anything else submitit had to say
        return delayed

    @contextlib.contextmanager
    def _own_sessions(self) -> Iterator[None]:
        """With --slurm-local, start each job's controller in a session of its own, as Slurm jobs are, its own output
        going to ``controllers.log`` in submitit's folder (the runs' output has submitit's per-job files).

        Otherwise the terminal's Ctrl-C reaches submitit's controllers and tasks directly, and each prints its
        KeyboardInterrupt traceback on the terminal; the driver's cancel (one SIGINT a job) is what stops them.
        """
        if not self.local:
            yield
            return
        local_module = importlib.import_module("submitit.local.local")
        plain = local_module.subprocess
        local_module.subprocess = _NewSessions(plain, self.folder / "controllers.log")
        try:
            yield
        finally:
            local_module.subprocess = plain

    def poll(self, handle: Any) -> Ended | None:
        cancelled = handle.job_id in self._cancelled
        if not handle.done(force_check=cancelled and self._may_ask()):
            return None
        if cancelled and not self.local and not handle.paths.result_pickle.exists():
            return Ended(None, f"Slurm job {handle.job_id} cancelled before it wrote a result")
        try:
            ended = Ended(handle.result())
        except self._submitit.core.utils.UncompletedJobError as exc:  # killed, timed out, preempted, crashed
            return Ended(None, f"{type(exc).__name__}: {_last_line(exc)}")
        if self.local or ended.result.get("status") != "interrupted" or not self._runs_again(handle):
            return ended
        return None

    def _runs_again(self, handle: Any) -> bool:
        """Whether Slurm runs the job again after the attempt whose interrupted result is on disk (requeued), or may
        yet (the job still completing): then the run is still the job's, whatever that attempt said."""
        stamp = handle.paths.result_pickle.stat().st_mtime_ns
        followed = self._requeued.get(handle.job_id) == stamp and handle.job_id not in self._cancelled
        if followed and not handle.watcher.is_done(handle.job_id, mode="standard"):
            return True  # the requeued attempt runs on; Slurm is asked again on submitit's own schedule
        state = handle.watcher.get_state(handle.job_id, mode="force" if self._may_ask() else "cache")
        state = state.split()[0].upper() if state.strip() else "UNKNOWN"  # sacct says "CANCELLED by 0"
        if state in RUNS_AGAIN:
            self._requeued[handle.job_id] = stamp
            return True
        return state == "COMPLETING"  # requeued or ended: known once it completed

    def _may_ask(self) -> bool:
        """At most one sacct call a second (one call answers for every job of the sweep)."""
        now = time.monotonic()
        if now - self._asked_at < 1.0:
            return False
        self._asked_at = now
        return True

    def cancel(self, handles: Sequence[Any]) -> None:
        """--slurm-local: SIGINT to each job. On Slurm, three scancel calls for all the jobs at once: the pending ones
        off the queue (which Slurm knows better than the driver, whose view of a job that just started lags), SIGINT
        to the steps of the running ones (the runner marks its record interrupted and the worker returns; Slurm's
        SIGTERM alone is submitit's, `hgbench.run.failures`), then scancel of what is left, which ends a running job
        after the cluster's KillWait."""
        if self.local:
            for handle in handles:
                handle.cancel(check=False)
            return
        ids = [handle.job_id for handle in handles]
        self._cancelled.update(ids)
        # `--state=RUNNING` because scancel asked to signal a pending job waits until it leaves the queue (Slurm 22.05:
        # for ever, with the array throttled); quietly, since a job that ended since makes scancel complain.
        for first in (["--state=PENDING"], ["--state=RUNNING", "--signal=INT"], []):
            argv = ["scancel", *first, *ids]
            try:
                subprocess.run(argv, capture_output=True, timeout=SCANCEL_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                print(f"hgbench: warning: {' '.join(argv)} had no answer in {SCANCEL_TIMEOUT_S:g} s", file=sys.stderr)

    def close(self) -> None:
        pass


class _NewSessions:
    """The `subprocess` module as submitit's local executor sees it while submitting: every Popen a new session."""

    def __init__(self, module: Any, log: Path) -> None:
        self._module, self._log = module, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def Popen(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - subprocess's name
        self._log.parent.mkdir(parents=True, exist_ok=True)
        with open_append(self._log) as log:  # the child keeps its own copy of the descriptor; never through a link
            kwargs.setdefault("stdout", log)
            kwargs.setdefault("stderr", self._module.STDOUT)
            return self._module.Popen(*args, start_new_session=True, **kwargs)


class RequeuedRun:
    """`run_one` as submitit calls it: checkpointable, so on a Slurm timeout or preemption submitit requeues the same
    call (up to its limit) and the worker resumes the run from its last epoch's checkpoint."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return run_one(*args, **kwargs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's text (remote errors carry the whole remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
