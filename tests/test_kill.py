"""Faults leave nothing behind: a `kill -9`'d run takes its DataLoader processes with it, the next run in its folder
removes the temp checkpoint a killed write left, and SIGTERM stops a sweep as Ctrl-C does, in one line, with its
temporary folder removed. Each kill is of a real `hgbench` process (Linux: the tests read /proc)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import processes

from hgbench.run.runner import run
from hgbench.spec.config import RunConfig

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads processes from /proc")

WAIT_S = 600.0  # how long a condition may take to come true on a loaded machine (a bound, not an expectation)


def _family(root: int) -> dict[int, int]:
    """Every live descendant of `root`, each with its start time (so a reused pid is not taken for it)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := processes.stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[1]
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found and (stat := processes.stat(pid)) is not None:
                found[pid] = stat[2]
                todo.append(pid)
    return found


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert process.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {WAIT_S:.0f} s"
        time.sleep(0.2)


def _end(process: subprocess.Popen, family: dict[int, int]) -> None:
    """Clean-up after a test, whatever it found: the processes it started, by pid."""
    if process.poll() is None:
        process.kill()
        process.wait()
    for pid in processes.alive(family):
        os.kill(pid, signal.SIGKILL)


def _written(results: Path) -> bool:
    """Whether a record under `results` holds its first write (the file is claimed empty a moment before)."""
    return any(path.stat().st_size for path in results.rglob("*.json"))


def _run_flags(config: RunConfig) -> list[str]:
    return [
        *("--device", "cpu", "--data-dir", str(config.data_dir)),
        *("--batch", "4", "--test-batch", "4", "--input-res", "64", "--limit-train", "8", "--limit-val", "6"),
        *("--out", config.out, "--checkpoint-dir", config.checkpoint_dir),
    ]


def test_kill_9_of_a_run_leaves_no_process_of_it_behind(tiny: RunConfig) -> None:
    """With the fork server, the DataLoader's workers are the server's children: after a `kill -9` of the run, the
    server, a loader's two workers and multiprocessing's resource tracker used to wait on each other forever."""
    argv = [sys.executable, "-m", "hgbench.cli", "run", "--case", "hg1", "--epochs", "1000", "--quiet"]
    process = subprocess.Popen(
        [*argv, "--workers", "2", *_run_flags(tiny)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    family: dict[int, int] = {}
    try:
        # The training loader's persistent workers are up: two grandchildren, children of the fork server.
        def workers_up() -> bool:
            nonlocal family
            family = _family(process.pid)
            return sum(processes.stat(pid) is not None and processes.stat(pid)[1] != process.pid for pid in family) >= 2

        _wait_for(workers_up, process, "DataLoader workers")
        family = _family(process.pid)
        assert len(family) >= 4  # the fork server, its two workers, the resource tracker
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10.0
        while processes.alive(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:80] for pid in processes.alive(family)}
        assert not left, f"processes of the killed run still running 10 s later: {left}"
    finally:
        _end(process, family)


def test_the_next_run_in_a_folder_removes_the_temp_checkpoint_a_killed_write_left(tiny: RunConfig) -> None:
    from hgbench.run.plan import planned_identity, record_stem
    from hgbench.spec.variants import spec_of_config

    run_dir = Path(tiny.checkpoint_dir) / f"{record_stem(tiny, spec_of_config(tiny))}-{planned_identity(tiny)}"
    run_dir.mkdir(parents=True)
    torn = run_dir / ".last.pt.0123abcd.tmp"  # `hgbench.files.atomic_io`'s temp name, as a kill mid-write leaves it
    torn.write_bytes(b"the first half of a checkpoint")
    notes = run_dir / "notes.tmp"  # not a temp file of hgbench's
    notes.write_text("kept")
    outcome = run(tiny, progress=False)
    assert outcome.checkpoint_path.parent == run_dir
    assert not torn.exists()
    assert notes.read_text() == "kept"


def test_sigterm_stops_a_sweep_as_ctrl_c_does_in_one_line_leaving_no_temp_folder(
    tiny: RunConfig, tmp_path: Path
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    argv = [sys.executable, "-m", "hgbench.cli", "sweep", "--cases", "hg1", "--epochs", "1000", "--workers", "0"]
    process = subprocess.Popen(
        [*argv, *_run_flags(tiny)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    family: dict[int, int] = {}
    try:
        # The run has begun (its first record is written), so the driver is following it.
        _wait_for(lambda: _written(Path(tiny.out)), process, "record of the sweep's run")
        assert list(temp.glob("hgbench-sweep-*"))
        family = _family(process.pid)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=WAIT_S)
        assert process.returncode == 128 + signal.SIGTERM
        assert err.strip().splitlines() == ["hgbench: stopped by SIGTERM; the same sweep again resumes its runs"]
        assert "hg1 seed 0: cancelled: cancelled by SIGTERM; the same sweep again resumes it" in out
        assert "Traceback" not in out + err
        assert not list(temp.glob("hgbench-sweep-*"))
        [record] = Path(tiny.out).rglob("*.json")
        assert json.loads(record.read_text())["status"] == "interrupted"
        deadline = time.monotonic() + 10.0
        while processes.alive(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not processes.alive(family)  # the run's process (and anything it started) ended with the sweep
    finally:
        _end(process, family)
