"""Tests of `hgbench run --case all`'s sweep through the real entry point, with the training itself replaced by a fake.

What is under test is which cases the sweep trains and which it skips as already finished on this machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hgbench import __version__, cli
from hgbench.measure.environment import collect_environment, machine_id
from hgbench.run import runner
from hgbench.spec.cases import STUDY_CASES
from hgbench.spec.config import RunConfig

REPO = Path(__file__).resolve().parents[1]
# The committed smoke sweep: one machine's folder, whatever machine made it.
(PUBLISHED_RECORDS,) = [p for p in (REPO / "results" / "published").iterdir() if p.is_dir()]


@pytest.fixture
def trained(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The cases the sweep asks the runner to train (none is trained for real)."""
    calls: list[str] = []

    def fake_run(config: RunConfig, **_: object) -> runner.RunOutcome:
        calls.append(config.case)
        return runner.RunOutcome(status="finished", record_path=None, checkpoint_path=None, record=None)

    monkeypatch.setattr(runner, "run", fake_run)
    return calls


def test_make_run_on_a_fresh_clone_trains_every_case(
    fresh_clone_results: Path, monkeypatch: pytest.MonkeyPatch, trained: list[str]
) -> None:
    """The committed records (results/published/) are the README's example, not a finished run of this machine."""
    monkeypatch.chdir(fresh_clone_results.parent)
    assert cli.main(["run", "--case", "all", "--smoke"]) == 0
    assert trained == list(STUDY_CASES)


def test_sweep_skips_the_runs_this_machine_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The same records in this machine's own folder do count as finished (so the fresh-clone test means something)."""
    here = machine_id(collect_environment("cpu"))
    shutil.copytree(PUBLISHED_RECORDS, tmp_path / "results" / here)
    for path in (tmp_path / "results" / here).glob("*.json"):
        # As this version would have written them: the code version is part of a run's identity.
        record = json.loads(path.read_text())
        record["hgbench_version"] = __version__
        path.write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--case", "all", "--smoke"]) == 0
    assert trained == []
    assert capsys.readouterr().out.count("already finished with this config") == len(STUDY_CASES)
