"""A damaged results folder: link loops among records or folders, and a record holding a number no float can hold.

Each bad record is skipped and named, every good one still read; no walk follows a link loop.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgbench.cli import main
from hgbench.run.results import load_records
from hgbench.sweep.watch import RecordWatch

GOOD = Path(__file__).parent / "data" / "records" / "cpu-pt2.14.1" / "0001_case1_seed0.json"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with one good finished record in its machine folder."""
    folder = tmp_path / "results" / "cpu"
    folder.mkdir(parents=True)
    shutil.copy(GOOD, folder / GOOD.name)
    return tmp_path / "results"


@pytest.fixture
def deadline() -> Iterator[None]:
    """Stop a walk that never ends (what a followed link loop does) with a failure instead of a hung suite."""

    def expired(*_: object) -> None:
        raise TimeoutError("the walk did not end: it follows a link loop")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_symlink_loop_among_records_is_skipped_and_named(results: Path, capsys: pytest.CaptureFixture) -> None:
    machine = results / "cpu"
    (machine / "0002_a.json").symlink_to("0003_b.json")
    (machine / "0003_b.json").symlink_to("0002_a.json")
    summaries, warnings = load_records([results])
    assert [s.path.name for s in summaries] == [GOOD.name]
    assert sorted(w.split(":")[0] for w in warnings) == [str(machine / "0002_a.json"), str(machine / "0003_b.json")]
    assert RecordWatch().scan({str(results)})  # a running sweep's progress reads the good record
    assert main(["table", "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "0002_a.json: skipped" in err


def test_a_recursive_glob_through_looping_folder_links_ends(results: Path, deadline: None) -> None:
    machine = results / "cpu"
    (machine / "up").symlink_to("..")
    (machine / "again").symlink_to(".")
    summaries, warnings = load_records([f"{results}/**"])
    assert [s.path.name for s in summaries] == [GOOD.name]
    assert warnings == []


def test_a_number_past_floats_range_skips_that_record_only(results: Path, capsys: pytest.CaptureFixture) -> None:
    record = json.loads(GOOD.read_text())
    record["model"]["params"] = 10**400
    bad = results / "cpu" / "0002_case1_seed1.json"
    bad.write_text(json.dumps(record))
    summaries, warnings = load_records([results])
    assert [s.path.name for s in summaries] == [GOOD.name]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{bad}: skipped, invalid record: model.params is 1000")
    assert len(warnings[0]) < 200
    assert main(["table", "--results", str(results)]) == 0
    assert "Traceback" not in capsys.readouterr().err


# ----------------------------------------------------------------------------------- files that are not records
class Hung(BaseException):
    """A read that never ended. A BaseException, so that no reader's ``except OSError`` (TimeoutError is one) or
    ``except Exception`` takes it for a bad file and goes on to the next hang."""


@pytest.fixture
def hang_guard() -> Iterator[None]:
    """Fail a test whose reader waits for ever (on a FIFO, say) instead of hanging the suite."""

    def expired(*_: object) -> None:
        signal.alarm(5)  # and whatever waits after this one
        raise Hung("a reader waited for ever")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _this_machine() -> str:
    import torch

    from hgbench.measure.environment import collect_environment, machine_id

    return machine_id(collect_environment(torch.device("cpu")))


@pytest.fixture
def hostile(results: Path) -> dict[str, Path]:
    """Beside the good record, in its folder: a FIFO named like a record (a plain open waits for a writer for ever), a
    link to /dev/zero (a plain read never ends), a record nested 200,000 deep (RecursionError in json), and a sparse
    file over the size bound."""
    machine = results / "cpu"
    bad = {
        "fifo": machine / "0002_case1_seed1.json",
        "zero": machine / "0003_case1_seed2.json",
        "deep": machine / "0004_case1_seed3.json",
        "huge": machine / "0005_case1_seed4.json",
    }
    os.mkfifo(bad["fifo"])
    bad["zero"].symlink_to("/dev/zero")
    bad["deep"].write_text("[" * 200_000 + "]" * 200_000)
    with bad["huge"].open("wb") as f:
        f.truncate(65 * 2**20)  # sparse: no disk used
    return bad


def _assert_each_named(warnings: list[str], hostile: dict[str, Path]) -> None:
    reasons = {w.split(": skipped, ")[0]: w.split(": skipped, ")[1] for w in warnings}
    assert reasons[str(hostile["fifo"])] == "unreadable (a FIFO, not a regular file)"
    assert reasons[str(hostile["zero"])] == "unreadable (a character device, not a regular file)"
    assert reasons[str(hostile["deep"])] == "not valid JSON (nested deeper than 64 levels)"
    assert reasons[str(hostile["huge"])] == "unreadable (65.0 MiB, more than the 64.0 MiB read)"


def test_records_that_are_fifos_devices_or_nested_too_deep_are_skipped_and_named(
    results: Path, hostile: dict[str, Path], hang_guard: None, capsys: pytest.CaptureFixture
) -> None:
    summaries, warnings = load_records([results])
    assert [s.path.name for s in summaries] == [GOOD.name]
    _assert_each_named(warnings, hostile)
    for path in hostile.values():  # named one by one, too
        assert load_records([path])[1][0].startswith(f"{path}: skipped, ")
    assert RecordWatch().scan({str(results)})  # a running sweep's progress
    assert main(["table", "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(f"{path}: skipped" in err for path in hostile.values())
    assert main(["compare", str(results / "cpu" / GOOD.name), str(results)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert main(["table", "--bench", "--results", str(results)]) in (0, 2)  # bench records: none here
    assert "Traceback" not in capsys.readouterr().err


def test_resume_and_the_finished_run_skip_never_hang_on_a_fifo(
    results: Path, tmp_path: Path, hang_guard: None, capsys: pytest.CaptureFixture
) -> None:
    """`run --resume` and `run --case all` (and a sweep's skip) read this machine's folder: a FIFO there, or a FIFO
    where an interrupted run's claim file should be, is passed over."""
    from hgbench.run import results as store

    machine = _this_machine()
    folder = results / machine
    folder.mkdir()
    os.mkfifo(folder / "0001_case2_seed0.json")
    (folder / "0002_case2_seed1.json").symlink_to("/dev/zero")
    interrupted = json.loads((GOOD.parent / "0005_case2_seed0.json").read_text())
    run_dir = tmp_path / "runs" / "case2_seed0-0123456789ab"
    run_dir.mkdir(parents=True)
    (run_dir / "last.pt").write_bytes(b"a checkpoint")
    os.mkfifo(run_dir / "claim.lock")
    interrupted["checkpoint"] = str(run_dir / "last.pt")
    (folder / "0003_case2_seed0.json").write_text(json.dumps(interrupted))

    assert store.find_finished(results, "0123456789ab", machine_id=machine) is None
    assert [p.name for p, _ in store.interrupted_runs(results, "2", False, machine_id=machine)] == [
        "0003_case2_seed0.json"
    ]
    assert store.runs_in_training(results, "2", False, machine_id=machine) == []
    argv = ["run", "--case", "2", "--resume", "--out", str(results), "--checkpoint-dir", str(tmp_path / "runs")]
    assert main([*argv, "--device", "cpu", "--quiet"]) != 0  # that checkpoint is no torch file: refused, no hang
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
