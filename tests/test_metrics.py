"""Known-answer tests of `hgbench.metrics`: PCKh conventions, heatmap accuracy, heatmap decoding and its geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgbench.data.transforms import apply_affine, heatmap_matrix
from hgbench.errors import HGBenchError
from hgbench.groundtruth import GroundTruth, load_ground_truth
from hgbench.metrics import (
    HeatmapAccuracyMeter,
    PCKhResult,
    average_flip,
    evaluate_pckh,
    flip_back,
    get_heatmap_maxima,
    heatmap_acc_counts,
    heatmap_acc_from_counts,
    heatmap_accuracy,
    heatmap_to_image,
    pckh,
)
from hgbench.skeleton import FLIP_INDEX, NUM_JOINTS, PCKH_MEAN_JOINTS

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


def gaussian_heatmaps(points: np.ndarray, res: int = 64, sigma: float = 1.0) -> np.ndarray:
    """[N, K, res, res] Gaussians of peak 1 centred on the sub-pixel points [N, K, 2] (pixel-centre coordinates)."""
    g = np.arange(res, dtype=np.float64)
    dx2 = (g[None, None, None, :] - points[..., 0, None, None]) ** 2
    dy2 = (g[None, None, :, None] - points[..., 1, None, None]) ** 2
    return np.exp(-(dx2 + dy2) / (2 * sigma**2)).astype(np.float32)


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
    assert list(d) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "mean_weighted",
                       "mean_at_0.1", "per_joint", "count"]  # fmt: skip
    assert len(d["per_joint"]) == 16
    assert d["count"] == 2
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
    assert got == {"Head": 95.60, "Shoulder": 92.71, "Elbow": 83.36, "Wrist": 76.74, "Hip": 81.93, "Knee": 73.36,
                   "Ankle": 65.45, "Mean": 81.46}  # fmt: skip
    assert round(r.mean_weighted, 2) == 82.34
    assert round(r.mean_at_0_1, 2) == 28.40


# ------------------------------------------------------------------------------------------- heatmap accuracy


def peaks_to_heatmaps(peaks: dict[tuple[int, int], tuple[int, int]], n: int = 1, res: int = 64) -> np.ndarray:
    """[n, 16, res, res] zeros with a 1 at (x, y) for each (sample, joint) key."""
    hm = np.zeros((n, NUM_JOINTS, res, res), dtype=np.float32)
    for (i, j), (x, y) in peaks.items():
        hm[i, j, y, x] = 1.0
    return hm


def test_heatmap_accuracy_known_answer() -> None:
    # 64 px heatmaps: norm 6.4 px, correct when the peaks are < 3.2 px apart.
    target = peaks_to_heatmaps({(0, j): (30, 30) for j in range(NUM_JOINTS)})
    target[0, 5] = 0.0  # l_ankle has an empty target: left out
    offsets = {0: (0, 0), 1: (3, 0), 2: (4, 0), 3: (2, 2), 4: (3, 2), 10: (0, 3), 11: (0, -4), 14: (0, 0), 15: (9, 9)}
    pred = peaks_to_heatmaps({(0, j): (30 + offsets.get(j, (0, 0))[0], 30 + offsets.get(j, (0, 0))[1])
                              for j in range(NUM_JOINTS)})  # fmt: skip
    acc = heatmap_accuracy(pred, target)
    expected = {0: 1, 1: 1, 2: 0, 3: 1, 4: 0, 10: 1, 11: 0, 14: 1, 15: 0}
    for j, v in expected.items():
        assert acc.per_joint[j] == v, j
    assert np.isnan(acc.per_joint[5])
    assert acc.counts[5] == 0
    assert acc.mean == pytest.approx(5 / 9)  # 9 counted joints of HEATMAP_ACC_JOINTS, 5 correct
    mean, per_joint, counts = acc  # unpacks as a tuple
    assert mean == acc.mean


def test_heatmap_accuracy_pools_counts_across_batches() -> None:
    rng = np.random.default_rng(0)
    pred = rng.random((6, NUM_JOINTS, 16, 16)).astype(np.float32)
    target = rng.random((6, NUM_JOINTS, 16, 16)).astype(np.float32)
    target[:2, 3] = 0.0
    whole = heatmap_accuracy(pred, target)
    meter = HeatmapAccuracyMeter()
    for s in (slice(0, 1), slice(1, 4), slice(4, 6)):
        meter.update(pred[s], target[s])
    pooled = meter.result()
    assert pooled.mean == pytest.approx(whole.mean)
    np.testing.assert_array_equal(pooled.counts, whole.counts)
    c1, n1 = heatmap_acc_counts(pred[:3], target[:3])
    c2, n2 = heatmap_acc_counts(pred[3:], target[3:])
    assert heatmap_acc_from_counts(c1 + c2, n1 + n2) == pytest.approx(whole.mean)


def test_heatmap_accuracy_torch_equals_numpy() -> None:
    rng = np.random.default_rng(1)
    pred, target = rng.random((2, 2, NUM_JOINTS, 8, 8)).astype(np.float32)
    a = heatmap_accuracy(pred, target)
    b = heatmap_accuracy(torch.from_numpy(pred), torch.from_numpy(target))
    assert a.mean == b.mean
    np.testing.assert_array_equal(a.counts, b.counts)
    correct, count = heatmap_acc_counts(torch.from_numpy(pred), torch.from_numpy(target))
    assert isinstance(correct, torch.Tensor)  # stays on the device: the loop accumulates without a host sync
    assert isinstance(count, torch.Tensor)
    np.testing.assert_array_equal(count.numpy(), a.counts)


def test_heatmap_accuracy_shape_mismatch() -> None:
    with pytest.raises(HGBenchError, match="differ in shape"):
        heatmap_accuracy(np.zeros((1, 16, 8, 8)), np.zeros((1, 16, 8, 9)))


# ------------------------------------------------------------------------------------------ heatmap decoding


def test_quarter_pixel_shift_toward_higher_neighbour() -> None:
    hm = np.zeros((1, 3, 16, 16), dtype=np.float32)
    hm[0, 0, 5, 10] = 1.0  # peak at (x 10, y 5) ...
    hm[0, 0, 5, 11] = 0.5  # ... right neighbour higher than left: x + 0.25
    hm[0, 0, 4, 10] = 0.3  # ... upper neighbour higher than lower: y - 0.25
    hm[0, 1, 7, 7] = 1.0  # isolated peak: equal neighbours, no shift
    hm[0, 2, 9, 0] = 1.0  # peak on the left border: no x shift ...
    hm[0, 2, 10, 0] = 0.5  # ... y still shifts toward the higher neighbour below
    for heatmaps in (hm, torch.from_numpy(hm)):
        coords, maxvals = get_heatmap_maxima(heatmaps)
        assert type(coords) is type(heatmaps)  # numpy in, numpy out; a tensor stays a tensor on its device
        np.testing.assert_array_equal(np.asarray(coords[0]), [[10.25, 4.75], [7.0, 7.0], [0.0, 9.25]])
        np.testing.assert_array_equal(np.asarray(maxvals[0]), [1.0, 1.0, 1.0])


def test_decoding_a_subpixel_gaussian_lands_within_half_a_pixel() -> None:
    rng = np.random.default_rng(2)
    points = rng.uniform(2, 61, size=(4, NUM_JOINTS, 2))
    coords, _ = get_heatmap_maxima(gaussian_heatmaps(points))
    coords_torch, _ = get_heatmap_maxima(torch.from_numpy(gaussian_heatmaps(points)))
    np.testing.assert_array_equal(coords_torch.numpy(), coords)
    err = np.linalg.norm(coords - points, axis=-1)
    assert err.max() < 0.5
    assert err.mean() < np.linalg.norm(np.round(points) - points, axis=-1).mean()  # the shift helps on average


def image_case(rot: float, flip: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 3
    center = rng.uniform(200, 600, size=(n, 2))
    scale = rng.uniform(1.5, 4.0, size=n)
    points = center[:, None] + rng.uniform(-150, 150, size=(n, NUM_JOINTS, 2))
    return points, center, scale, np.full(n, rot), np.full(n, flip)


@pytest.mark.parametrize("rot", [0.0, 27.5, -60.0])
def test_heatmap_to_image_round_trip(rot: float) -> None:
    points, center, scale, rots, _ = image_case(rot, False)
    hm = np.stack([apply_affine(points[i], heatmap_matrix(center[i], scale[i], rot, 256, 64)) for i in range(3)])
    back = heatmap_to_image(hm, center, scale, 256, 64, rotation=rots if rot else None)
    assert np.abs(back - points).max() < 1e-6


@pytest.mark.parametrize("rot", [0.0, 27.5])
def test_heatmap_to_image_round_trip_with_flip(rot: float) -> None:
    """With a mirrored crop, channel k is the person's joint FLIP_INDEX[k]: the caller swaps joints back."""
    points, center, scale, rots, flips = image_case(rot, True)
    mats = [heatmap_matrix(center[i], scale[i], rot, 256, 64, flip=True) for i in range(3)]
    mirrored = np.stack([apply_affine(points[i], mats[i]) for i in range(3)])
    network = mirrored[:, list(FLIP_INDEX)]  # what the network's channels hold for a mirrored input
    back = heatmap_to_image(network, center, scale, 256, 64, rotation=rots, flip=flips)[:, list(FLIP_INDEX)]
    assert np.abs(back - points).max() < 1e-6


def test_flip_back_is_an_exact_pixel_mirror_with_joint_swap() -> None:
    rng = np.random.default_rng(3)
    points = rng.uniform(5, 58, size=(2, NUM_JOINTS, 2))
    mirror_points = points.copy()
    mirror_points[..., 0] = 63 - points[..., 0]  # pixel-centre convention: x -> W - 1 - x
    of_mirror = gaussian_heatmaps(mirror_points[:, list(FLIP_INDEX)])  # the mirrored input's heatmaps
    for hm in (of_mirror, torch.from_numpy(of_mirror)):
        back = flip_back(hm)
        np.testing.assert_allclose(np.asarray(back), gaussian_heatmaps(points), atol=1e-6)
    np.testing.assert_allclose(average_flip(gaussian_heatmaps(points), of_mirror), gaussian_heatmaps(points), atol=1e-6)


def test_flip_test_pipeline_decodes_to_the_same_image_points() -> None:
    """Heatmaps of the mirrored crop, flipped back and decoded without flip, give the unflipped answer."""
    points, center, scale, _, _ = image_case(0.0, False)
    plain = np.stack([apply_affine(points[i], heatmap_matrix(center[i], scale[i], 0, 256, 64)) for i in range(3)])
    mirrored = np.stack(
        [apply_affine(points[i], heatmap_matrix(center[i], scale[i], 0, 256, 64, flip=True)) for i in range(3)]
    )
    inside = ((plain > 2) & (plain < 61)).all(axis=-1)  # [N, K] joints whose Gaussian fits in the heatmap
    assert inside.sum() > 10
    hm = flip_back(gaussian_heatmaps(mirrored[:, list(FLIP_INDEX)]))
    coords, _ = get_heatmap_maxima(hm)
    ref, _ = get_heatmap_maxima(gaussian_heatmaps(plain))
    np.testing.assert_allclose(coords[inside], ref[inside], atol=1e-9)


def test_heatmap_to_image_validates_shapes() -> None:
    with pytest.raises(HGBenchError, match="expected"):
        heatmap_to_image(np.zeros((2, 16, 2)), np.zeros((3, 2)), np.ones(2), 256, 64)


def test_pckh_result_is_frozen() -> None:
    gt = make_gt()
    r = evaluate_pckh(gt.joints.copy(), gt)
    assert isinstance(r, PCKhResult)
    with pytest.raises(AttributeError):
        r.mean = 0.0  # type: ignore[misc]
