"""Absurd sizes are refused before anything is allocated, in one line: predictions files, networks, inputs, data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.io import savemat

from hgbench.cli import main
from hgbench.config import RunConfig
from hgbench.errors import DataError
from hgbench.evaluation import load_predictions


def _never_read(*args: object, **kwargs: object) -> None:
    raise AssertionError("the variable's data was read")


def test_a_predictions_mat_bomb_is_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = tmp_path / "bomb.mat"
    savemat(str(bomb), {"preds": np.zeros((2000, 2000))}, do_compression=True)  # 32 MB of zeros in ~30 KB
    assert bomb.stat().st_size < 2**20
    monkeypatch.setattr(scipy.io, "loadmat", _never_read)
    with pytest.raises(DataError, match=r"'preds' is declared with shape \(2000, 2000\), which cannot be predictions"):
        load_predictions(bomb)


def test_too_many_people_are_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    many = tmp_path / "many.mat"
    savemat(str(many), {"pos_pred_src": np.zeros((16, 2, 100_001), dtype=np.uint8)}, do_compression=True)
    monkeypatch.setattr(scipy.io, "loadmat", _never_read)
    with pytest.raises(DataError, match=r"0 < N <= 100,000"):
        load_predictions(many)
    npy = tmp_path / "many.npy"
    np.save(npy, np.zeros((100_001, 16, 2), dtype=np.uint8))
    with pytest.raises(DataError, match=r"'array' is declared with shape \(100001, 16, 2\)"):
        load_predictions(npy)


def test_the_cli_says_so_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bomb = tmp_path / "bomb.mat"
    savemat(str(bomb), {"preds": np.zeros((2000, 2000))}, do_compression=True)
    assert main(["evaluate", "--predictions", str(bomb)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot be predictions" in err


def test_an_exception_escaping_training_is_a_failed_record_and_one_line(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import cv2

    import hgbench.runner as runner

    def broken(*args: object, **kwargs: object) -> None:  # what cv2 raises on a crop it cannot make
        raise cv2.error("OpenCV(4.12.0) error: (-215:Assertion failed) dsize.area() > 0 in function 'warpAffine'\n")

    monkeypatch.setattr(runner, "train_one_epoch", broken)
    argv = ["run", "--case", "hg1", "--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir, "--quiet"]
    argv += ["--epochs", "1", "--batch", "4", "--input-res", "64", "--limit-train", "8", "--limit-val", "6"]
    assert main([*argv, "--out", tiny.out, "--checkpoint-dir", tiny.checkpoint_dir]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "stopped in epoch 1 by error: OpenCV" in err
    [path] = list(Path(tiny.out).rglob("*.json"))
    record = json.loads(path.read_text())
    assert record["status"] == "failed"
    assert record["status_reason"].startswith("stopped in epoch 1 by error: OpenCV")
