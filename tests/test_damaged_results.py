"""A damaged results folder: link loops among records or folders, and a record holding a number no float can hold.

Each bad record is skipped and named, every good one still read; no walk follows a link loop.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from hgbench.cli import main
from hgbench.results import load_records
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
