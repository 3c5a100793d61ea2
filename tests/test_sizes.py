"""Absurd sizes are refused before anything is allocated, in one line: predictions files, networks, inputs, data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.io import savemat

from hgbench.cli import main
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
