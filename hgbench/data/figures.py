"""Drawing one synthetic picture: articulated figures on the MPII 16-joint skeleton, clutter, occluders, and their
MPII-style annotation. `hgbench.data.synthetic` writes and caches whole datasets of these pictures.

What makes the pictures learnable but not trivial:
- Figures follow the kinematic tree (pelvis -> hips -> knees -> ankles, pelvis -> thorax -> neck -> head-top,
  thorax -> shoulders -> elbows -> wrists) with limb lengths and joint angles from plausible ranges, foreshortened
  limbs, torso lean, varied size and position and an in-plane rotation.
- Left and right are told apart as in real photos, by a front/back cue: a figure faces the camera (a face on the
  head; its right side on the image's left) or turns away (hair, no face; right side on the right). A fixed colour per
  side would not work: the training flip mirrors the picture *and* swaps the labels, so "the right limb is red" would
  be true for half the samples and false for the other half. Each figure's left and right limbs still get different
  colours, which helps follow a limb chain across crossings.
- Textured, noisy backgrounds with limb-like clutter; several figures per picture; occluder boxes (covered joints keep
  their coordinates with visible = 0, as MPII marks occluded joints); joints outside the image are missing
  (x = y = 0), except those within 3 px of the border, kept like MPII's slightly negative head-tops.
- scale = the figure's standing height / 200, objpos = the centre of its joints' box (integers, as MPII), head box =
  the square around the head. Coordinates use the pipeline's pixel-centre convention.

Deterministic: a picture is a function of the generator it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from hgbench.spec.skeleton import LIMBS, NUM_JOINTS

# Joint indices (MPII order).
R_ANK, R_KNE, R_HIP, L_HIP, L_KNE, L_ANK, PELV, THOR, NECK, HEAD = range(10)
R_WRI, R_ELB, R_SHO, L_SHO, L_ELB, L_WRI = range(10, 16)

_OUTSIDE_KEEP_PX = 3.0  # joints at most this far outside the image keep their coordinates
_RANDOM_MISSING = 0.01  # chance that an annotator skipped a joint inside the image


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


def _limb_kind(a: int, b: int) -> str:
    """Which body part the limb from joint `a` to joint `b` is (its thickness depends on it)."""
    ends = {a, b}
    if ends & {R_WRI, L_WRI}:
        return "fore"
    if ends & {R_ELB, L_ELB, R_SHO, L_SHO}:
        return "arm"
    if ends & {R_ANK, L_ANK}:
        return "shin"
    if ends & {R_KNE, L_KNE, R_HIP, L_HIP}:
        return "thigh"
    return "torso"


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
        widths[(a, b)] = max(2, round(thick[_limb_kind(a, b)] * height * rng.uniform(0.85, 1.15)))
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
            eye = fig.head_center + axis * 0.2 * fig.head_radius + perp * s * 0.38 * fig.head_radius
            cv2.circle(img, _pt(eye), eye_r, (20, 20, 20), -1, aa, shift=4)
        m0 = fig.head_center - axis * 0.45 * fig.head_radius
        mouth = (_pt(m0 - perp * 0.3 * fig.head_radius), _pt(m0 + perp * 0.3 * fig.head_radius))
        cv2.line(img, *mouth, (40, 30, 120), max(1, round(0.1 * fig.head_radius)), aa, shift=4)
    else:  # the back of the head: hair with a darker parting line
        dark = tuple(int(c * 0.6) for c in fig.colours["hair"])
        parting = max(1, round(0.15 * fig.head_radius))
        cv2.line(img, _pt(fig.head_center), _pt(fig.joints[HEAD]), dark, parting, aa, shift=4)
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


def render_image(rng: np.random.Generator, n_figures: int, size: tuple[int, int]) -> tuple[bytes, list[dict]]:
    """Draw one picture of `n_figures` people and annotate them as MPII would.

    Args:
        rng: the picture's own generator (the dataset writer seeds one per image, so images are independent).
        n_figures: people in the picture, each annotated.
        size: (width, height) in pixels.

    Returns:
        The JPEG bytes, and per person: ``joints`` [16, 3] (x, y, visible; x = y = 0 missing), ``objpos`` [x, y],
        ``scale`` (standing height / 200) and ``headbox`` [2, 2] (top-left, bottom-right).
    """
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
