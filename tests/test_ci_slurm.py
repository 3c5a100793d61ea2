"""The test cluster's scripts without a cluster: the `sacct` stand-in's answers (fed by a scripted `scontrol`) as
submitit reads them, `.ci/slurm-down` stopping only the daemons of its own cluster, and `.ci/slurm-up` without root
saying in one line why no cluster can run (the Slurm tests then skip with that line)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

CI = Path(__file__).resolve().parents[1] / ".ci"

# `scontrol -o show job 12`: an array (two tasks running, two pending as one line) and job 13, cut to what matters.
SCONTROL = {
    "12": [
        "JobId=12 ArrayJobId=12 ArrayTaskId=2-3%2 ArrayTaskThrottle=2 JobName=hgbench-sweep JobState=PENDING "
        "Reason=JobArrayTaskLimit NodeList=(null) Restarts=0",
        "JobId=14 ArrayJobId=12 ArrayTaskId=1 ArrayTaskThrottle=2 JobName=hgbench-sweep JobState=RUNNING NodeList=vm",
        "JobId=13 ArrayJobId=12 ArrayTaskId=0 ArrayTaskThrottle=2 JobName=hgbench-sweep JobState=COMPLETED NodeList=vm",
    ],
    "20": ["JobId=20 JobName=hgbench-sweep JobState=PENDING Reason=BeginTime NodeList=(null) Restarts=1"],
}


@pytest.fixture
def scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted `scontrol` first on PATH: the lines above for `-o show job ID`, Slurm's error for any other id."""
    folder = tmp_path / "bin"
    folder.mkdir()
    cases = "".join(
        f'  {job}) printf "%s\\n" {" ".join(repr(line) for line in lines)} ;;\n' for job, lines in SCONTROL.items()
    )
    script = folder / "scontrol"
    script.write_text(
        '#!/bin/sh\ncase "$4" in\n'
        + cases
        + '  *) echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1 ;;\nesac\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_the_sacct_stand_in_answers_submitits_question_from_scontrol(scontrol: None) -> None:
    argv = [sys.executable, str(CI / "slurm" / "sacct"), "-o", "JobID,State,NodeList", "--parsable2"]
    out = subprocess.run([*argv, "-j", "12", "-j", "20", "-j", "99"], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "JobID|State|NodeList",
        "12_[2-3%2]|PENDING|",
        "12_1|RUNNING|vm",
        "12_0|COMPLETED|vm",
        "20|PENDING|",  # requeued: not done, whatever its last attempt wrote
    ]  # job 99 is unknown: no line, as sacct
    submitit = pytest.importorskip("submitit")
    states = {job: info["State"] for job, info in submitit.SlurmJob.watcher.read_info(out.stdout).items()}
    assert states == {"12_2": "PENDING", "12_3": "PENDING", "12_1": "RUNNING", "12_0": "COMPLETED", "20": "PENDING"}


def _daemon(name: str, folder: Path, *, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A process whose name (`comm`) is `name`: a copy of `sleep` under that name, in `folder`."""
    binary = folder / name
    shutil.copy(shutil.which("sleep"), binary)
    return subprocess.Popen([str(binary), "300"], env=env)


def test_slurm_down_stops_its_own_daemons_and_leaves_a_pid_that_is_not_its_own(tmp_path: Path) -> None:
    """A pid file's pid may since belong to another process, even one of the same name (another cluster's slurmd):
    slurm-down stops a pid only while it runs that daemon for its own cluster (SLURM_CONF names its folder)."""
    cluster = tmp_path / "cluster"
    for sub in ("run", "munge", "etc", "elsewhere"):
        (cluster / sub).mkdir(parents=True)
    others = tmp_path / "others"
    others.mkdir()
    ours = _daemon("slurmd", cluster / "elsewhere", env={**os.environ, "SLURM_CONF": f"{cluster}/etc/slurm.conf"})
    theirs = _daemon("slurmctld", others, env={**os.environ, "SLURM_CONF": "/etc/slurm/slurm.conf"})
    stranger = subprocess.Popen(["sleep", "300"])
    try:
        (cluster / "run" / "slurmd.pid").write_text(f"{ours.pid}\n")
        (cluster / "run" / "slurmctld.pid").write_text(f"{theirs.pid}\n")
        (cluster / "munge" / "munged.pid").write_text(f"{stranger.pid}\n")
        done = subprocess.run([str(CI / "slurm-down"), str(cluster)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert ours.wait(timeout=60) == -signal.SIGTERM
        assert theirs.poll() is None
        assert stranger.poll() is None
    finally:
        for process in (ours, theirs, stranger):
            process.kill()
            process.wait()


def test_slurm_up_without_root_says_why_in_one_line_and_starts_nothing(tmp_path: Path) -> None:
    folder = Path("/tmp") / f"hgbench-slurm-test-{uuid.uuid4().hex[:8]}"  # a folder the unprivileged user may make
    argv = [str(CI / "slurm-up"), str(folder)]
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("root without runuser: cannot try slurm-up as another user")
        argv = ["runuser", "-u", "nobody", "--", *argv]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("slurm-up: ")
    assert "root" in done.stderr
