"""Known-answer tests of `hgbench.eval.decoding`: heatmap accuracy counts, peak decoding, the flip test and its
geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgbench.data.transforms import apply_affine, heatmap_matrix
from hgbench.errors import HGBenchError
from hgbench.eval.decoding import (
    HeatmapAccuracyMeter,
    average_flip,
    flip_back,
    get_heatmap_maxima,
    heatmap_acc_counts,
    heatmap_accuracy,
    heatmap_to_image,
)
from hgbench.eval.metrics import heatmap_acc_from_counts
from hgbench.spec.skeleton import FLIP_INDEX, NUM_JOINTS


def gaussian_heatmaps(points: np.ndarray, res: int = 64, sigma: float = 1.0) -> np.ndarray:
    """[N, K, res, res] Gaussians of peak 1 centred on the sub-pixel points [N, K, 2] (pixel-centre coordinates)."""
    g = np.arange(res, dtype=np.float64)
    dx2 = (g[None, None, None, :] - points[..., 0, None, None]) ** 2
    dy2 = (g[None, None, :, None] - points[..., 1, None, None]) ** 2
    return np.exp(-(dx2 + dy2) / (2 * sigma**2)).astype(np.float32)


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
    pred = peaks_to_heatmaps(
        {(0, j): (30 + offsets.get(j, (0, 0))[0], 30 + offsets.get(j, (0, 0))[1]) for j in range(NUM_JOINTS)}
    )
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
