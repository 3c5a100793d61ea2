"""`hgbench sweep` on the optional engines, on this machine: a local Ray and submitit's local executor."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_sweep import records, sweep_argv

from hgbench import cli
from hgbench.sweep import engines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for the module (starting one takes seconds); the sweep joins it and leaves it running."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()


def _side_by_side(
    folder: Path, runs: int, inner: Callable[..., dict[str, Any]], patience_s: float = 600.0
) -> Callable[..., dict[str, Any]]:
    """`inner` (the engine's task) behind a meeting point: each call leaves a file in `folder` and waits until `runs`
    calls have, then runs. So the runs all finish only if they all ran at once, however slowly the machine runs them;
    a call left alone for `patience_s` (minutes: liveness only, never a measure of speed) fails its run instead of
    hanging the test.

    A nested function, so that Ray pickles it by value into its worker processes."""

    def run_one(
        config: dict[str, Any], *, keep_checkpoint: bool, log_path: str | None = None, threads: int | None = None
    ) -> dict[str, Any]:
        (folder / f"seed-{config['seed']}").touch()
        deadline = time.monotonic() + patience_s
        while len(list(folder.iterdir())) < runs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"seed {config['seed']} waited {patience_s:g} s alone: the runs did not run at once")
            time.sleep(0.05)
        return inner(config, keep_checkpoint=keep_checkpoint, log_path=log_path, threads=threads)

    return run_one


def test_ray_runs_two_runs_at_once_and_the_same_call_again_launches_nothing(
    local_ray,
    tmp_path: Path,
    synthetic_root: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two CPUs, each run asking for one: Ray starts both tasks before either finishes (each waits for the other), as
    the code guarantees, whatever the machine's load; when the runs overlap in wall-clock time is not asserted."""
    assert local_ray.cluster_resources()["CPU"] == 2
    met = tmp_path / "met"
    met.mkdir()
    monkeypatch.setattr(engines, "ray_run_one", _side_by_side(met, runs=2, inner=engines.ray_run_one))
    argv = sweep_argv(tmp_path, synthetic_root, "--cases", "hg1", "--seeds", "0,1", "--engine", "ray", "--retries", "0")
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "sweep of 2 runs, 2 to run; ray: one task per run on a local Ray on this machine, each asking for 0 GPU and "
        "1 CPU" in out
    )
    done = records(tmp_path)
    assert sorted(r["config"]["seed"] for r in done) == [0, 1]
    assert all(r["status"] == "finished" for r in done)  # so each task met the other before it ran its run
    assert sorted(p.name for p in met.iterdir()) == ["seed-0", "seed-1"]
    assert "| hg1 |" in out  # the comparison table of the sweep's records
    [node] = [n["NodeID"] for n in local_ray.nodes()]
    for log in (tmp_path / "runs" / "sweep-logs").glob("*.log"):  # each attempt's log says where it ran
        assert log.read_text().startswith(f"hgbench: attempt on Ray node {node} ("), log

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
    from hgbench.sweep.submitit_engine import SubmititEngine

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
