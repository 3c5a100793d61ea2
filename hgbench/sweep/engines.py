"""The engines that run a sweep's runs, each a thin adapter over a scheduler people already operate.

hgbench schedules nothing itself: the local engine runs one child process after another, Ray places tasks by the
resources they ask for, Slurm (through submitit) queues jobs. Each engine offers the same four calls, `Engine`:
submit a job (a handle back), poll a handle (None while it runs), cancel it, close the engine. Every job runs
`hgbench.sweep.worker.run_one`, which writes the run's record into the shared results folder itself; an engine only
carries back the worker's small summary, or says that the worker died.

The protocol, the local engine and the Ray engine are here; the Slurm one is `hgbench.sweep.submitit_engine`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hgbench.errors import HGBenchError
from hgbench.files.atomic_io import NotAPlainFile, open_append, write_json_atomic
from hgbench.sweep.worker import run_one

ENGINES: tuple[str, ...] = ("local", "ray", "slurm")


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
            return Ended(None, f"{type(exc).__name__}: {last_line(exc)}")

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


def last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's text (remote errors carry the whole remote traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
