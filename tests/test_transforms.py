"""Geometry and target drawing: the warp follows `crop_matrix`, heatmap peaks, augmentation ranges, round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgbench.data.transforms import (
    MPII_MEAN,
    NO_AUGMENTATION,
    adjust_center_scale,
    apply_affine,
    crop_matrix,
    draw_gaussians,
    heatmap_matrix,
    invert,
    sample_augmentation,
    to_input_tensor,
    warp_image,
)
from hgbench.spec.skeleton import FLIP_INDEX, JOINT_NAMES


def test_flip_index_swaps_left_and_right_and_is_an_involution() -> None:
    assert FLIP_INDEX == (5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10)
    for j, k in enumerate(FLIP_INDEX):
        assert FLIP_INDEX[k] == j
        name, other = JOINT_NAMES[j], JOINT_NAMES[k]
        if name.startswith(("l_", "r_")):
            assert other == {"l_": "r_", "r_": "l_"}[name[:2]] + name[2:]
        else:
            assert other == name


def test_adjust_center_scale_follows_the_protocol() -> None:
    c, s = adjust_center_scale((100.0, 50.0), 2.0)
    assert c.tolist() == [100.0, 80.0]
    assert s == 2.5


@pytest.mark.parametrize(("rot", "flip", "scale"), [(0.0, False, 0.5), (30.0, False, 0.6), (-45.0, True, 0.4)])
def test_warp_moves_image_content_where_crop_matrix_moves_points(rot: float, flip: bool, scale: float) -> None:
    """A bright blob warped with cv2 lands where `apply_affine` sends its centre (the pixel-centre convention)."""
    h, w = 150, 200
    p = np.array([83.3, 61.7])
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 3.0**2))
    image = np.repeat((blob * 255).astype(np.uint8)[..., None], 3, axis=2)
    m = crop_matrix((90.0, 70.0), scale, rot, 128, flip=flip)
    crop = warp_image(image, m, 128)[..., 0].astype(np.float64)
    v, u = np.mgrid[0:128, 0:128]
    centroid = np.array([(crop * u).sum(), (crop * v).sum()]) / crop.sum()
    assert np.abs(centroid - apply_affine(p, m)).max() < 0.15


def test_crop_and_heatmap_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 900, size=(16, 2))
    for rot, flip in [(0.0, False), (37.5, True), (-60.0, False)]:
        m = heatmap_matrix((400.0, 300.0), 3.1, rot, 256, 64, flip=flip)
        back = apply_affine(apply_affine(pts, m), invert(m))
        assert np.abs(back - pts).max() < 1e-9


def test_gaussian_peak_sits_on_the_nearest_pixel_with_value_one() -> None:
    pts = np.array([[10.4, 20.6], [0.0, 0.0], [-0.4, 3.0], [-0.6, 3.0], [63.4, 63.49], [63.6, 5.0], [30.0, 30.0]])
    annotated = np.array([True, True, True, True, True, True, False])
    heat, drawn = draw_gaussians(pts, annotated, 64, sigma=1.0)
    assert heat.shape == (7, 64, 64)
    assert heat.dtype == np.float32
    assert drawn.tolist() == [True, True, True, False, True, False, False]
    for j in np.flatnonzero(drawn):
        y, x = np.unravel_index(np.argmax(heat[j]), heat[j].shape)
        assert (x, y) == tuple(int(v) for v in np.floor(pts[j] + 0.5))
        assert heat[j].max() == pytest.approx(1.0)
    assert not heat[~drawn].any()
    # sigma 1: exp(-1/2) one pixel away, cut off beyond 3 pixels (the reference's 7x7 patch).
    assert heat[0, 21, 11] == pytest.approx(np.exp(-0.5), rel=1e-6)
    assert heat[0, 21, 13] > 0
    assert heat[0, 21, 14] == 0


def test_augmentation_ranges_and_rates() -> None:
    rng = np.random.default_rng(1)
    augs = [sample_augmentation(rng) for _ in range(4000)]
    scales = np.array([a.scale_factor for a in augs])
    rots = np.array([a.rotation for a in augs])
    gains = np.array([a.gain for a in augs])
    assert scales.min() >= 0.75
    assert scales.max() <= 1.25
    assert np.mean(scales == 1.25) == pytest.approx(0.16, abs=0.03)  # P(N > 1) clamped to the bound
    assert rots.min() >= -60
    assert rots.max() <= 60
    assert np.mean(rots == 0) == pytest.approx(0.4, abs=0.03)
    assert np.mean([a.flip for a in augs]) == pytest.approx(0.5, abs=0.03)
    assert gains.min() >= 0.8
    assert gains.max() <= 1.2
    same_seed = [sample_augmentation(np.random.default_rng([0, 1, 2])) for _ in range(2)]
    assert same_seed[0] == same_seed[1]
    assert NO_AUGMENTATION.scale_factor == 1.0
    assert not NO_AUGMENTATION.flip


def test_input_tensor_applies_gain_clamp_and_mean() -> None:
    crop = np.zeros((4, 4, 3), dtype=np.uint8)
    crop[0, 0] = (255, 128, 0)
    x = to_input_tensor(crop, (1.2, 0.5, 1.0))
    assert x.shape == (3, 4, 4)
    assert x.dtype == torch.float32
    mean = torch.tensor(MPII_MEAN)
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 128 / 255 * 0.5, 0.0]) - mean)
    assert torch.allclose(x[:, 1, 1], -mean)
