"""Slurm for the cluster tests (tests/cluster/, marker `cluster`, run by `make test-cluster`, never by `make test`).

`slurm_cluster` is a real one-node cluster that `.ci/slurm-up` started: the one `make test-cluster` brought up (its
env file exports HGBENCH_SLURM_DIR), else one this session brings up in a folder of its own and stops at its end with
`.ci/slurm-down`. Where no Slurm can run (not installed and no root to install it, or no root to start its daemons),
every test that asks for it skips with slurm-up's one line, and the cluster tests that need no Slurm still run. Only
Slurm's fixtures live here; the multi-node Ray and torchrun tests keep theirs beside their tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CI = HERE.parents[1] / ".ci"
SLURM_DIR_ENV = "HGBENCH_SLURM_DIR"  # set by the env file .ci/slurm-up writes
PATIENCE_S = 120.0  # liveness only: how long the queue may take to empty


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/cluster/ is a cluster test, whichever helper module it takes its fixtures from."""
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cluster)


@dataclass(frozen=True)
class SlurmCluster:
    """A running test cluster: `.ci/slurm-up`'s folder, and its commands with the environment they need."""

    folder: Path

    @property
    def env(self) -> dict[str, str]:
        """SLURM_CONF naming this cluster, and the `sacct` stand-in first on PATH (no accounting database here)."""
        return {
            "SLURM_CONF": str(self.folder / "etc" / "slurm.conf"),
            "PATH": f"{self.folder / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def command(self, *argv: str) -> str:
        done = subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job`'s fields of one job (an array's task as ``4242_3``), as Slurm holds them now."""
        line = self.command("scontrol", "-o", "show", "job", job_id).splitlines()[0]
        fields: dict[str, str] = {}
        for word in line.split():
            key, _, value = word.partition("=")
            fields.setdefault(key, value)
        return fields

    def batch_script(self, job_id: str) -> str:
        """The batch script Slurm runs for the job (`scontrol write batch_script`)."""
        return self.command("scontrol", "write", "batch_script", job_id, "-")

    def queue(self, *states: str) -> list[str]:
        """Jobs in the queue (in `states` only, e.g. PENDING, RUNNING), as ``ID STATE`` lines."""
        argv = ["squeue", "-h", "-o", "%i %T"] + (["-t", ",".join(states)] if states else [])
        return self.command(*argv).splitlines()

    def clear(self) -> None:
        """Cancel every job of the cluster and wait until the queue is empty."""
        ids = sorted({line.split()[0].split("_")[0] for line in self.queue()})
        if ids:
            subprocess.run(["scancel", *ids], env={**os.environ, **self.env}, capture_output=True, timeout=60)
        deadline = time.monotonic() + PATIENCE_S
        while self.queue():
            assert time.monotonic() < deadline, f"the queue did not empty: {self.queue()}"
            time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    given = os.environ.get(SLURM_DIR_ENV)
    if given:
        yield SlurmCluster(Path(given))
        return
    folder = Path(tempfile.mkdtemp(prefix="hgbench-slurm-"))  # under /tmp: munged must reach it
    up = subprocess.run([str(CI / "slurm-up"), str(folder)], capture_output=True, text=True, timeout=900)
    if up.returncode == 3:  # no Slurm can run here
        shutil.rmtree(folder, ignore_errors=True)
        lines = up.stderr.strip().splitlines()
        pytest.skip(lines[-1] if lines else "no Slurm here")
    if up.returncode != 0:
        pytest.fail(f".ci/slurm-up failed ({up.returncode}); logs kept in {folder}:\n{up.stderr}")
    try:
        yield SlurmCluster(folder)
    finally:
        subprocess.run([str(CI / "slurm-down"), str(folder)], timeout=300, check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlurmCluster]:
    """The cluster for one test, its queue empty before and after, and this process's environment pointing at it (so
    submitit's sbatch, squeue, scancel and sacct reach it, and the jobs inherit it)."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    slurm_cluster.clear()
    yield slurm_cluster
    slurm_cluster.clear()
