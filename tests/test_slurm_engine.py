"""The Slurm engine's parts that need no cluster: the options a job asks for (as submitit writes them for sbatch), the
flags' one-line errors, how the driver reads a job that Slurm requeued or the driver cancelled, SIGTERM inside a
submitit job on Slurm, and the record's count of requeues. The engine against a real Slurm is in
tests/cluster/test_slurm.py (`make test-cluster`)."""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_sweep import _fake_slurm, sweep_argv

from hgbench import cli
from hgbench.run.failures import sigterm_as_interrupt
from hgbench.run.runner import run
from hgbench.spec.config import RunConfig
from hgbench.sweep.engines import Job
from hgbench.sweep.submitit_engine import SubmititEngine


def _engine(tmp_path: Path, **options: object) -> SubmititEngine:
    pytest.importorskip("submitit")
    settings = {"partition": None, "time_min": 30, "gpus": 0, "cpus": 1, "array_parallelism": 2, **options}
    return SubmititEngine(folder=tmp_path / "submitit", local=False, **settings)


def test_every_option_a_cluster_needs_goes_into_the_batch_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm = _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{slurm}{os.pathsep}{os.environ['PATH']}")
    engine = _engine(
        tmp_path, gpus=2, gpus_as="gres", cpus=3, memory="16G", extra=(("account", "lab"), ("qos", "high"))
    )
    engine.start()
    engine.submit([Job("run", {}, True, None)])
    script = (slurm / "submitted.sh").read_text()
    for line in ("gres=gpu:2", "cpus-per-task=3", "mem=16G", "account=lab", "qos=high", "time=30"):
        assert f"#SBATCH --{line}\n" in script
    assert "gpus-per-node" not in script  # --gres instead, for clusters without --gpus-per-node
    assert "#SBATCH --signal=USR2@90\n" in script  # submitit's checkpoint-and-requeue warning before the limit
    assert "each asking for 2 GPU (--gres=gpu:2), 3 CPU, 16G memory and 30 min, account=lab, qos=high" in (
        engine.describe()
    )


def test_a_cpu_job_asks_for_no_gpu_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slurm = _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{slurm}{os.pathsep}{os.environ['PATH']}")
    engine = _engine(tmp_path, gpus=0)
    engine.start()
    engine.submit([Job("run", {}, True, None)])
    script = (slurm / "submitted.sh").read_text()
    assert "gpus" not in script
    assert "gres" not in script


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--slurm-extra", "account"], "--slurm-extra 'account': give KEY=VALUE"),
        (["--slurm-extra", "partition=gpu"], "use --slurm-partition for the job's partition"),
        (["--slurm-extra", "time=10"], "use --slurm-time for the job's time"),
        (["--slurm-extra", "output=/x"], "submitit sets --output itself"),
        (["--slurm-extra", "qos=a", "--slurm-extra", "qos=b"], "--slurm-extra qos is given twice"),
        (["--slurm-mem", "16 GB"], "--slurm-mem '16 GB': give a size as sbatch's --mem takes it"),
        (
            ["--slurm-gpus-per-run", "1", "--slurm-gpus-as", "gres", "--slurm-extra", "gres=gpu:a100:1"],
            "with --slurm-gpus-as gres the GPUs are already --gres=gpu:N",
        ),
    ],
)
def test_a_bad_slurm_option_is_one_line(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    pytest.importorskip("submitit")
    argv = sweep_argv(tmp_path, synthetic_root, "--cases", "hg1", "--engine", "slurm", *flags, "--dry-run")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hgbench: error: ")
    assert err.count("\n") == 1, err
    assert message in err


class _Watcher:
    """submitit's shared watcher as the engine uses it: a scripted Slurm state, and the calls made."""

    def __init__(self, state: str) -> None:
        self.state, self.calls = state, []

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        self.calls.append(mode)
        return self.state

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        self.calls.append(f"is_done:{mode}")
        return self.state.split()[0] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "UNKNOWN")


class _Job:
    """A submitit job handle: the result file its job writes (a JSON stand-in for the pickle) and the watcher."""

    def __init__(self, folder: Path, state: str) -> None:
        self.job_id = "4242_1"
        self.paths = SimpleNamespace(result_pickle=folder / "4242_1_0_result.pkl")
        self.watcher = _Watcher(state)
        self.results_read = 0

    def write(self, status: str) -> None:
        self.paths.result_pickle.write_text(json.dumps({"status": status, "record": None, "reason": None}))
        stamp = self.paths.result_pickle.stat().st_mtime_ns + self.results_read + 1  # a new file, a new stamp
        os.utime(self.paths.result_pickle, ns=(stamp, stamp))

    def done(self, force_check: bool = False) -> bool:
        return self.paths.result_pickle.exists() or self.watcher.is_done(self.job_id, "force" if force_check else "")

    def result(self) -> dict:
        self.results_read += 1
        return json.loads(self.paths.result_pickle.read_text())


def test_a_job_slurm_requeued_is_followed_to_its_own_end_not_taken_for_ended(tmp_path: Path) -> None:
    """`scontrol requeue`, a preemption or a time limit: the job's attempt wrote "interrupted" and Slurm queued the
    job again. The driver keeps following it (a retry now would race the requeued job for the run) and takes the
    requeued attempt's result when it comes; Slurm is asked once, not at every poll."""
    engine = _engine(tmp_path)
    job = _Job(tmp_path, "PENDING")
    job.write("interrupted")
    assert engine.poll(job) is None
    job.watcher.state = "RUNNING"
    for _ in range(3):
        assert engine.poll(job) is None
    assert job.watcher.calls.count("force") == 1  # then only on submitit's own schedule
    job.write("finished")
    ended = engine.poll(job)
    assert ended is not None
    assert ended.result["status"] == "finished"


@pytest.mark.parametrize(("state", "followed"), [("COMPLETING", True), ("CANCELLED by 0", False), ("TIMEOUT", False)])
def test_an_interrupted_job_that_slurm_ended_is_ended(tmp_path: Path, state: str, followed: bool) -> None:
    """Cancelled or out of time without a requeue: ended (the driver retries it or reports it); still completing:
    not known yet."""
    engine = _engine(tmp_path)
    job = _Job(tmp_path, state)
    job.write("interrupted")
    ended = engine.poll(job)
    assert (ended is None) == followed
    if not followed:
        assert ended.result["status"] == "interrupted"


def test_a_cancelled_job_that_never_started_ends_without_waiting_for_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pending job the driver cancelled writes no result: the engine says so at once rather than waiting for the
    result file as submitit's `result()` does for a slow shared filesystem (15 s a job)."""
    import subprocess

    engine = _engine(tmp_path)
    scancels: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: scancels.append(argv))
    job = _Job(tmp_path, "PENDING")
    engine.cancel([job])
    # Off the queue if pending; SIGINT if running (scancel asked to signal a pending job waits while it is queued);
    # then whatever is left.
    assert scancels == [
        ["scancel", "--state=PENDING", "4242_1"],
        ["scancel", "--state=RUNNING", "--signal=INT", "4242_1"],
        ["scancel", "4242_1"],
    ]
    assert engine.poll(job) is None
    job.watcher.state = "CANCELLED by 0"
    engine._asked_at = float("-inf")  # a second later
    ended = engine.poll(job)
    assert ended is not None
    assert ended.result is None
    assert "cancelled before it wrote a result" in ended.reason
    assert job.results_read == 0


def test_a_scancel_that_hangs_is_one_warning_and_the_plain_scancel_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A controller that does not answer costs the sweep's cancel one line, never a TimeoutExpired traceback."""
    import subprocess

    engine = _engine(tmp_path)
    calls: list[list[str]] = []

    def run(argv: list[str], **kwargs: object) -> None:
        calls.append(argv)
        if "--signal=INT" in argv:
            raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", run)
    engine.cancel([_Job(tmp_path, "RUNNING")])
    assert calls[-1] == ["scancel", "4242_1"]
    assert capsys.readouterr().err == (
        "hgbench: warning: scancel --state=RUNNING --signal=INT 4242_1 had no answer in 60 s\n"
    )


@pytest.mark.parametrize("in_slurm_job", [True, False])
def test_sigterm_inside_a_submitit_slurm_job_is_left_to_submitit(
    monkeypatch: pytest.MonkeyPatch, in_slurm_job: bool
) -> None:
    """There a SIGTERM comes before a requeue as before a cancel: submitit ignores it and requeues on the USR2 that
    follows, so the run must not stop at it. Anywhere else SIGTERM stops the run as Ctrl-C does."""
    if in_slurm_job:
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    else:
        monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))  # as submitit's bypass
    interrupted = False
    try:
        with sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # a handler runs between bytecodes; sleep lets it run at once
                    if seen:
                        break
                    time.sleep(0.01)
            except KeyboardInterrupt:
                interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert interrupted is not in_slurm_job
    assert seen == ([signal.SIGTERM] if in_slurm_job else [])


def test_the_record_counts_each_slurm_jobs_requeues(tiny: RunConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Epoch 1 outside Slurm (no job to name); then an array task that Slurm had requeued twice runs epoch 2; then the
    sweep's retry, another job, finishes the run. The record names both jobs and counts the two requeues (a retry is
    not one)."""
    cfg = replace(tiny, epochs=3)
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    first = run(cfg, progress=False, stop_after_epoch=1)
    assert json.loads(first.record_path.read_text())["slurm"] is None
    monkeypatch.setenv("SLURM_JOB_ID", "4243")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4240")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    second = run(cfg, resume=True, progress=False, stop_after_epoch=2)
    assert json.loads(second.record_path.read_text())["slurm"] == {
        "jobs": [{"job_id": "4240_3", "restarts": 2}],
        "requeues": 2,
    }
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_JOB_ID", "5000")
    last = run(cfg, resume=True, progress=False)
    record = json.loads(last.record_path.read_text())
    assert last.record_path == first.record_path
    assert record["status"] == "finished"
    assert [e["epoch"] for e in record["results"]["epochs"]] == [1, 2, 3]
    assert record["slurm"] == {
        "jobs": [{"job_id": "4240_3", "restarts": 2}, {"job_id": "5000", "restarts": 0}],
        "requeues": 2,
    }
