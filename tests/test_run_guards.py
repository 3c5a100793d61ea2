"""A run refuses what it cannot do before it writes anything, and never leaves a record that claims more than is true.

Each of these once escaped as a traceback, or wrote a stray record, or trained an epoch before failing.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from test_runner import _argv, _tiny_argv

from hgbench.cli import main
from hgbench.data.groundtruth import GT_FILENAME
from hgbench.errors import HGBenchError
from hgbench.run import plan, recorder
from hgbench.run import runner as runner_module
from hgbench.run.runner import run
from hgbench.spec.config import RunConfig
from hgbench.train import checkpoint
from hgbench.train.checkpoint import load_checkpoint


def _records(tiny: RunConfig) -> list[Path]:
    return sorted(Path(tiny.out).rglob("*.json"))


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--workers", "-1"), "--workers must be 0 or more, got -1"),
        (("--seed", "-1"), "--seed must be 0 or more, got -1"),
        (("--lr", "-1"), "--lr must be a finite number, 0 or more, got -1.0"),
        (("--lr", "nan"), "--lr must be a finite number"),
        (("--synthetic", "1"), "--synthetic must be at least 2"),
        (("--limit-val", "0"), "--limit-val must be at least 1, got 0"),
    ],
)
def test_a_setting_no_run_can_use_is_one_line_and_writes_nothing(
    tiny: RunConfig, flags: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _tiny_argv(tiny, "--case", "hg1", *flags)
    if flags[0] == "--synthetic":  # the synthetic default, not the tiny dataset folder
        argv = [a for i, a in enumerate(argv) if a != "--data-dir" and argv[i - 1] != "--data-dir"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hgbench: error: ")
    assert says in err
    assert len(err.splitlines()) == 1
    assert not _records(tiny)


def test_case_all_with_a_bad_setting_says_it_once(tiny: RunConfig, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_tiny_argv(tiny, "--case", "all", "--workers", "-2")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hgbench: error: --workers must be 0 or more, got -2"


def test_resume_never_starts_the_run_over_when_its_checkpoint_is_gone(
    tiny: RunConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    killed = run(replace(tiny, epochs=2), progress=False, stop_after_epoch=1)
    moved = Path(tiny.out).parent / "elsewhere.pt"
    shutil.move(killed.checkpoint_path, moved)
    capsys.readouterr()
    for target in (killed.record_path, moved):
        assert main(_argv(tiny, "--case", "hg1", "--resume", str(target))) == 2
        err = capsys.readouterr().err.strip()
        assert "--resume: the run's checkpoint" in err
        assert "nothing was started" in err
        assert len(err.splitlines()) == 1
    assert _records(tiny) == [killed.record_path]  # no second record, no epoch 1 trained again
    assert json.loads(killed.record_path.read_text())["status"] == "interrupted"


def test_a_disk_too_full_for_a_checkpoint_is_an_error_before_training(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tiny.data_dir)
    # Room for the records (the folder check's minimum), not for a checkpoint of the network.
    tight = usage._replace(free=plan.MIN_FREE_BYTES + 2**10)
    monkeypatch.setattr(plan.shutil, "disk_usage", lambda path: tight)
    with pytest.raises(HGBenchError, match=r"a checkpoint of hg1 needs about \d+ MiB"):
        run(tiny, progress=False)
    assert not _records(tiny)


def test_a_checkpoint_write_that_fails_is_one_line_and_keeps_the_record(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch.save reports ENOSPC as a RuntimeError, which no OSError handler sees."""
    real_save = checkpoint.torch.save
    saves = []

    def full_on_the_second(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                "data/3: file write failed"
            )
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_on_the_second)
    assert main(_tiny_argv(tiny, "--case", "hg1", "--epochs", "2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "cannot write checkpoint" in err
    assert "continue with --resume" in err
    [path] = _records(tiny)
    record = json.loads(path.read_text())
    assert record["status"] == "interrupted"
    assert len(record["results"]["epochs"]) == 1 == load_checkpoint(record["checkpoint"]).epoch
    assert not list(Path(tiny.checkpoint_dir).rglob("*.tmp"))


def test_a_signal_while_the_checkpoint_is_saved_leaves_the_record_no_ahead_of_it(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = recorder.save_checkpoint

    def stopped_in_the_second(path, payload):
        if payload["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(path, payload)

    monkeypatch.setattr(recorder, "save_checkpoint", stopped_in_the_second)
    with pytest.raises(KeyboardInterrupt):
        run(replace(tiny, epochs=3), progress=False)
    [path] = _records(tiny)
    record = json.loads(path.read_text())
    assert record["status"] == "interrupted"
    assert len(record["results"]["epochs"]) == load_checkpoint(record["checkpoint"]).epoch == 1
    assert "epochs 1-1 are checkpointed" in record["status_reason"]


def test_a_damaged_ground_truth_file_stops_the_run_before_it_trains(
    tiny: RunConfig, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    (root / GT_FILENAME).write_bytes(b"not a MATLAB file")
    trained = []
    monkeypatch.setattr(runner_module, "train_one_epoch", lambda *a, **kw: trained.append(1))
    with pytest.raises(HGBenchError, match=GT_FILENAME):
        run(replace(tiny, data_dir=str(root)), progress=False)
    assert not trained
    assert not _records(tiny)


def test_a_data_worker_killed_by_the_kernel_is_a_failed_record_and_one_line(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def worker_killed(*args: object, **kwargs: object) -> None:
        raise RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")

    monkeypatch.setattr(runner_module, "train_one_epoch", worker_killed)
    assert main(_tiny_argv(tiny, "--case", "hg1")) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "killed by signal: Killed" in err
    assert "fewer --workers" in err
    [path] = _records(tiny)
    assert json.loads(path.read_text())["status"] == "failed"
