"""Absurd sizes are refused before anything is allocated, in one line: predictions files, networks, inputs, data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from scipy.io import savemat

from hgbench.cli import main
from hgbench.errors import DataError
from hgbench.eval.predictions import load_predictions
from hgbench.spec.config import RunConfig


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

    import hgbench.run.runner as runner

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


def _run_argv(tiny: RunConfig, *extra: str) -> list[str]:
    argv = ["run", "--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir, "--quiet", "--epochs", "1"]
    return [*argv, "--out", tiny.out, "--checkpoint-dir", tiny.checkpoint_dir, *extra]


def _refused(capsys: pytest.CaptureFixture, argv: list[str], tiny: RunConfig) -> str:
    """The one error line of a command that must stop before writing anything."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    for folder in (Path(tiny.out), Path(tiny.checkpoint_dir)):  # no record, not even an interrupted one
        assert not [p for p in folder.rglob("*") if p.is_file()]
    return err


@pytest.mark.parametrize(
    ("field", "value"), [("num_stacks", 10**9), ("num_feats", 10**8), ("num_blocks", 10**9), ("level_units", 10**9)]
)
def test_a_variant_too_large_for_this_machine_is_refused_before_it_is_built(
    tiny: RunConfig, tmp_path: Path, capsys: pytest.CaptureFixture, field: str, value: int
) -> None:
    variant = tmp_path / "huge.toml"
    variant.write_text(f'name = "huge"\n{field} = {value}\n')
    err = _refused(capsys, _run_argv(tiny, "--case", str(variant)), tiny)
    assert "of weights alone, more than this machine's" in err


def test_an_input_no_memory_holds_is_refused_with_what_fits(tiny: RunConfig, capsys: pytest.CaptureFixture) -> None:
    err = _refused(capsys, _run_argv(tiny, "--case", "hg1", "--input-res", "1000000", "--batch", "4"), tiny)
    assert "at input 1000000x1000000, batch 4 per process, needs about" in err
    assert "the largest --input-res that fits at --batch 4 is about" in err


def test_the_largest_batch_that_fits_is_named(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import re

    import hgbench.run.plan as plan
    from hgbench.spec.cases import get_spec
    from hgbench.spec.footprint import training_bytes

    monkeypatch.setattr(plan, "host_available_bytes", lambda: 2 * 2**30)
    err = _refused(capsys, _run_argv(tiny, "--case", "hg1", "--input-res", "256", "--batch", "100000"), tiny)
    fits = int(re.search(r"the largest --batch that fits is about (\d+)", err).group(1))
    need = [training_bytes(get_spec("hg1"), input_res=256, batch=b, optimizer="adam") for b in (fits, fits + 1)]
    assert need[0] <= 2 * 2**30 < need[1]


def test_a_synthetic_dataset_larger_than_the_disk_is_refused_at_once(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    import hgbench.data.synthetic as synthetic

    usage = shutil.disk_usage("/")
    monkeypatch.setattr(synthetic.shutil, "disk_usage", lambda _: usage._replace(free=100 * 2**30))
    argv = _run_argv(tiny, "--case", "hg1", "--input-res", "64", "--batch", "4", "--synthetic", str(10**9))
    argv.remove("--data-dir")
    argv.remove(tiny.data_dir)
    err = _refused(capsys, argv, tiny)
    assert "a synthetic dataset of 1,000,000,000 people at 320x240 needs at least" in err
    assert "100.0 GiB free" in err


def test_the_people_per_image_layout_is_linear_and_unchanged() -> None:
    import numpy as np

    from hgbench.data.synthetic import _layout

    sizes = _layout(np.random.default_rng(0), 50_000)  # quadratic before: 200,000 people took 4 minutes here
    assert sum(sizes) == 50_000
    assert set(sizes) <= {1, 2, 3}
    assert _layout(np.random.default_rng(0), 10) == [2, 1, 1, 1, 3, 2]  # the same draws as 0.2.0: the same datasets


def _every_spec() -> list:
    from dataclasses import replace

    from hgbench.spec.cases import get_spec, list_cases

    specs = [get_spec(n) for n in list_cases()]
    specs += [get_spec(n, as_built=True) for n in list_cases() if n.isdigit()]
    hg1 = get_spec("hg1")
    specs.append(replace(hg1, name="x", num_blocks=3, depths=(2,), num_joints=5, level_units=4, bottleneck_steps=4))
    specs.append(
        replace(hg1, name="y", num_stacks=2, num_feats=16, depths=(1, 3), bottleneck_steps=4, share_extra_step=True)
    )
    return specs


@pytest.mark.parametrize("spec", _every_spec(), ids=lambda s: s.label)
def test_the_parameter_count_from_the_spec_is_exact(spec) -> None:
    import torch

    from hgbench.models import build_model
    from hgbench.spec.footprint import spec_params

    with torch.device("meta"):
        model = build_model(spec)
    assert spec_params(spec) == sum(p.numel() for p in model.parameters())


def test_a_ground_truth_mat_bomb_is_refused_from_its_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--ground-truth` is a file from elsewhere too: its declared shapes are checked before any data is read."""
    from hgbench.data.groundtruth import load_ground_truth

    n = 2000
    bomb = tmp_path / "gt.mat"
    fields = {
        "pos_gt_src": np.zeros((16, 2, n)),
        "jnt_missing": np.zeros((2000, 2000)),
        "headboxes_src": np.zeros((2, 2, n)),
    }
    savemat(str(bomb), fields, do_compression=True)
    monkeypatch.setattr(scipy.io, "loadmat", _never_read)
    with pytest.raises(DataError, match=r"jnt_missing \(2000, 2000\).*expected 16x2xN, 16xN, 2x2xN .*; not read"):
        load_ground_truth(bomb)
    many = tmp_path / "many.mat"
    n = 100_001
    fields = {"pos_gt_src": np.zeros((16, 2, n), np.uint8), "jnt_missing": np.zeros((16, n), np.uint8),
              "headboxes_src": np.zeros((2, 2, n), np.uint8)}  # fmt: skip
    savemat(str(many), fields, do_compression=True)
    with pytest.raises(DataError, match=r"0 < N <= 100,000; not read"):
        load_ground_truth(many)
