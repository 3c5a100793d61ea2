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
