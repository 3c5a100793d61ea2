"""Geometry shared by the data pipeline and the evaluator: the crop transform and its exact inverse.

Conventions (pinned by round-trip tests, never by eye):
- Coordinates are continuous with integer values at pixel centres, in both the original image and the crop.
- `crop_matrix` maps original-image points to a `res x res` crop of side ``200 * scale`` pixels centred on `center`,
  rotated by `rot` degrees (positive = the *picture* turns counter-clockwise, as OpenCV's getRotationMatrix2D), and
  optionally mirrored about the crop's vertical centre line. The same 2x3 matrix drives `cv2.warpAffine`.
- The heatmap frame is the crop frame downsampled by `stride` with pixel centres aligned:
  ``h = (u + 0.5) / stride - 0.5``. With that convention a horizontal flip is an exact pixel flip at both
  resolutions (u -> res-1-u  <=>  h -> res/stride-1-h), so the flip test needs no shift.
"""

from __future__ import annotations

import math

import numpy as np


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
    center: np.ndarray | tuple[float, float], scale: float, rot: float, input_res: int, heatmap_res: int, *,
    flip: bool = False,
) -> np.ndarray:
    """2x3 matrix from original-image coordinates to heatmap coordinates (the crop frame downsampled)."""
    return compose(rescale_matrix(input_res, heatmap_res), crop_matrix(center, scale, rot, input_res, flip=flip))


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to points of shape ``[..., 2]``; returns a new float64 array of the same shape."""
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]
