"""A synthetic dataset in MPII's on-disk format: the embedded default, so every run works without the 12 GB download.

`generate` draws articulated stick-and-capsule figures on the MPII 16-joint skeleton and writes exactly what a real
data directory holds (`images/*.jpg`, `mpii_annotations.json` with an `isValidation` split, and the val people's
`detections_our_format.mat` with head boxes) plus a `dataset.json` marker. The same loader, augmentation, metrics and
runner then run on it unchanged.

What makes it learnable but not trivial:
- Figures follow the kinematic tree (pelvis -> hips -> knees -> ankles, pelvis -> thorax -> neck -> head-top,
  thorax -> shoulders -> elbows -> wrists) with limb lengths and joint angles from plausible ranges, foreshortened
  limbs, torso lean, varied size and position and an in-plane rotation.
- Left and right are told apart as in real photos, by a front/back cue: a figure faces the camera (a face on the
  head; its right side on the image's left) or turns away (hair, no face; right side on the right). A fixed colour per
  side would not work: the training flip mirrors the picture *and* swaps the labels, so "the right limb is red" would
  be true for half the samples and false for the other half. Each figure's left and right limbs still get different
  colours, which helps follow a limb chain across crossings.
- Textured, noisy backgrounds with limb-like clutter; 1-3 figures per image (each an annotated person, the others
  recorded in `*_other` / `numOtherPeople` like the real file); occluder boxes (covered joints keep their coordinates
  with visible = 0, as MPII marks occluded joints); joints outside the image are missing (x = y = 0), except those
  within 3 px of the border, kept like MPII's slightly negative head-tops.
- scale_provided = the figure's standing height / 200, objpos = the centre of its joints' box (integers, as MPII),
  head box = the square around the head. Coordinates use the pipeline's pixel-centre convention.

Deterministic: the same (people, seed, image size, fraction) gives the same bytes (every image draws from its own
seed sequence; the `.mat` header's timestamp is replaced by a fixed text). Output is written to a temporary sibling
directory and renamed into place, so an interrupted generation never leaves half a dataset.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hgbench.errors import DataError
from hgbench.groundtruth import GT_FILENAME, GroundTruth, save_ground_truth
from hgbench.skeleton import LIMBS, NUM_JOINTS

GENERATOR_VERSION = 1  # bump whenever the output for a given seed changes (it names the cache directory)
DEFAULT_PEOPLE = 600
DEFAULT_IMAGE_SIZE: tuple[int, int] = (320, 240)  # (width, height)
DEFAULT_VAL_FRACTION = 0.15  # MPII: 2,958 / 25,204 = 0.117; a little more keeps small datasets' val meaningful
ANNOTATION_FILENAME = "mpii_annotations.json"
MARKER_FILENAME = "dataset.json"

# Joint indices (MPII order).
R_ANK, R_KNE, R_HIP, L_HIP, L_KNE, L_ANK, PELV, THOR, NECK, HEAD = range(10)
R_WRI, R_ELB, R_SHO, L_SHO, L_ELB, L_WRI = range(10, 16)

_OUTSIDE_KEEP_PX = 3.0  # joints at most this far outside the image keep their coordinates
_RANDOM_MISSING = 0.01  # chance that an annotator skipped a joint inside the image
_MATLAB_EMPTY = {"_ArrayType_": "double", "_ArraySize_": [0, 0], "_ArrayData_": None}
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by the hgbench synthetic MPII generator"


@dataclass
class _Figure:
    """One drawn person: joints in image pixels plus what is needed to draw and annotate it."""

    joints: np.ndarray  # [16, 2] image coordinates
    height: float  # nominal standing height in pixels (scale_provided = height / 200)
    front: bool  # faces the camera
    head_center: np.ndarray  # [2]
    head_radius: float
    widths: dict[tuple[int, int], int]  # limb (a, b) -> thickness in pixels
    colours: dict[str, tuple[int, int, int]]  # "left", "right", "torso", "legs_left", "legs_right", "skin", "hair"


def _unit(angle: float) -> np.ndarray:
    """Direction at `angle` radians from straight down, turning towards +x (image right)."""
    return np.array([math.sin(angle), math.cos(angle)])


def _pose(rng: np.random.Generator, height: float, front: bool) -> np.ndarray:
    """[16, 2] joints of an upright-frame figure with the pelvis at the origin (x right, y down)."""
    h = height
    j = np.zeros((NUM_JOINTS, 2))
    side = -1.0 if front else 1.0  # x sign of the person's right side: a person facing us has their right on our left
    turn = rng.uniform(0.45, 1.0)  # apparent body width (turned bodies look narrower)
    lean = math.radians(rng.normal(0.0, 10.0))
    up = -_unit(lean)  # from pelvis towards the thorax
    across = np.array([math.cos(lean), math.sin(lean)])  # torso's x axis
    j[THOR] = up * 0.30 * h * rng.uniform(0.85, 1.05)
    head_dir = -_unit(lean + math.radians(rng.normal(0.0, 10.0)))
    j[NECK] = j[THOR] + head_dir * 0.06 * h
    j[HEAD] = j[NECK] + head_dir * 0.13 * h * rng.uniform(0.9, 1.05)

    for s, (hip, knee, ankle) in ((side, (R_HIP, R_KNE, R_ANK)), (-side, (L_HIP, L_KNE, L_ANK))):
        j[hip] = across * s * 0.085 * h * turn - up * 0.02 * h
        if rng.random() < 0.15:  # sitting, kicking, climbing
            thigh = math.radians(rng.uniform(-100.0, 100.0))
        else:
            thigh = math.radians(rng.normal(s * 6.0, 15.0))
        bend = rng.normal(0.0, 20.0) if rng.random() < 0.8 else rng.choice([-1.0, 1.0]) * rng.uniform(50.0, 130.0)
        shin = thigh + math.radians(bend)
        j[knee] = j[hip] + _unit(thigh) * 0.245 * h * rng.uniform(0.6, 1.0)
        j[ankle] = j[knee] + _unit(shin) * 0.245 * h * rng.uniform(0.6, 1.0)

    for s, (sho, elb, wri) in ((side, (R_SHO, R_ELB, R_WRI)), (-side, (L_SHO, L_ELB, L_WRI))):
        j[sho] = j[THOR] + across * s * 0.12 * h * turn + up * -0.01 * h
        if rng.random() < 0.5:  # hanging arm
            upper = math.radians(rng.normal(12.0, 12.0))
        else:
            upper = math.radians(rng.uniform(-60.0, 170.0))
        fore = upper + math.radians(rng.normal(0.0, 35.0) if rng.random() < 0.6 else rng.uniform(-150.0, 150.0))
        # Angles are outward-positive for each arm, relative to the torso's lean.
        j[elb] = j[sho] + _unit(lean + s * upper) * 0.175 * h * rng.uniform(0.6, 1.0)
        j[wri] = j[elb] + _unit(lean + s * fore) * 0.16 * h * rng.uniform(0.6, 1.0)
    return j


def _random_colour(rng: np.random.Generator, *, sat: tuple[float, float] = (80, 255)) -> tuple[int, int, int]:
    """A BGR colour from a random hue, saturation and value (as uint8 HSV through OpenCV)."""
    hsv = np.array([[[rng.integers(0, 180), rng.uniform(*sat), rng.uniform(70, 250)]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


_SKIN = ((60, 90, 140), (80, 120, 180), (110, 150, 210), (140, 180, 230), (170, 205, 240), (45, 60, 95))


def _make_figure(rng: np.random.Generator, size: tuple[int, int], height: float) -> _Figure:
    w, h = size
    front = bool(rng.random() < 0.7)
    local = _pose(rng, height, front)
    rot = math.radians(rng.normal(0.0, 12.0) if rng.random() < 0.9 else rng.uniform(-90.0, 90.0))
    cs, sn = math.cos(rot), math.sin(rot)
    local = local @ np.array([[cs, sn], [-sn, cs]])
    lo, hi = local.min(axis=0), local.max(axis=0)
    # Mostly inside the frame; 20% of figures may be cut by a border.
    slack = 0.25 * height if rng.random() < 0.2 else 0.0
    x = rng.uniform(-lo[0] - slack, w - hi[0] + slack) if w - hi[0] + lo[0] > 0 else rng.uniform(0, w)
    y = rng.uniform(-lo[1] - slack, h - hi[1] + slack) if h - hi[1] + lo[1] > 0 else rng.uniform(0, h)
    joints = local + np.array([x, y])
    head_center = (joints[NECK] + joints[HEAD]) / 2
    head_radius = 0.5 * float(np.linalg.norm(joints[HEAD] - joints[NECK])) * 1.05
    thick = {"arm": 0.05, "fore": 0.04, "thigh": 0.07, "shin": 0.055, "torso": 0.05}
    widths = {}
    for a, b, _ in LIMBS:
        kind = (
            "fore" if {a, b} & {R_WRI, L_WRI} else "arm" if {a, b} & {R_ELB, L_ELB, R_SHO, L_SHO} else
            "shin" if {a, b} & {R_ANK, L_ANK} else "thigh" if {a, b} & {R_KNE, L_KNE, R_HIP, L_HIP} else "torso"
        )  # fmt: skip
        widths[(a, b)] = max(2, round(thick[kind] * height * rng.uniform(0.85, 1.15)))
    shirt, pants = _random_colour(rng), _random_colour(rng)
    colours = {
        "torso": shirt,
        "right": _shift(shirt, rng),
        "left": _shift(shirt, rng),
        "legs_right": _shift(pants, rng),
        "legs_left": _shift(pants, rng),
        "skin": _SKIN[int(rng.integers(len(_SKIN)))],
        "hair": _random_colour(rng, sat=(0, 120)),
    }
    return _Figure(joints, height, front, head_center, head_radius, widths, colours)


def _shift(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """A visibly different variant of `colour` (so the left and right chains of one figure differ)."""
    c = np.array(colour, dtype=np.float64) + rng.uniform(-90, 90, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))  # type: ignore[return-value]


def _pt(p: np.ndarray) -> tuple[int, int]:
    """Fixed-point pixel coordinates for OpenCV drawing with shift=4 (1/16 px precision)."""
    return round(float(p[0]) * 16), round(float(p[1]) * 16)


def _draw_figure(img: np.ndarray, mask: np.ndarray, fig: _Figure, label: int, rng: np.random.Generator) -> None:
    """Draw `fig` onto `img` (anti-aliased) and its silhouette with value `label` onto `mask`."""
    j = fig.joints
    aa = cv2.LINE_AA

    def capsule(a: int, b: int, colour: tuple[int, int, int], width: int) -> None:
        cv2.line(img, _pt(j[a]), _pt(j[b]), colour, width, aa, shift=4)
        # A lighter stripe along the limb: a cheap cylinder shading that gives limbs a texture.
        hi = tuple(min(255, int(c * 1.35) + 20) for c in colour)
        cv2.line(img, _pt(j[a]), _pt(j[b]), hi, max(1, width // 3), aa, shift=4)
        cv2.line(mask, _pt(j[a]), _pt(j[b]), label, width, cv2.LINE_8, shift=4)

    torso = np.array([j[R_SHO], j[L_SHO], j[L_HIP], j[R_HIP]])
    legs = [(a, b) for a, b, _ in LIMBS if {a, b} <= {R_ANK, R_KNE, R_HIP, L_HIP, L_KNE, L_ANK, PELV}]
    arms = [(a, b) for a, b, _ in LIMBS if {a, b} <= {R_WRI, R_ELB, R_SHO, L_SHO, L_ELB, L_WRI, THOR}]
    side_of = {a: s for a, _, s in LIMBS}  # the first joint of every arm and leg limb is on that limb's side
    # Far arm first, near arm last: which one is in front is random.
    order = [arms[:3], arms[3:]] if rng.random() < 0.5 else [arms[3:], arms[:3]]
    for a, b in legs:
        capsule(a, b, fig.colours[f"legs_{side_of[a]}"], fig.widths[(a, b)])
    poly = np.array([_pt(p) for p in torso], dtype=np.int32)
    cv2.fillConvexPoly(img, poly, fig.colours["torso"], aa, shift=4)
    cv2.fillConvexPoly(mask, poly, label, cv2.LINE_8, shift=4)
    for a, b in ((PELV, THOR), (THOR, NECK)):
        capsule(a, b, fig.colours["torso"] if a == PELV else fig.colours["skin"], fig.widths[(a, b)])
    for a, b in order[0]:
        capsule(a, b, fig.colours[side_of[a]], fig.widths[(a, b)])
    r16 = round(fig.head_radius * 16)
    centre = _pt(fig.head_center)
    cv2.circle(img, centre, r16, fig.colours["skin"] if fig.front else fig.colours["hair"], -1, aa, shift=4)
    cv2.circle(mask, centre, r16, label, -1, cv2.LINE_8, shift=4)
    if fig.front:  # the face: two eyes and a mouth, oriented along the head's axis
        axis = fig.joints[HEAD] - fig.joints[NECK]
        axis = axis / max(1e-6, float(np.linalg.norm(axis)))
        perp = np.array([-axis[1], axis[0]])
        eye_r = max(1, round(0.14 * fig.head_radius * 16))
        for s in (-1, 1):
            cv2.circle(img, _pt(fig.head_center + axis * 0.2 * fig.head_radius + perp * s * 0.38 * fig.head_radius),
                       eye_r, (20, 20, 20), -1, aa, shift=4)  # fmt: skip
        m0 = fig.head_center - axis * 0.45 * fig.head_radius
        cv2.line(img, _pt(m0 - perp * 0.3 * fig.head_radius), _pt(m0 + perp * 0.3 * fig.head_radius), (40, 30, 120),
                 max(1, round(0.1 * fig.head_radius)), aa, shift=4)  # fmt: skip
    else:  # the back of the head: hair with a darker parting line
        dark = tuple(int(c * 0.6) for c in fig.colours["hair"])
        cv2.line(img, _pt(fig.head_center), _pt(fig.joints[HEAD]), dark, max(1, round(0.15 * fig.head_radius)), aa,
                 shift=4)  # fmt: skip
    for a, b in order[1]:
        capsule(a, b, fig.colours[side_of[a]], fig.widths[(a, b)])


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Smooth random colour field + stripes, blobs and limb-like clutter lines (BGR uint8)."""
    w, h = size
    grid = rng.uniform(30, 225, size=(int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.float32)
    img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:  # a periodic texture (floor boards, fabric)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, math.pi)
        period = rng.uniform(6, 40)
        wave = np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi / period)) * rng.uniform(8, 30)
        img += wave[..., None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 12))):
        colour = _random_colour(rng)
        kind = rng.random()
        p = rng.uniform((0, 0), (w, h))
        if kind < 0.4:
            q = p + rng.normal(0, 0.2 * h, size=2)
            cv2.line(img, _pt(p), _pt(q), colour, int(rng.integers(2, max(3, h // 20))), cv2.LINE_AA, shift=4)
        elif kind < 0.7:
            axes = (round(rng.uniform(4, 0.15 * w) * 16), round(rng.uniform(4, 0.15 * h) * 16))
            cv2.ellipse(img, _pt(p), axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA, shift=4)
        else:
            q = p + rng.uniform(5, 0.3 * min(w, h), size=2)
            cv2.rectangle(img, _pt(p), _pt(q), colour, -1, cv2.LINE_AA, shift=4)
    return img


def _occluders(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, figures: list[_Figure]) -> None:
    """Boxes over random joints of random figures (covered joints are annotated with visible = 0)."""
    for fig in figures:
        if rng.random() >= 0.3:
            continue
        c = fig.joints[int(rng.integers(NUM_JOINTS))] + rng.normal(0, 0.05 * fig.height, size=2)
        half = rng.uniform(0.05, 0.16, size=2) * fig.height
        p, q = c - half, c + half
        colour = _random_colour(rng)
        cv2.rectangle(img, _pt(p), _pt(q), colour, -1, cv2.LINE_AA, shift=4)
        dark = tuple(int(v * 0.7) for v in colour)
        for t in np.linspace(0.2, 0.8, 3):  # a few stripes so the box is not a flat patch
            y = p[1] + t * (q[1] - p[1])
            cv2.line(img, _pt((p[0], y)), _pt((q[0], y)), dark, 1, cv2.LINE_AA, shift=4)
        cv2.rectangle(mask, _pt(p), _pt(q), 255, -1, cv2.LINE_8, shift=4)


def _annotate(
    fig: _Figure, label: int, mask: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """[16, 3] joint_self of a drawn figure: (x, y, visible), x = y = 0 for missing joints."""
    w, h = size
    out = np.zeros((NUM_JOINTS, 3))
    for k, (x, y) in enumerate(fig.joints):
        m = _OUTSIDE_KEEP_PX
        inside = -m <= x <= w - 1 + m and -m <= y <= h - 1 + m
        if not inside or rng.random() < _RANDOM_MISSING:
            continue  # missing: x = y = 0, visible 0
        xi, yi = int(np.clip(round(x), 0, w - 1)), int(np.clip(round(y), 0, h - 1))
        x, y = round(float(x), 3), round(float(y), 3)
        if x == 0 and y == 0:  # would read as missing; nudge (a 1/1000 px change)
            x = 0.001
        out[k] = (x, y, 1.0 if mask[yi, xi] == label else 0.0)
    return out


def _render_image(seed: int, image_index: int, n_figures: int, size: tuple[int, int]) -> tuple[bytes, list[dict]]:
    """One JPEG and its people (joint_self, objpos, scale, head box), from its own seed sequence."""
    rng = np.random.default_rng([seed, image_index, GENERATOR_VERSION])
    w, h = size
    img = _background(rng, size)
    mask = np.zeros((h, w), dtype=np.uint8)
    heights = sorted(rng.uniform(0.45, 0.95, size=n_figures) * h * rng.uniform(0.7, 1.0))
    figures = [_make_figure(rng, size, float(height)) for height in heights]  # small (far) ones drawn first
    for k, fig in enumerate(figures):
        _draw_figure(img, mask, fig, k + 1, rng)
    _occluders(rng, img, mask, figures)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    noise = rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(2.0, 9.0)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))])
    if not ok:
        raise RuntimeError("cv2.imencode failed on a synthetic image")
    people = []
    for k, fig in enumerate(figures):
        joints = _annotate(fig, k + 1, mask, size, rng)
        # objpos: the centre of the whole figure (as an annotator would click it), kept inside the image.
        centre = (fig.joints.min(axis=0) + fig.joints.max(axis=0)) / 2 + rng.normal(0, 0.02 * fig.height, size=2)
        centre = np.clip(centre, 0, (w - 1, h - 1))
        r = fig.head_radius
        people.append(
            {
                "joints": joints,
                "objpos": [float(round(centre[0])), float(round(centre[1]))],
                "scale": round(fig.height / 200.0, 3),
                "headbox": np.array([fig.head_center - r, fig.head_center + r]),
            }
        )
    return buf.tobytes(), people


def _layout(rng: np.random.Generator, people: int) -> list[int]:
    """Figures per image (1-3, MPII-like) so that the total is exactly `people`."""
    sizes: list[int] = []
    while sum(sizes) < people:
        sizes.append(min(int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])), people - sum(sizes)))
    if len(sizes) == 1:  # two images at least, one per split
        sizes = [people - 1, 1]
    return sizes


def _val_images(rng: np.random.Generator, sizes: list[int], val_fraction: float) -> set[int]:
    """Images whose people form the val split (MPII splits by image), about `val_fraction` of the people."""
    total = sum(sizes)
    want = min(max(1, round(val_fraction * total)), total - 1)
    chosen: set[int] = set()
    got = 0
    for i in rng.permutation(len(sizes)):
        if got + sizes[i] <= want:
            chosen.add(int(i))
            got += sizes[i]
        if got == want:
            break
    if not chosen:  # no image fits the target exactly: take the smallest (there are at least two images)
        chosen.add(int(np.argmin(sizes)))
    return chosen


def _other(values: list, one: bool) -> object:
    """MPII's `*_other` layout: MATLAB's empty array for none, the value itself for one, a list for several."""
    if not values:
        return _MATLAB_EMPTY
    return values[0] if one else values


def _matlab_list(a: np.ndarray) -> list:
    return [[round(float(v), 3) for v in row] for row in a]


def generate(
    out_dir: str | Path,
    *,
    people: int,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic MPII-format dataset.

    Args:
        out_dir: directory to create (`images/`, `mpii_annotations.json`, `detections_our_format.mat`,
            `dataset.json`). It must not exist or be empty, unless `overwrite`.
        people: annotated people (entries); at least 2, so both splits have one.
        seed: the dataset is a function of (people, seed, image_size, val_fraction).
        image_size: (width, height) of every image.
        val_fraction: share of people in the val split (whole images go to one split, as in MPII).
        overwrite: replace an existing non-empty `out_dir`.

    Returns:
        `out_dir`.

    Raises:
        ValueError: invalid arguments.
        DataError: `out_dir` cannot be written or is not empty.
    """
    out_dir = Path(out_dir).expanduser()
    w, h = (int(v) for v in image_size)
    if people < 2:
        raise ValueError(f"a synthetic dataset needs at least 2 people (one per split), got {people}")
    if w < 32 or h < 32:
        raise ValueError(f"image size {w}x{h} is too small (32x32 at least)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if out_dir.exists() and not overwrite and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"output directory {out_dir} exists and is not empty (choose another or pass --force)")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise DataError(f"cannot write to {out_dir}: {_why_unwritable(out_dir, exc)}") from exc
    try:
        _write(tmp, people=people, seed=seed, size=(w, h), val_fraction=val_fraction)
        _publish(tmp, out_dir, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _why_unwritable(path: Path, exc: OSError) -> str:
    """The reason `path` cannot be created, naming the ancestor that is a file when that is the cause."""
    for parent in path.parents:
        if parent.exists():
            return f"{parent} is not a directory" if not parent.is_dir() else str(exc.strerror or exc)
    return str(exc.strerror or exc)


def _publish(tmp: Path, out_dir: Path, *, overwrite: bool) -> None:
    """Rename the finished `tmp` to `out_dir` (atomic when `out_dir` is absent or an empty directory)."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    old = None
    if overwrite and out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except OSError as exc:  # someone else published first
        raise DataError(f"output directory {out_dir} appeared while generating; not overwritten") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write(root: Path, *, people: int, seed: int, size: tuple[int, int], val_fraction: float) -> None:
    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    sizes = _layout(rng, people)
    val = _val_images(rng, sizes, val_fraction)
    (root / "images").mkdir()
    entries: list[dict] = []
    gt_joints, gt_boxes = [], []
    for i, n in enumerate(sizes):
        name = f"{i + 1:09d}.jpg"
        jpeg, figs = _render_image(seed, i, n, size)
        (root / "images" / name).write_bytes(jpeg)
        for k, p in enumerate(figs):
            others = [q for q_i, q in enumerate(figs) if q_i != k]
            one = len(others) == 1
            entries.append(
                {
                    "dataset": "synthetic",
                    "isValidation": 1.0 if i in val else 0.0,
                    "img_paths": name,
                    "img_width": float(size[0]),
                    "img_height": float(size[1]),
                    "objpos": p["objpos"],
                    "joint_self": _matlab_list(p["joints"]),
                    "scale_provided": p["scale"],
                    "joint_others": _other([_matlab_list(q["joints"]) for q in others], one),
                    "scale_provided_other": _other([q["scale"] for q in others], one),
                    "objpos_other": _other([q["objpos"] for q in others], one),
                    "annolist_index": float(i + 1),
                    "people_index": float(k + 1),
                    "numOtherPeople": float(len(others)),
                }
            )
            if i in val:
                gt_joints.append(np.array(entries[-1]["joint_self"])[:, :2])
                gt_boxes.append(p["headbox"])
    (root / ANNOTATION_FILENAME).write_text(json.dumps(entries, separators=(",", ": ")) + "\n")
    joints = np.stack(gt_joints)
    gt = GroundTruth(joints=joints, missing=(joints[..., 0] == 0) & (joints[..., 1] == 0), headboxes=np.stack(gt_boxes))
    save_ground_truth(root / GT_FILENAME, gt)
    _fix_mat_header(root / GT_FILENAME)
    n_val = sum(n for i, n in enumerate(sizes) if i in val)
    marker = {
        "name": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "people": people,
        "train": people - n_val,
        "val": n_val,
        "images": len(sizes),
        "seed": seed,
        "image_size": list(size),
        "val_fraction": val_fraction,
    }
    (root / MARKER_FILENAME).write_text(json.dumps(marker, indent=1) + "\n")


def _fix_mat_header(path: Path) -> None:
    """Replace the creation timestamp in a MAT-5 file's 116-byte text header, so equal data gives equal bytes."""
    with path.open("r+b") as f:
        f.write(_MAT_HEADER.ljust(116, b" "))


def cache_root() -> Path:
    """Where cached datasets live: $HGBENCH_CACHE_DIR, else ~/.cache/hgbench."""
    return Path(os.environ.get("HGBENCH_CACHE_DIR") or Path.home() / ".cache" / "hgbench").expanduser()


def default_dataset(
    *,
    people: int = DEFAULT_PEOPLE,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    cache_dir: str | Path | None = None,
) -> Path:
    """The cached synthetic dataset a run uses without `--data-dir`, generated on first use.

    Lives in ``<cache>/synthetic-<people>-<seed>-<w>x<h>-v<version>/``. Two processes asking at once are safe: a
    lock file serialises generation where the platform has one, and the finished dataset is renamed into place in
    one step either way, so a reader never sees half of it.
    """
    w, h = (int(v) for v in image_size)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    path = root / f"synthetic-{people}-{seed}-{w}x{h}-v{GENERATOR_VERSION}"
    if (path / MARKER_FILENAME).is_file():
        return path
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the cache directory {root}: {exc.strerror or exc}") from exc
    with _lock(root / f".{path.name}.lock"):
        if (path / MARKER_FILENAME).is_file():
            return path
        if path.exists():  # a leftover from an interrupted older layout: never trusted
            shutil.rmtree(path, ignore_errors=True)
        try:
            generate(path, people=people, seed=seed, image_size=(w, h))
        except DataError:
            if (path / MARKER_FILENAME).is_file():  # lost a race with a process that had no lock
                return path
            raise
    return path


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (a no-op where fcntl is missing; the atomic rename still protects)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
