"""`hgbench evaluate --predictions`: outputs, saved predictions, pictures and bad input (one line, non-zero exit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from hgbench.cli import main
from hgbench.data.groundtruth import GroundTruth, save_ground_truth


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A 3-person ground truth (head size 6 px) and predictions exactly at it, as .mat files."""
    rng = np.random.default_rng(0)
    joints = rng.uniform(50, 250, size=(3, 16, 2))
    gt = GroundTruth(joints, np.zeros((3, 16), dtype=bool), np.tile([[0.0, 0.0], [6.0, 8.0]], (3, 1, 1)))
    save_ground_truth(tmp_path / "gt.mat", gt)
    preds = joints.copy()
    preds[0, 8, 0] += 10.0  # person 0's neck wrong: Mean = (14 * 3 - 1) / 42
    savemat(str(tmp_path / "pred.mat"), {"preds": preds})
    return tmp_path / "pred.mat", tmp_path / "gt.mat", preds


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_csv_prints_exactly_two_lines(tiny, capsys) -> None:
    pred, gt, _ = tiny
    rc, out, err = run(capsys, "--predictions", pred, "--ground-truth", gt, "--format", "csv")
    assert rc == 0
    assert out == "Head,Shoulder,Elbow,Wrist,Hip,Knee,Ankle,Mean\n" + ",".join(["100.00"] * 7 + ["97.62"]) + "\n"


def test_table(tiny, capsys) -> None:
    pred, gt, _ = tiny
    rc, out, _ = run(capsys, "--predictions", pred, "--ground-truth", gt)
    lines = out.splitlines()
    assert rc == 0
    assert lines[0] == "Final validation PCKh scores:"
    assert lines[1].split() == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean"]
    assert lines[2].split()[-1] == "97.62"


def test_json_and_save_predictions(tiny, capsys, tmp_path: Path) -> None:
    pred, gt, preds = tiny
    saved = tmp_path / "again.mat"
    rc, out, err = run(
        capsys, "--predictions", pred, "--ground-truth", gt, "--format", "json", "--save-predictions", saved
    )
    doc = json.loads(out)  # stdout is pure JSON; the note about the saved file is on stderr
    assert rc == 0
    assert doc["pckh"]["Mean"] == pytest.approx(100 * 41 / 42)
    assert doc["pckh"]["count"] == 3
    assert doc["predictions"] == str(pred)
    assert "wrote predictions" in err
    from hgbench.eval.predictions import load_predictions

    np.testing.assert_array_equal(load_predictions(saved), preds)


def bad(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    rc, out, err = run(capsys, *argv)
    assert rc != 0
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("hgbench: error: ")
    assert "Traceback" not in err
    return err


def test_missing_predictions_file(tiny, capsys, tmp_path: Path) -> None:
    _, gt, _ = tiny
    assert "not found" in bad(capsys, "--predictions", tmp_path / "nope.mat", "--ground-truth", gt)


def test_missing_ground_truth_file(tiny, capsys, tmp_path: Path) -> None:
    pred, _, _ = tiny
    assert "not found" in bad(capsys, "--predictions", pred, "--ground-truth", tmp_path / "nope.mat")


def test_wrong_shape(tiny, capsys, tmp_path: Path) -> None:
    _, gt, _ = tiny
    savemat(str(tmp_path / "p.mat"), {"preds": np.zeros((3, 14, 2))})
    assert "(3, 14, 2)" in bad(capsys, "--predictions", tmp_path / "p.mat", "--ground-truth", gt)


def test_nan_predictions(tiny, capsys, tmp_path: Path) -> None:
    _, gt, preds = tiny
    preds = preds.copy()
    preds[2, :, :] = np.nan
    savemat(str(tmp_path / "p.mat"), {"preds": preds})
    assert "16 joints of 1 of 3 people" in bad(capsys, "--predictions", tmp_path / "p.mat", "--ground-truth", gt)


def test_people_count_must_match(tiny, capsys, tmp_path: Path) -> None:
    _, gt, preds = tiny
    savemat(str(tmp_path / "p.mat"), {"preds": preds[:2]})
    err = bad(capsys, "--predictions", tmp_path / "p.mat", "--ground-truth", gt)
    assert "2 people" in err
    assert "holds 3" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],  # neither source
        ["--predictions", "a.mat", "--checkpoint", "c.pt"],  # both
        ["--predictions", "a.mat", "--visualize", "2"],  # no --out
        ["--predictions", "a.mat", "--visualize", "2", "--out", "d"],  # no --data-dir for the images
        ["--predictions", "a.mat", "--flip"],  # checkpoint-only flag
        ["--checkpoint", "c.pt", "--ground-truth", "g.mat"],
        ["--checkpoint", "c.pt", "--workers", "-1"],
    ],
)
def test_misuse_is_a_usage_error(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", *argv])
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_published_predictions_with_bundled_ground_truth_and_pictures(shared_mpii, mpii_sample, capsys, tmp_path):
    """detections_our_format.mat's own pos_pred_src against the bundled copy of its ground truth, 3 pictures."""
    rc, out, err = run(
        capsys,
        "--predictions",
        shared_mpii / "detections_our_format.mat",
        "--format",
        "csv",
        "--visualize",
        "3",
        "--out",
        tmp_path / "pics",
        "--data-dir",
        mpii_sample,
    )
    assert rc == 0
    assert out.splitlines()[1] == "95.60,92.71,83.36,76.74,81.93,73.36,65.45,81.46"
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == [
        "0000_005808361.png",
        "0001_052475643.png",
        "0002_051423444.png",
    ]
    assert "wrote 3 PNGs" in err


def test_checkpoint_branch_wiring(tiny, capsys, monkeypatch, tmp_path: Path) -> None:
    """Only the wiring: the inference pass is replaced by a stub that checks the call against the real signature."""
    import inspect
    from types import SimpleNamespace

    inference = pytest.importorskip("hgbench.run.scoring")
    from hgbench.data.groundtruth import load_ground_truth

    _, gt_path, preds = tiny
    real = inspect.signature(inference.evaluate_checkpoint)
    calls: list[dict] = []

    def stub(**kwargs: object) -> SimpleNamespace:
        real.bind(**kwargs)  # raises TypeError if the command passes something the real function does not take
        calls.append(kwargs)
        return SimpleNamespace(
            predictions=preds,
            ground_truth=load_ground_truth(gt_path),
            images=[],
            timing={"wall_s": 1.25, "images": 3},
            case="3",
        )

    monkeypatch.setattr(inference, "evaluate_checkpoint", stub)
    rc, out, _ = run(capsys, "--checkpoint", tmp_path / "c.pt", "--flip", "--batch", "4", "--format", "json")
    assert rc == 0
    assert calls[0]["flip"] is True
    assert calls[0]["batch_size"] == 4
    doc = json.loads(out)
    assert doc["case"] == "3"
    assert doc["timing"]["wall_s"] == 1.25
    assert doc["pckh"]["Mean"] == pytest.approx(100 * 41 / 42)


def test_a_trained_checkpoint_is_scored_for_real(synthetic_root: Path, tmp_path: Path, capsys) -> None:
    """No stub: a run's checkpoint, evaluated on the same validation people, gives the run's own final PCKh."""
    from conftest import tiny_config

    from hgbench.run.runner import run as train

    config = tiny_config(tmp_path, synthetic_root, flip_test=False)
    outcome = train(config, progress=False)
    rc, out, _ = run(
        capsys,
        "--checkpoint",
        outcome.checkpoint_path,
        "--data-dir",
        synthetic_root,
        "--limit",
        "6",
        "--batch",
        "4",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--format",
        "json",
    )
    assert rc == 0
    doc = json.loads(out)
    assert doc["case"] == "hg1"
    assert doc["timing"]["images"] == 6
    assert doc["timing"]["wall_s"] > 0
    assert doc["pckh"]["Mean"] == pytest.approx(outcome.record["results"]["pckh"]["Mean"], abs=1e-6)


def test_visualize_into_an_unwritable_folder_fails_before_scoring(tiny, capsys, monkeypatch, tmp_path: Path) -> None:
    """The output folder is checked first, as `run` does: no scoring (minutes on a real split) before the error."""
    inference = pytest.importorskip("hgbench.run.scoring")
    calls: list[dict] = []
    monkeypatch.setattr(inference, "evaluate_checkpoint", lambda **kwargs: calls.append(kwargs))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    rc, _, err = run(capsys, "--checkpoint", tmp_path / "c.pt", "--visualize", "2", "--out", blocker / "pics")
    assert rc == 2
    assert err.startswith("hgbench: error: cannot write to")
    assert calls == []
