"""Known-answer tests of `hgbench.eval.metrics`: PCKh conventions and the study's PCKh layout."""

from __future__ import annotations

import numpy as np
import pytest

from hgbench.data.groundtruth import GroundTruth, load_ground_truth
from hgbench.errors import HGBenchError
from hgbench.eval.metrics import PCKhResult, evaluate_pckh, pckh
from hgbench.spec.skeleton import NUM_JOINTS, PCKH_MEAN_JOINTS

HEAD = 6.0  # head size of `make_gt`: 0.6 x the diagonal of a 6 x 8 box (10 px)


def make_gt(n: int = 2, seed: int = 0) -> GroundTruth:
    """N people with joints scattered in a 200 px square and a 6 x 8 head box (head size exactly 6 px)."""
    rng = np.random.default_rng(seed)
    joints = rng.uniform(50, 250, size=(n, NUM_JOINTS, 2))
    boxes = np.tile(np.array([[100.0, 100.0], [106.0, 108.0]]), (n, 1, 1))
    return GroundTruth(joints=joints, missing=np.zeros((n, NUM_JOINTS), dtype=bool), headboxes=boxes)


def shifted(gt: GroundTruth, dx: float, joints: list[int] | None = None) -> np.ndarray:
    """Predictions equal to the ground truth, moved `dx` px along x at `joints` (all when None)."""
    pred = gt.joints.copy()
    pred[:, joints if joints is not None else slice(None), 0] += dx
    return pred


# ------------------------------------------------------------------------------------------------------- PCKh


def test_head_size_of_the_fixture() -> None:
    np.testing.assert_allclose(make_gt().head_size, HEAD)


def test_prediction_at_ground_truth_is_100() -> None:
    gt = make_gt()
    r = evaluate_pckh(gt.joints.copy(), gt)
    np.testing.assert_array_equal(r.per_joint, 100.0)
    assert r.mean == r.mean_weighted == r.mean_at_0_1 == 100.0
    assert all(v == 100.0 for v in r.parts.values())
    assert r.count == 2
    np.testing.assert_array_equal(r.counts, 2)


@pytest.mark.parametrize(("dx", "expected"), [(2.99, 100.0), (3.01, 0.0), (-2.99, 100.0), (-3.01, 0.0)])
def test_just_inside_and_just_outside_half_a_head(dx: float, expected: float) -> None:
    gt = make_gt()  # 0.5 head sizes = 3 px
    r = evaluate_pckh(shifted(gt, dx), gt)
    np.testing.assert_array_equal(r.per_joint, expected)
    assert r.mean == expected


def test_threshold_is_strict() -> None:
    gt = make_gt()
    pck, _ = pckh(shifted(gt, 3.0), gt.joints, gt.missing, gt.head_size, 0.5)  # exactly 0.5 head sizes
    np.testing.assert_array_equal(pck, 0.0)


def test_missing_joints_are_ignored() -> None:
    gt = make_gt(n=2)
    missing = gt.missing.copy()
    missing[1, 3] = True  # person 1's l_hip is not annotated ...
    gt = GroundTruth(gt.joints, missing, gt.headboxes)
    pred = gt.joints.copy()
    pred[1, 3] += 500.0  # ... so its wild prediction counts neither way
    r = evaluate_pckh(pred, gt)
    assert r.per_joint[3] == 100.0
    assert r.counts[3] == 1
    assert r.mean == 100.0


def test_joint_never_annotated_is_nan_and_left_out() -> None:
    gt = make_gt(n=2)
    missing = gt.missing.copy()
    missing[:, 0] = True
    r = evaluate_pckh(gt.joints.copy(), GroundTruth(gt.joints, missing, gt.headboxes))
    assert np.isnan(r.per_joint[0])
    assert r.counts[0] == 0
    assert r.parts["Ankle"] == 100.0  # the right ankle has no samples: the part is the left ankle alone
    assert r.mean == 100.0
    assert r.to_dict()["per_joint"][0] is None


def test_pelvis_and_thorax_are_excluded_from_mean() -> None:
    gt = make_gt()
    r = evaluate_pckh(shifted(gt, 50.0, joints=[6, 7]), gt)
    assert r.per_joint[6] == r.per_joint[7] == 0.0
    assert r.mean == r.mean_weighted == 100.0


def test_upper_neck_is_in_the_mean_though_no_column_shows_it() -> None:
    gt = make_gt()
    r = evaluate_pckh(shifted(gt, 50.0, joints=[8]), gt)
    assert all(v == 100.0 for v in r.parts.values())
    assert r.mean == pytest.approx(100.0 * 13 / 14)
    assert len(PCKH_MEAN_JOINTS) == 14
    assert 8 in PCKH_MEAN_JOINTS


def test_parts_average_left_and_right() -> None:
    gt = make_gt(n=2)
    pred = gt.joints.copy()
    pred[0, 12, 0] += 50.0  # person 0's right shoulder wrong: r_sho 50 %, l_sho 100 %
    r = evaluate_pckh(pred, gt)
    assert r.parts["Shoulder"] == 75.0
    assert r.parts["Head"] == 100.0


def test_weighted_and_unweighted_means_differ_when_counts_differ() -> None:
    gt = make_gt(n=2)
    missing = gt.missing.copy()
    missing[1, 0] = True  # r_ankle annotated once ...
    gt = GroundTruth(gt.joints, missing, gt.headboxes)
    r = evaluate_pckh(shifted(gt, 50.0, joints=[0]), gt)  # ... and wrong there
    assert r.per_joint[0] == 0.0
    assert r.counts[0] == 1
    assert r.mean == pytest.approx(100.0 * 13 / 14)  # 13 joints at 100 %, one at 0 %
    assert r.mean_weighted == pytest.approx(100.0 * 26 / 27)  # 26 correct of 27 annotated


def test_pckh_at_0_1() -> None:
    gt = make_gt()  # 0.1 head sizes = 0.6 px
    even = list(range(0, NUM_JOINTS, 2))
    pred = shifted(gt, 0.5)  # within 0.1 everywhere ...
    pred[:, even, 0] += 0.5  # ... except the even joints (1 px): right at 0.5, wrong at 0.1
    r = evaluate_pckh(pred, gt)
    assert r.mean == 100.0
    mean_even = [j for j in PCKH_MEAN_JOINTS if j % 2 == 0]
    assert r.mean_at_0_1 == pytest.approx(100.0 * (14 - len(mean_even)) / 14)


def test_threshold_sweep_broadcasts_and_matches_scalar_calls() -> None:
    gt = make_gt(n=5, seed=3)
    rng = np.random.default_rng(1)
    pred = gt.joints + rng.normal(scale=3.0, size=gt.joints.shape)
    thr = np.linspace(0.0, 1.0, 11)
    sweep, count = pckh(pred, gt.joints, gt.missing, gt.head_size, thr)
    assert sweep.shape == (11, NUM_JOINTS)
    assert count.shape == (NUM_JOINTS,)
    for t, row in zip(thr, sweep, strict=True):
        np.testing.assert_array_equal(row, pckh(pred, gt.joints, gt.missing, gt.head_size, t)[0])
    assert (np.diff(sweep, axis=0) >= 0).all()


def test_pckh_does_not_mutate_inputs() -> None:
    gt = make_gt(n=3)
    pred = gt.joints + 1.0
    args = [pred, gt.joints, gt.missing, gt.head_size]
    before = [a.copy() for a in args]
    pckh(*args, np.array([0.1, 0.5]))
    for a, b in zip(args, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_shape_mismatch_names_both_shapes() -> None:
    gt = make_gt(n=2)
    with pytest.raises(HGBenchError, match=r"\(3, 16, 2\).*\(2, 16, 2\)"):
        evaluate_pckh(np.zeros((3, 16, 2)), gt)


def test_nan_predictions_say_how_many() -> None:
    gt = make_gt(n=3)
    pred = gt.joints.copy()
    pred[0, 1, 0] = np.nan
    pred[2, 4] = np.inf
    with pytest.raises(HGBenchError, match=r"2 joints of 2 of 3 people"):
        evaluate_pckh(pred, gt)


def test_to_dict_keys() -> None:
    gt = make_gt()
    d = evaluate_pckh(gt.joints.copy(), gt).to_dict()
    assert list(d) == [
        "Head",
        "Shoulder",
        "Elbow",
        "Wrist",
        "Hip",
        "Knee",
        "Ankle",
        "Mean",
        "mean_weighted",
        "mean_at_0.1",
        "per_joint",
        "count",
        "ci95",
        "per_person",
    ]
    assert len(d["per_joint"]) == 16
    assert d["count"] == 2
    assert d["ci95"] == [100.0, 100.0]  # every joint right in every resample
    assert isinstance(d["Mean"], float)


def reference_eval_pckh(pos_pred_src: np.ndarray, mat: dict) -> tuple[np.ndarray, float]:
    """The common Python evaluator's arithmetic (bearpaw/pytorch-pose evaluation/eval_PCKh.py), for a cross-check."""
    jnt_visible = 1 - mat["jnt_missing"]
    uv_err = np.linalg.norm(pos_pred_src - mat["pos_gt_src"], axis=1)
    headsizes = 0.6 * np.linalg.norm(mat["headboxes_src"][1] - mat["headboxes_src"][0], axis=0)
    scaled = uv_err / (headsizes * np.ones((len(uv_err), 1))) * jnt_visible
    less = (scaled < 0.5) * jnt_visible
    per_joint = 100.0 * less.sum(axis=1) / jnt_visible.sum(axis=1)
    masked = np.ma.array(per_joint, mask=False)
    masked.mask[6:8] = True
    return per_joint, float(np.mean(masked))


def test_published_predictions_of_the_real_ground_truth(shared_mpii) -> None:
    """`pos_pred_src` of detections_our_format.mat: Tompson et al.'s predictions, Mean 81.46 (measured)."""
    from scipy.io import loadmat

    mat = loadmat(str(shared_mpii / "detections_our_format.mat"))
    gt = load_ground_truth(shared_mpii / "detections_our_format.mat")
    r = evaluate_pckh(np.transpose(mat["pos_pred_src"], (2, 0, 1)), gt)
    ref_per_joint, ref_mean = reference_eval_pckh(mat["pos_pred_src"], mat)
    np.testing.assert_allclose(r.per_joint, ref_per_joint, atol=1e-9)
    assert r.mean == pytest.approx(ref_mean, abs=1e-9)
    assert r.count == 2958
    got = {**{k: round(v, 2) for k, v in r.parts.items()}, "Mean": round(r.mean, 2)}
    assert got == {
        "Head": 95.60,
        "Shoulder": 92.71,
        "Elbow": 83.36,
        "Wrist": 76.74,
        "Hip": 81.93,
        "Knee": 73.36,
        "Ankle": 65.45,
        "Mean": 81.46,
    }
    assert round(r.mean_weighted, 2) == 82.34
    assert round(r.mean_at_0_1, 2) == 28.40


def test_pckh_result_is_frozen() -> None:
    gt = make_gt()
    r = evaluate_pckh(gt.joints.copy(), gt)
    assert isinstance(r, PCKhResult)
    with pytest.raises(AttributeError):
        r.mean = 0.0  # type: ignore[misc]
