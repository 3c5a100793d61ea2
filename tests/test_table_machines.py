"""`hgbench table --machines`: the machine folders of a results folder, a line each, named as --results takes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hgbench.cli import main

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "tests" / "data" / "records"


def test_each_machine_folder_is_one_line_with_its_records_runs_torch_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(RECORDS, tmp_path / "results")
    shutil.copytree(REPO / "results" / "published", tmp_path / "results" / "published")  # left out unless named
    monkeypatch.chdir(tmp_path)
    assert main(["table", "--machines"]) == 0
    out, err = capsys.readouterr()
    setting = "synthetic data (120 train / 40 val), 3 epochs, batch 6, adam, lr 0.0005, input 256, fp32, flip test"
    assert out.splitlines() == [
        f"results/cpu-pt2.14.1: 5 records, 4 finished; torch 2.14.1+cu130; {setting}",
        f"results/nvidia-h100-80gb-hbm3-pt2.14.1-cu13.0: 1 record, 1 finished; torch 2.14.1+cu130; {setting}",
    ]
    assert "0006_case8_seed0.json: skipped" in err  # a damaged record is named, not counted
    # A listed folder is what --results takes.
    assert main(["table", "--format", "csv", "--results", "results/nvidia-h100-80gb-hbm3-pt2.14.1-cu13.0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # header + case 1


def test_two_settings_in_one_folder_are_both_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "results" / "cpu-x"
    shutil.copytree(REPO / "results" / "published" / "cpu-amd-epyc-2c-pt2.14.1", folder)
    shutil.copy(RECORDS / "cpu-pt2.14.1" / "0001_case1_seed0.json", folder / "0100_case1_seed0.json")
    monkeypatch.chdir(tmp_path)
    assert main(["table", "--machines"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("results/cpu-x: 9 records, 9 finished; torch 2.14.1+cu130; 2 settings: synthetic data (24")
    assert " | synthetic data (120 train / 40 val), 3 epochs" in line


def test_no_machine_folder_is_a_one_liner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(REPO / "results" / "published", tmp_path / "results" / "published")  # a fresh clone's results/
    monkeypatch.chdir(tmp_path)
    assert main(["table", "--machines"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("no run records in results: `hgbench run` writes them to results/<machine>/")
    assert "--results results/published" in out


def test_machines_takes_no_table_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["table", "--machines", "--format", "csv", "--results", str(tmp_path)])
    assert stop.value.code == 2
    assert "--machines lists folders, it prints no table; drop --format" in capsys.readouterr().err
