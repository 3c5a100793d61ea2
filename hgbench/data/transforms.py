"""Geometry shared by the data pipeline and the evaluator: the crop transform and its exact inverse.

Conventions (pinned by round-trip tests, never by eye):
- Coordinates are continuous with integer values at pixel centres, in both the original image and the crop.
- `crop_matrix` maps original-image points to a `res x res` crop of side ``200 * scale`` pixels centred on `center`,
  rotated by `rot` degrees (positive = the *picture* turns counter-clockwise, as OpenCV's getRotationMatrix2D), and
  optionally mirrored about the crop's vertical centre line. The same 2x3 matrix drives `cv2.warpAffine`.
- The heatmap frame is the crop frame downsampled by `stride` with pixel centres aligned:
  ``h = (u + 0.5) / stride - 0.5``. With that convention a horizontal flip is an exact pixel flip at both
  resolutions (u -> res-1-u  <=>  h -> res/stride-1-h), so the flip test needs no shift.

The second half holds the training-time pieces built on that geometry: MPII's centre/scale adjustment, the random
augmentation of protocol.md, the one-warp crop, input normalisation and the Gaussian heatmap targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def crop_matrix(
    center: np.ndarray | tuple[float, float],
    scale: float,
    rot: float,
    res: int,
    *,
    flip: bool = False,
) -> np.ndarray:
    """2x3 affine matrix from original-image coordinates to crop coordinates.

    Args:
        center: (x, y) crop centre in the original image.
        scale: person scale; the crop side is ``200 * scale`` pixels.
        rot: rotation in degrees; positive turns the picture counter-clockwise in the crop.
        res: crop side in pixels.
        flip: mirror the crop horizontally (applied after rotation, about the crop centre).
    """
    cx, cy = float(center[0]), float(center[1])
    k = res / (200.0 * scale)
    a = math.radians(rot)
    cs, sn = math.cos(a), math.sin(a)
    # Image y points down, so a counter-clockwise turn of the picture maps (dx, dy) -> (cs dx + sn dy, -sn dx + cs dy).
    rs = np.array([[cs, sn], [-sn, cs]]) * k
    half = (res - 1) / 2.0
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = rs
    m[:, 2] = np.array([half, half]) - rs @ np.array([cx, cy])
    if flip:
        m[0] = -m[0]
        m[0, 2] += res - 1
    return m


def rescale_matrix(res_in: int, res_out: int) -> np.ndarray:
    """2x3 matrix from a `res_in` frame to a `res_out` frame of the same extent, pixel centres aligned."""
    f = res_out / res_in
    return np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix applying `inner` then `outer`."""
    o = np.vstack([outer, [0.0, 0.0, 1.0]])
    i = np.vstack([inner, [0.0, 0.0, 1.0]])
    return (o @ i)[:2]


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def heatmap_matrix(
    center: np.ndarray | tuple[float, float],
    scale: float,
    rot: float,
    input_res: int,
    heatmap_res: int,
    *,
    flip: bool = False,
) -> np.ndarray:
    """2x3 matrix from original-image coordinates to heatmap coordinates (the crop frame downsampled)."""
    return compose(rescale_matrix(input_res, heatmap_res), crop_matrix(center, scale, rot, input_res, flip=flip))


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to points of shape ``[..., 2]``; returns a new float64 array of the same shape."""
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


# --- Training-time pieces: centre/scale adjustment, augmentation, image warp, normalisation, heatmap targets ---------

# Per-channel RGB mean subtracted from every input (protocol.md).
MPII_MEAN: tuple[float, float, float] = (0.4404, 0.4440, 0.4327)


def adjust_center_scale(center: np.ndarray | tuple[float, float], scale: float) -> tuple[np.ndarray, float]:
    """MPII's centre/scale adjustment applied to every sample (val too): ``c[1] += 15 s``, then ``s *= 1.25``.

    Args:
        center: the annotated `objpos` (x, y).
        scale: the annotated `scale_provided` (person height / 200 px).

    Returns:
        The adjusted centre as a float64 [2] array and the adjusted scale.
    """
    c = np.array([float(center[0]), float(center[1]) + 15.0 * float(scale)], dtype=np.float64)
    return c, 1.25 * float(scale)


@dataclass(frozen=True)
class Augmentation:
    """The random draws of one training sample (protocol.md, "Training augmentation")."""

    scale_factor: float = 1.0  # multiplies the adjusted scale: clamp(1 + 0.25 N, 0.75, 1.25)
    rotation: float = 0.0  # degrees, positive turns the picture counter-clockwise: clamp(30 N, -60, 60) w.p. 0.6
    flip: bool = False  # horizontal mirror (with the FLIP_INDEX joint swap), p = 0.5
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel colour gain, U(0.8, 1.2)


NO_AUGMENTATION = Augmentation()


def sample_augmentation(rng: np.random.Generator) -> Augmentation:
    """Draw one sample's augmentation from `rng`.

    Every number is drawn whether or not it is used (the rotation even when the p = 0.6 coin says no), so the draws
    of one sample never shift those of another and the sequence is easy to reproduce.
    """
    n_scale, n_rot = rng.standard_normal(2)
    u_rot, u_flip = rng.random(2)
    gain = rng.uniform(0.8, 1.2, size=3)
    return Augmentation(
        scale_factor=float(np.clip(1.0 + 0.25 * n_scale, 0.75, 1.25)),
        rotation=float(np.clip(30.0 * n_rot, -60.0, 60.0)) if u_rot < 0.6 else 0.0,
        flip=bool(u_flip < 0.5),
        gain=(float(gain[0]), float(gain[1]), float(gain[2])),
    )


def warp_image(image: np.ndarray, m: np.ndarray, res: int) -> np.ndarray:
    """Crop, scale, rotate and flip in one bilinear `cv2.warpAffine` (zero padding outside the image).

    Args:
        image: [H, W, C] uint8 image, C-contiguous.
        m: 2x3 matrix from image to crop coordinates (`crop_matrix`); both use the pixel-centre convention, as
            OpenCV does, so no half-pixel shift is needed.
        res: side of the square output.

    Returns:
        [res, res, C] uint8 crop.
    """
    import cv2

    return cv2.warpAffine(image, m, (res, res), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def to_input_tensor(
    crop: np.ndarray, gain: tuple[float, float, float] = (1.0, 1.0, 1.0), mean: tuple[float, ...] = MPII_MEAN
) -> torch.Tensor:
    """uint8 [H, W, 3] RGB crop -> float32 [3, H, W]: scaled to [0, 1], colour gain, clamped to [0, 1], minus mean.

    The gain and the 1/255 scaling are folded into one multiply per channel.
    """
    x = torch.from_numpy(crop).permute(2, 0, 1).to(torch.float32)
    g = torch.tensor(gain, dtype=torch.float32).view(3, 1, 1) / 255.0
    x.mul_(g).clamp_(0.0, 1.0)
    return x.sub_(torch.tensor(mean, dtype=torch.float32).view(3, 1, 1))


def draw_gaussians(
    points: np.ndarray, annotated: np.ndarray, res: int, sigma: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmap targets: a Gaussian of peak 1 at each annotated point whose nearest heatmap pixel is inside the map.

    As in the reference code the Gaussian sits on the *nearest pixel* (so its peak is exactly 1 and its argmax is
    that pixel) and is cut off beyond 3 sigma. Unlike the reference, points at slightly negative coordinates are
    drawn too, as long as they round to a pixel inside the map.

    Args:
        points: [J, 2] (x, y) in heatmap pixels (pixel-centre convention).
        annotated: [J] bool, False for joints that must not be drawn (not annotated).
        res: heatmap side.
        sigma: Gaussian sigma in heatmap pixels.

    Returns:
        heatmaps [J, res, res] float32, and drawn [J] bool (annotated and inside the map).
    """
    pts = np.asarray(points, dtype=np.float64)
    centre = np.floor(pts + 0.5)
    drawn = np.asarray(annotated, dtype=bool) & np.all((centre >= 0) & (centre <= res - 1), axis=-1)
    grid = np.arange(res, dtype=np.float64)
    d = grid[None, None, :] - centre[:, :, None]  # [J, 2 (x, y), res]
    g = np.where(np.abs(d) <= 3.0 * sigma, np.exp(-(d * d) / (2.0 * sigma * sigma)), 0.0)
    heat = g[:, 1, :, None] * g[:, 0, None, :] * drawn[:, None, None]
    return heat.astype(np.float32), drawn
