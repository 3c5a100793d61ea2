"""The Slurm engine: each run a Slurm job through submitit (`--slurm-local`: submitit's local executor, the same path
without a cluster), one job array for the first submission; a job Slurm requeues is followed on, not taken for ended;
cancelling takes the queued jobs off the queue and stops the running ones with SIGINT, then scancel."""

from __future__ import annotations

import contextlib
import importlib
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hgbench.errors import HGBenchError
from hgbench.files.atomic_io import open_append
from hgbench.sweep.engines import Ended, Job, last_line, require
from hgbench.sweep.slurm import RUNS_AGAIN, SlurmRequest, sbatch_error
from hgbench.sweep.worker import run_one

SCANCEL_TIMEOUT_S = 60.0  # a controller that does not answer scancel in this long is said to, not waited on


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
            return Ended(None, f"{type(exc).__name__}: {last_line(exc)}")
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
