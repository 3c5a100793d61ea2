"""`hgbench sweep` on the optional engines, on this machine: a local Ray and submitit's local executor."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from test_sweep import records, sweep_argv

from hgbench import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module (starting one takes seconds); the sweep joins it and leaves it running."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


def _span(record: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(record["started"]), datetime.fromisoformat(record["finished"])


def test_ray_runs_two_runs_at_once_and_the_same_call_again_launches_nothing(
    local_ray, tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = sweep_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0,1", "--engine", "ray")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "sweep of 2 runs, 2 to run; ray: one task per run on a local Ray on this machine, each asking for 0 GPU" in out
    )
    done = records(tmp_path)
    assert sorted(r["config"]["seed"] for r in done) == [0, 1]
    assert all(r["status"] == "finished" for r in done)
    (a_start, a_end), (b_start, b_end) = (_span(r) for r in done)
    assert max(a_start, b_start) < min(a_end, b_end)  # the two runs overlapped in time: Ray ran them side by side
    assert "| hg1 |" in out  # the comparison table of the sweep's records

    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "sweep of 2 runs, 0 to run" in out
    assert "hgbench: sweep of 2 runs: 2 skipped" in out
    assert len(records(tmp_path)) == 2


def test_submitit_local_executor_runs_two_runs_into_two_records(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("submitit")
    argv = sweep_argv(
        tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0,1", "--engine", "slurm", "--slurm-local"
    )
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "slurm: one job per run through submitit's local executor on this machine, each asking for 0 GPU" in out
    done = records(tmp_path)
    assert sorted(r["config"]["seed"] for r in done) == [0, 1]
    assert all(r["status"] == "finished" for r in done)
    assert (tmp_path / "runs" / "submitit").is_dir()


def test_slurm_local_jobs_run_in_sessions_of_their_own(tmp_path: Path) -> None:
    """As Slurm jobs are: the terminal's Ctrl-C reaches the driver alone, which cancels each job once, and submitit's
    controllers print their KeyboardInterrupt tracebacks into controllers.log, not onto the terminal."""
    import subprocess
    import sys

    submitit = pytest.importorskip("submitit")
    from hgbench.sweep.engines import SubmititEngine

    engine = SubmititEngine(
        folder=tmp_path, local=True, partition=None, time_min=5, gpus=0, cpus=1, array_parallelism=1
    )
    plain = submitit.local.local.subprocess
    with engine._own_sessions():
        child = submitit.local.local.subprocess.Popen(  # as submitit starts a job's controller
            [
                sys.executable,
                "-c",
                "import os; print(os.getsid(0) == os.getpid(), os.getsid(0) == os.getsid(os.getppid()))",
            ]
        )
        child.wait()
    assert submitit.local.local.subprocess is plain is subprocess  # restored once the jobs are submitted
    assert (tmp_path / "controllers.log").read_text().split() == ["True", "False"]  # a session leader, not ours
