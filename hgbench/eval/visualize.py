"""Pictures of predictions: the predicted skeleton (limbs coloured by side) over the image, the ground truth beside it.

The prediction is drawn with thick limbs, orange for the person's right, blue for the left and green for the centre
line, and filled joints; the ground truth on top of it in thin white lines with hollow white circles, so the two can
be compared where they overlap. A banner on top holds the title and the legend. Drawing uses OpenCV on RGB arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from hgbench.errors import DataError, HGBenchError
from hgbench.spec.skeleton import JOINT_NAMES, LIMBS, NUM_JOINTS

# RGB colours of the predicted limbs by side of the person (skeleton.LIMBS).
SIDE_COLOURS: dict[str, tuple[int, int, int]] = {
    "right": (255, 140, 0),
    "left": (30, 144, 255),
    "centre": (50, 205, 50),
}
GT_COLOUR = (255, 255, 255)
OUTLINE = (0, 0, 0)  # dark edge under every mark so it stays visible on light backgrounds


def _joint_sides() -> tuple[str, ...]:
    """Side of each joint, from the limbs it belongs to (a joint in a left or right limb takes that side)."""
    side = ["centre"] * NUM_JOINTS
    for a, b, limb_side in LIMBS:
        for j in (a, b):
            if limb_side != "centre" and j not in (6, 7):  # pelvis and thorax end side limbs but sit on the centre line
                side[j] = limb_side
    return tuple(side)


JOINT_SIDES = _joint_sides()

PoseItem = tuple[str | Path | np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, str]


def _finite_mask(joints: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
    ok = np.isfinite(joints).all(axis=-1)
    if missing is not None:
        ok &= ~np.asarray(missing, dtype=bool)
    return ok


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_pose(
    image_rgb: np.ndarray,
    joints: np.ndarray,
    *,
    missing: np.ndarray | None = None,
    style: str = "pred",
    thickness: int | None = None,
) -> np.ndarray:
    """Draw one 16-joint skeleton on a copy of an RGB image.

    Args:
        image_rgb: [H, W, 3] uint8 RGB image (not modified).
        joints: [16, 2] (x, y) in image pixels.
        missing: [16] bool, True for joints not to draw (and their limbs); non-finite joints are skipped too.
        style: "pred" (thick limbs coloured right/left/centre, filled joints) or "gt" (thin white limbs,
            hollow circles).
        thickness: limb width in pixels for "pred"; default scales with the image size.

    Returns:
        [H, W, 3] uint8 RGB image, a new array.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise HGBenchError(f"draw_pose needs an HxWx3 uint8 image, got {image_rgb.shape} {image_rgb.dtype}")
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape != (NUM_JOINTS, 2):
        raise HGBenchError(f"draw_pose needs joints of shape ({NUM_JOINTS}, 2), got {joints.shape}")
    if style not in ("pred", "gt"):
        raise HGBenchError(f"draw_pose style must be 'pred' or 'gt', got {style!r}")
    img = np.ascontiguousarray(image_rgb).copy()
    ok = _finite_mask(joints, missing)
    base = thickness or max(2, round(max(img.shape[:2]) / 250))
    if style == "pred":
        for a, b, side in LIMBS:
            if ok[a] and ok[b]:
                cv2.line(img, _pt(joints[a]), _pt(joints[b]), OUTLINE, base + 2, cv2.LINE_AA)
                cv2.line(img, _pt(joints[a]), _pt(joints[b]), SIDE_COLOURS[side], base, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            cv2.circle(img, _pt(joints[j]), base + 2, OUTLINE, -1, cv2.LINE_AA)
            cv2.circle(img, _pt(joints[j]), base + 1, SIDE_COLOURS[JOINT_SIDES[j]], -1, cv2.LINE_AA)
    else:
        thin = max(1, base // 2)
        for a, b, _ in LIMBS:
            if ok[a] and ok[b]:
                cv2.line(img, _pt(joints[a]), _pt(joints[b]), GT_COLOUR, thin, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            r = round(base * 1.5) + 1
            cv2.circle(img, _pt(joints[j]), r, OUTLINE, thin + 2, cv2.LINE_AA)
            cv2.circle(img, _pt(joints[j]), r, GT_COLOUR, thin, cv2.LINE_AA)
    return img


def read_rgb(image: str | Path | np.ndarray) -> np.ndarray:
    """An image file as an RGB array (an array is returned as it is); a missing or undecodable file is a DataError."""
    if isinstance(image, np.ndarray):
        return image
    path = Path(image)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _crop_box(shape: tuple[int, ...], *poses: np.ndarray | None, margin: float = 0.35) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) around every finite joint of `poses` with `margin` x the pose extent, clipped to the image."""
    pts = np.concatenate([p[np.isfinite(p).all(axis=-1)] for p in poses if p is not None] or [np.zeros((0, 2))])
    h, w = shape[:2]
    if len(pts) == 0:
        return 0, 0, w, h
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = margin * max(float((hi - lo).max()), 40.0)
    x0, y0 = (np.floor(lo - pad)).astype(int)
    x1, y1 = (np.ceil(hi + pad)).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else (0, 0, w, h)


def _banner(width: int, title: str) -> np.ndarray:
    """A dark strip with the title and the legend (RGB)."""
    font, scale, th = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1
    bar = np.full((44, width, 3), 30, dtype=np.uint8)
    cv2.putText(bar, title[:150], (6, 16), font, scale, (255, 255, 255), th, cv2.LINE_AA)
    x = 6
    for label, colour in [
        ("pred right", SIDE_COLOURS["right"]),
        ("pred left", SIDE_COLOURS["left"]),
        ("pred centre", SIDE_COLOURS["centre"]),
        ("ground truth", GT_COLOUR),
    ]:
        cv2.line(bar, (x, 33), (x + 18, 33), colour, 1 if colour == GT_COLOUR else 3, cv2.LINE_AA)
        if colour == GT_COLOUR:
            cv2.circle(bar, (x + 9, 33), 4, colour, 1, cv2.LINE_AA)
        cv2.putText(bar, label, (x + 24, 38), font, 0.45, (230, 230, 230), th, cv2.LINE_AA)
        x += 30 + cv2.getTextSize(label, font, 0.45, th)[0][0] + 12
    return bar


def render_pose(
    image: str | Path | np.ndarray,
    pred: np.ndarray,
    gt: np.ndarray | None = None,
    missing: np.ndarray | None = None,
    title: str = "",
    *,
    crop: bool = True,
    min_side: int = 480,
) -> np.ndarray:
    """One picture: prediction and ground truth drawn, cropped around the person, with a title/legend banner.

    Args:
        image: image path or [H, W, 3] uint8 RGB array.
        pred: [16, 2] predicted (x, y) in image pixels.
        gt: [16, 2] ground truth or None.
        missing: [16] bool, ground-truth joints not annotated (not drawn); predictions are always drawn.
        title: text of the banner.
        crop: crop to the joints (with a margin) instead of keeping the whole image.
        min_side: upscale the crop so its shorter side is at least this many pixels.

    Returns:
        [H', W', 3] uint8 RGB.
    """
    rgb = read_rgb(image)
    pred = np.asarray(pred, dtype=np.float64)
    full = (0, 0, rgb.shape[1], rgb.shape[0])
    if gt is not None:
        # Crop around the annotated person rather than the prediction: other tools leave joints they do not score far
        # off (pelvis and thorax of `pos_pred_src` sit above the image), which must not zoom the picture out.
        shown = np.ones(NUM_JOINTS, dtype=bool) if missing is None else ~np.asarray(missing, dtype=bool)
        annotated = np.where(shown[:, None], np.asarray(gt, dtype=np.float64), np.nan)
        box = _crop_box(rgb.shape, annotated) if crop else full
    else:
        box = _crop_box(rgb.shape, pred) if crop else full
    # Predictions outside the picture are named in the banner instead of drawn as limbs running off the edge.
    x0, y0, x1, y1 = box
    outside = ~((pred[:, 0] >= x0) & (pred[:, 0] < x1) & (pred[:, 1] >= y0) & (pred[:, 1] < y1))
    if outside.any():
        title = f"{title} | pred outside picture: {', '.join(JOINT_NAMES[j] for j in np.flatnonzero(outside))}"
    # Scale the strokes to the person rather than the image, so small people in large images stay readable.
    thickness = max(2, round(max(box[2] - box[0], box[3] - box[1]) / 150))
    out = draw_pose(rgb, pred, missing=outside, style="pred", thickness=thickness)
    if gt is not None:
        out = draw_pose(out, gt, missing=missing, style="gt", thickness=thickness)
    out = out[y0:y1, x0:x1]
    short = min(out.shape[:2])
    if short < min_side:
        f = min_side / short
        out = cv2.resize(out, (round(out.shape[1] * f), round(out.shape[0] * f)), interpolation=cv2.INTER_LINEAR)
    width = max(out.shape[1], 420)
    if out.shape[1] < width:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1]), (0, 0)))
    return np.concatenate([_banner(width, title), out], axis=0)


def save_pose_pngs(out_dir: str | Path, items: Iterable[PoseItem], n: int, *, crop: bool = True) -> list[Path]:
    """Write the first `n` items as PNGs named ``NNNN_<image stem>.png``.

    Args:
        out_dir: folder to write into (created).
        items: iterable of (image path or RGB array, pred [16, 2], gt [16, 2] | None, missing [16] | None, title).
        n: how many to write (fewer if `items` runs out).
        crop: crop each picture to the person (see `render_pose`).

    Returns:
        The paths written, in order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, (image, pred, gt, missing, title) in enumerate(items):
        if i >= n:
            break
        stem = Path(image).stem if not isinstance(image, np.ndarray) else "image"
        path = out_dir / f"{i:04d}_{stem}.png"
        rgb = render_pose(image, pred, gt, missing, title, crop=crop)
        if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise HGBenchError(f"cannot write PNG {path}")
        written.append(path)
    return written
