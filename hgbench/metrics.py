"""Accuracy metrics of the study (protocol.md, "Two accuracy figures"): heatmap accuracy and MPII PCKh.

Pure numpy in mmpose's style (`mmpose/evaluation/functional/keypoint_eval.py`): every function documents its
shapes, never mutates its inputs and sweeps thresholds by broadcasting. Torch tensors are accepted only where a
function takes heatmaps; those functions then stay on the tensor's device and return tensors (no host sync per batch),
and the caller moves the small [N, K, 2] / [K] results to the host once.

1. Heatmap accuracy ("Val Acc" of the reference training loop, bearpaw/pytorch-pose `accuracy`): argmax of the
   predicted heatmap vs argmax of the target heatmap, distance / (heatmap width / 10) < 0.5, over
   `HEATMAP_ACC_JOINTS`; targets with an empty heatmap are left out; the mean is over joints of per-joint accuracy.
   It is computed from per-joint (correct, count) sums so the runner can add batches and DDP ranks before dividing.
   Two deliberate differences from the reference, both on edge cases: the reference also dropped targets whose peak
   lies on the first heatmap row or column (its `target > 1` test on 1-based coordinates), and it averaged per-batch
   accuracies weighted by batch size rather than pooling the counts. Protocol.md defines the pooled version.
2. PCKh (the official MPII protocol as the common Python evaluators compute it, bearpaw `evaluation/eval_PCKh.py`,
   mmpose `MpiiDataset`): decode heatmaps to original-image pixels (argmax, 0.25 px toward the higher neighbour,
   inverse crop transform), then ||pred - gt|| / head size < thr over annotated joints. Mean = unweighted mean of the
   14 joints other than pelvis and thorax (upper neck included); mmpose's count-weighted mean and PCKh@0.1 are
   reported beside it, labelled.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from hgbench.data.transforms import heatmap_matrix, invert
from hgbench.errors import HGBenchError
from hgbench.groundtruth import GroundTruth
from hgbench.skeleton import FLIP_INDEX, HEATMAP_ACC_JOINTS, JOINT_NAMES, NUM_JOINTS, PCKH_MEAN_JOINTS, PCKH_PARTS

if TYPE_CHECKING:
    import torch

    Heatmaps = np.ndarray | torch.Tensor

PCKH_THRESHOLD = 0.5  # official MPII threshold, in head sizes
PCKH_LOW_THRESHOLD = 0.1  # the stricter figure reported beside it (mmpose's "PCKh@0.1")
HEATMAP_ACC_THRESHOLD = 0.5  # in units of heatmap width / 10
HEATMAP_ACC_NORM_DIVISOR = 10.0  # reference: norm = heatmap width / 10 (6.4 px at 64x64)
SUBPIXEL_SHIFT = 0.25  # heatmap pixels toward the higher neighbour (reference `final_preds`)


def _is_torch(x: object) -> bool:
    return type(x).__module__.startswith("torch")


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; nan (without a RuntimeWarning) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _check_heatmaps(hm: Heatmaps, name: str = "heatmaps") -> tuple[int, int, int, int]:
    if hm.ndim != 4:
        raise HGBenchError(f"{name} must be [N,K,H,W], got shape {tuple(hm.shape)}")
    return tuple(int(s) for s in hm.shape)  # type: ignore[return-value]


def _peaks(hm: Heatmaps, *, neighbours: bool = False) -> tuple[Heatmaps, Heatmaps, Heatmaps | None]:
    """Flat argmax, max value and (optionally) the 4 neighbours' values of each heatmap, in the input's own kind.

    Args:
        hm: [N, K, H, W] numpy array or torch tensor (any device; nothing is moved to the host).
        neighbours: also gather the values right of, left of, below and above the peak.

    Returns:
        idx [N, K] int64 flat index y * W + x (the first maximum, for numpy and torch alike); maxval [N, K];
        nb [N, K, 4] (right, left, down, up; indices clipped at the borders, so callers must mask them) or None.
    """
    n, k, h, w = _check_heatmaps(hm)
    offsets = (1, -1, w, -w)
    if _is_torch(hm):
        import torch

        flat = hm.detach().reshape(n, k, h * w)
        idx = flat.argmax(dim=-1)
        maxval = flat.gather(-1, idx[..., None])[..., 0]
        nb = None
        if neighbours:
            # Python-scalar arithmetic on the device tensor: building an offsets tensor from host values here would be
            # a blocking host-to-device copy on every batch of a timed loop.
            cand = torch.stack([idx + o for o in offsets], dim=-1).clamp(0, h * w - 1)
            nb = flat.gather(-1, cand)
        return idx, maxval, nb
    flat = np.asarray(hm).reshape(n, k, h * w)
    idx = flat.argmax(axis=-1)
    maxval = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    nb = None
    if neighbours:
        nb = np.take_along_axis(flat, np.clip(idx[..., None] + np.array(offsets), 0, h * w - 1), axis=-1)
    return idx.astype(np.int64), maxval, nb


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)


# --------------------------------------------------------------------------------------------- heatmap accuracy


class HeatmapAccuracy(NamedTuple):
    """Heatmap accuracy of a set of samples; unpacks as ``mean, per_joint, counts``."""

    mean: float  # mean over the selected joints (those with counted samples) of per-joint accuracy, in [0, 1]
    per_joint: np.ndarray  # [K] accuracy of every joint, nan where no sample was counted
    counts: np.ndarray  # [K] int64 number of samples counted per joint (non-empty target heatmaps)


def heatmap_acc_counts(
    pred: Heatmaps, target: Heatmaps, thr: float = HEATMAP_ACC_THRESHOLD, *, valid: Heatmaps | None = None
) -> tuple[Heatmaps, Heatmaps]:
    """Per-joint (correct, counted) sums of the heatmap accuracy for one batch; add them across batches and ranks.

    Torch inputs give int64 tensors on their device, so a loop can accumulate (and DDP all-reduce) them without a
    host sync per batch; numpy inputs give int64 arrays.

    Args:
        pred: [N, K, H, W] predicted heatmaps (numpy or torch).
        target: [N, K, H, W] target heatmaps; a target whose maximum is <= 0 (empty) is not counted.
        thr: correct when ||argmax(pred) - argmax(target)|| / (W / 10) < thr.
        valid: optional [N] bool, False for samples to leave out (same kind and device as `pred`); a mask rather than
            an index, because indexing a GPU tensor by a mask makes the host wait for the mask's count.

    Returns:
        correct [K] and count [K]. A predicted heatmap with no positive value counts as wrong (the reference placed
        such a peak at the corner).
    """
    shape_p, shape_t = _check_heatmaps(pred, "predicted heatmaps"), _check_heatmaps(target, "target heatmaps")
    if shape_p != shape_t:
        raise HGBenchError(f"predicted heatmaps {shape_p} and target heatmaps {shape_t} differ in shape")
    w = shape_p[3]
    idx_p, max_p, _ = _peaks(pred)
    idx_t, max_t, _ = _peaks(target)
    # Integer pixel offsets, so compare squared distances: the same arithmetic on numpy arrays and torch tensors.
    dx, dy = idx_p % w - idx_t % w, idx_p // w - idx_t // w
    radius = thr * w / HEATMAP_ACC_NORM_DIVISOR
    counted = max_t > 0
    if valid is not None:
        counted = counted & valid[:, None]
    correct = counted & (max_p > 0) & (dx * dx + dy * dy < radius * radius)
    return correct.sum(0), counted.sum(0)


def heatmap_acc_per_joint(correct: np.ndarray, count: np.ndarray) -> np.ndarray:
    """[K] accuracy per joint from pooled [K] sums (numpy or CPU tensors), nan where nothing was counted."""
    correct, count = _to_numpy(correct).astype(np.float64), _to_numpy(count).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, correct / np.maximum(count, 1), np.nan)


def heatmap_acc_from_counts(
    correct: np.ndarray, count: np.ndarray, joints: tuple[int, ...] = HEATMAP_ACC_JOINTS
) -> float:
    """The heatmap accuracy (in [0, 1]) from pooled per-joint sums.

    Args:
        correct: [K] correct samples per joint (numpy or tensor).
        count: [K] counted samples per joint.
        joints: joints the mean is over; those with no counted sample are left out of it.

    Returns:
        Mean over `joints` of per-joint accuracy; nan when none of them was counted.
    """
    return _nanmean(heatmap_acc_per_joint(correct, count)[list(joints)])


def heatmap_accuracy(
    pred: Heatmaps, target: Heatmaps, joints: tuple[int, ...] = HEATMAP_ACC_JOINTS, thr: float = HEATMAP_ACC_THRESHOLD
) -> HeatmapAccuracy:
    """Heatmap accuracy of one set of heatmaps (protocol.md figure 1); see `heatmap_acc_counts` for the rule.

    Args:
        pred: [N, K, H, W] predicted heatmaps.
        target: [N, K, H, W] target heatmaps.
        joints: joints averaged in the mean.
        thr: threshold in units of W / 10.

    Returns:
        `HeatmapAccuracy` ``(mean, per_joint [K], counts [K])``, numpy on the host.
    """
    correct, count = (_to_numpy(a).astype(np.int64) for a in heatmap_acc_counts(pred, target, thr))
    return HeatmapAccuracy(
        heatmap_acc_from_counts(correct, count, joints), heatmap_acc_per_joint(correct, count), count
    )


@dataclass
class HeatmapAccuracyMeter:
    """Running per-joint sums of the heatmap accuracy on the host, for a loop over batches.

    Under DDP, all-reduce `correct` and `count` (e.g. ``torch.tensor(np.stack([m.correct, m.count]))``) and call
    `add_counts` / `result` on rank 0: the pooled counts give the same figure as one pass over all samples.
    """

    num_joints: int = NUM_JOINTS
    thr: float = HEATMAP_ACC_THRESHOLD
    correct: np.ndarray = field(init=False)  # [K] int64 running correct samples
    count: np.ndarray = field(init=False)  # [K] int64 running counted samples

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.correct = np.zeros(self.num_joints, dtype=np.int64)
        self.count = np.zeros(self.num_joints, dtype=np.int64)

    def update(self, pred: Heatmaps, target: Heatmaps) -> None:
        """Add one batch of [N, K, H, W] heatmaps."""
        self.add_counts(*heatmap_acc_counts(pred, target, self.thr))

    def add_counts(self, correct: np.ndarray, count: np.ndarray) -> None:
        """Add [K] sums computed elsewhere (another batch, rank or meter; numpy or tensors)."""
        self.correct = self.correct + _to_numpy(correct).astype(np.int64)
        self.count = self.count + _to_numpy(count).astype(np.int64)

    def result(self, joints: tuple[int, ...] = HEATMAP_ACC_JOINTS) -> HeatmapAccuracy:
        """The accuracy over every batch added so far."""
        return HeatmapAccuracy(
            heatmap_acc_from_counts(self.correct, self.count, joints),
            heatmap_acc_per_joint(self.correct, self.count),
            self.count.copy(),
        )


# ------------------------------------------------------------------------------------------ heatmap decoding


def get_heatmap_maxima(heatmaps: Heatmaps) -> tuple[Heatmaps, Heatmaps]:
    """Peak of each heatmap with the reference's quarter-pixel refinement.

    The argmax moves 0.25 px toward the higher of its two neighbours, in x and in y separately (no move when they are
    equal, or along an axis where the peak lies on the border and lacks a neighbour). The reference tested both axes
    together and left a peak on any border unshifted in both; the difference only touches peaks on a border.

    Args:
        heatmaps: [N, K, H, W] numpy array or torch tensor (any device).

    Returns:
        coords [N, K, 2] (x, y) in heatmap pixels (integer values at pixel centres, as `hgbench.data.transforms`)
        and maxvals [N, K], the peak values (<= 0 means no detection). Numpy input gives float64 arrays; a tensor
        gives float32 tensors on its device (quarter pixels are exact in float32), with no host sync, so a timed
        loop can collect them and move them once.
    """
    _, _, h, w = _check_heatmaps(heatmaps)
    idx, maxval, nb = _peaks(heatmaps, neighbours=True)
    assert nb is not None  # requested above
    x, y = idx % w, idx // w
    inner_x, inner_y = (x > 0) & (x < w - 1), (y > 0) & (y < h - 1)
    diff_x, diff_y = nb[..., 0] - nb[..., 1], nb[..., 2] - nb[..., 3]  # right - left, below - above
    if _is_torch(heatmaps):
        import torch

        sx, sy = diff_x.sign().float() * inner_x, diff_y.sign().float() * inner_y
        coords = torch.stack([x + SUBPIXEL_SHIFT * sx, y + SUBPIXEL_SHIFT * sy], dim=-1).float()
        return coords, maxval.float()
    sx, sy = np.where(inner_x, np.sign(diff_x), 0.0), np.where(inner_y, np.sign(diff_y), 0.0)
    coords = np.stack([x + SUBPIXEL_SHIFT * sx, y + SUBPIXEL_SHIFT * sy], axis=-1).astype(np.float64)
    return coords, maxval.astype(np.float64)


def heatmap_to_image(
    coords: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    input_res: int,
    heatmap_res: int,
    rotation: np.ndarray | None = None,
    flip: np.ndarray | None = None,
) -> np.ndarray:
    """Map heatmap coordinates back to original-image pixels through each sample's inverse crop transform.

    With ``flip[i]`` true the heatmaps came from the mirrored crop: channel k then holds the mirror's joint k, which is
    the person's joint ``FLIP_INDEX[k]``. This function only undoes the geometry; the caller swaps the joints
    (``out[i] = out[i][FLIP_INDEX]``, or decode `flip_back`-ed heatmaps with ``flip=None`` instead).

    Args:
        coords: [N, K, 2] (x, y) heatmap coordinates, e.g. from `get_heatmap_maxima`.
        center: [N, 2] crop centres in the original image (the adjusted centre of protocol.md).
        scale: [N] crop scales (side = 200 * scale pixels; the adjusted scale).
        input_res: network input side (256).
        heatmap_res: heatmap side (64).
        rotation: [N] degrees, as given to `crop_matrix`; None for no rotation.
        flip: [N] bool, True where the crop was mirrored; None for no flip.

    Returns:
        [N, K, 2] float64 coordinates in original-image pixels (a new array).
    """
    coords = np.asarray(coords, dtype=np.float64)
    center, scale = np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64).reshape(-1)
    n = coords.shape[0]
    if coords.ndim != 3 or coords.shape[2] != 2 or center.shape != (n, 2) or scale.shape != (n,):
        raise HGBenchError(
            f"heatmap_to_image: coords {coords.shape}, center {center.shape}, scale {scale.shape}; "
            "expected [N,K,2], [N,2], [N]"
        )
    rot = np.zeros(n) if rotation is None else np.asarray(rotation, dtype=np.float64).reshape(n)
    flp = np.zeros(n, dtype=bool) if flip is None else np.asarray(flip, dtype=bool).reshape(n)
    # One inverse per sample through the same matrices the data pipeline uses, so the two can never drift apart.
    inv = np.zeros((n, 2, 3))
    for i in range(n):
        inv[i] = invert(heatmap_matrix(center[i], scale[i], rot[i], input_res, heatmap_res, flip=bool(flp[i])))
    return np.einsum("nkj,nij->nki", coords, inv[:, :, :2]) + inv[:, None, :, 2]


def flip_back(heatmaps: Heatmaps) -> Heatmaps:
    """Heatmaps of a mirrored input, brought back to the original frame: mirror in x and swap left/right joints.

    With `hgbench.data.transforms`' pixel-centre convention a horizontal flip is an exact pixel flip at heatmap
    resolution, so no one-pixel shift is needed (unlike code whose flip maps u -> res - u).

    Args:
        heatmaps: [N, 16, H, W] numpy array or torch tensor.

    Returns:
        [N, 16, H, W] new array/tensor of the same type.
    """
    _check_heatmaps(heatmaps)
    if _is_torch(heatmaps):
        return heatmaps.flip(-1).index_select(1, _flip_index_on(heatmaps.device))
    return np.asarray(heatmaps)[:, list(FLIP_INDEX), :, ::-1].copy()


@functools.cache
def _flip_index_on(device: torch.device) -> torch.Tensor:
    """`FLIP_INDEX` as a tensor on `device`, copied there once (indexing by a Python list copies it every call)."""
    import torch

    index = torch.tensor(FLIP_INDEX, dtype=torch.int64)
    if device.type == "cuda":
        index = index.pin_memory()  # an asynchronous copy, so even the first call does not stall the host
    return index.to(device, non_blocking=True)


def average_flip(heatmaps: Heatmaps, heatmaps_of_mirror: Heatmaps) -> Heatmaps:
    """Flip test: mean of the heatmaps of an image and the flipped-back heatmaps of its mirror, both [N, 16, H, W]."""
    return (heatmaps + flip_back(heatmaps_of_mirror)) / 2


# ------------------------------------------------------------------------------------------------------- PCKh


def pckh(
    pred: np.ndarray,
    gt: np.ndarray,
    missing: np.ndarray,
    head_size: np.ndarray,
    thr: float | np.ndarray = PCKH_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint PCKh: percentage of annotated joints within ``thr`` head sizes of the ground truth.

    A joint is correct when ``||pred - gt|| / head_size < thr`` (strict, as the MPII evaluators). Missing joints
    count neither way. A non-finite prediction counts as wrong (`evaluate_pckh` rejects them first). Thresholds are
    swept by broadcasting: [T] thresholds cost one [T, N, K] comparison.

    Args:
        pred: [N, K, 2] predicted (x, y) in image pixels.
        gt: [N, K, 2] ground-truth (x, y) in image pixels.
        missing: [N, K] bool, True where the joint is not annotated (MPII `jnt_missing`).
        head_size: [N] head size in pixels (0.6 x head-box diagonal); must be > 0 for people with annotated joints.
        thr: a scalar or a [T] array of thresholds in head sizes.

    Returns:
        pck: [K] (scalar thr) or [T, K] percentages; nan for a joint with no annotated sample (mmpose writes -1).
        count: [K] int64 annotated samples per joint.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    valid = ~np.asarray(missing, dtype=bool)
    head_size = np.asarray(head_size, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2:
        raise HGBenchError(f"predictions {pred.shape} and ground truth {gt.shape} must both be [N,K,2]")
    if valid.shape != pred.shape[:2] or head_size.shape != pred.shape[:1]:
        raise HGBenchError(f"missing {valid.shape} and head_size {head_size.shape} must be [N,K] and [N] for N,K = "
                           f"{pred.shape[:2]}")  # fmt: skip
    bad = ~(head_size > 0) & valid.any(axis=1)
    if bad.any():
        raise HGBenchError(f"{int(bad.sum())} people with annotated joints have a head size <= 0 or NaN "
                           f"(first: person {int(np.argmax(bad))})")  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.linalg.norm(pred - gt, axis=-1) / np.where(head_size > 0, head_size, np.inf)[:, None]  # [N, K]
    thr_arr = np.asarray(thr, dtype=np.float64)
    correct = (dist[None] < thr_arr.reshape(-1, 1, 1)) & valid[None]  # [T, N, K]; NaN compares False
    count = valid.sum(axis=0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pck = np.where(count > 0, 100.0 * correct.sum(axis=1) / np.maximum(count, 1), np.nan)  # [T, K]
    return (pck[0] if thr_arr.ndim == 0 else pck), count


@dataclass(frozen=True)
class PCKhResult:
    """PCKh of N people in the study's layout (protocol.md, figure 2). All percentages."""

    per_joint: np.ndarray  # [16] PCKh@0.5 per MPII joint, nan where the joint is never annotated
    counts: np.ndarray  # [16] int64 annotated samples per joint
    parts: dict[str, float]  # Head, Shoulder, Elbow, Wrist, Hip, Knee, Ankle (mean of left and right)
    mean: float  # unweighted mean of the 14 joints except pelvis and thorax (upper neck included): the study's Mean
    mean_weighted: float  # the same 14 joints weighted by annotated count (mmpose's "PCKh")
    mean_at_0_1: float  # unweighted 14-joint mean at threshold 0.1
    count: int  # N people
    per_joint_at_0_1: np.ndarray = field(repr=False, default_factory=lambda: np.full(NUM_JOINTS, np.nan))  # [16]

    def to_dict(self) -> dict:
        """Plain-Python values (not rounded; nan becomes None so the dict is valid JSON)."""

        def num(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return {
            **{name: num(v) for name, v in self.parts.items()},
            "Mean": num(self.mean),
            "mean_weighted": num(self.mean_weighted),
            "mean_at_0.1": num(self.mean_at_0_1),
            "per_joint": [num(v) for v in self.per_joint],
            "count": int(self.count),
        }


def describe_non_finite(what: str, arr: np.ndarray) -> str | None:
    """One line naming how many people/joints of an [N, K, 2] array hold NaN/inf, or None when all finite."""
    bad = ~np.isfinite(arr).all(axis=-1)  # [N, K]
    if not bad.any():
        return None
    person, joint = (int(i) for i in np.argwhere(bad)[0])
    name = f" {JOINT_NAMES[joint]}" if arr.shape[1] == NUM_JOINTS else ""
    return (f"{what} hold NaN/inf at {int(bad.sum())} joints of {int(bad.any(axis=1).sum())} of {arr.shape[0]} people "
            f"(first: person {person}, joint {joint}{name})")  # fmt: skip


def evaluate_pckh(pred: np.ndarray, gt: GroundTruth) -> PCKhResult:
    """Score predictions against the validation ground truth with the study's PCKh conventions.

    Args:
        pred: [N, 16, 2] predicted (x, y) in original-image pixels, in split order.
        gt: ground truth of the same N people.

    Returns:
        `PCKhResult`.

    Raises:
        HGBenchError: shapes differ (both named), or predictions hold NaN/inf (how many people and joints).
    """
    pred = np.asarray(pred)
    if pred.shape != gt.joints.shape:
        raise HGBenchError(f"predictions have shape {pred.shape} but the ground truth {gt.joints.shape} "
                           "(expected [N,16,2] with the same N)")  # fmt: skip
    if not np.issubdtype(pred.dtype, np.number):
        raise HGBenchError(f"predictions must be numeric, got dtype {pred.dtype}")
    msg = describe_non_finite("predictions", pred.astype(np.float64))
    if msg:
        raise HGBenchError(msg)
    pck, count = pckh(pred, gt.joints, gt.missing, gt.head_size, np.array([PCKH_THRESHOLD, PCKH_LOW_THRESHOLD]))
    at_05, at_01 = pck
    mj = list(PCKH_MEAN_JOINTS)
    # Count-weighted = pooled: correct joints over annotated joints (per-joint nan has count 0, so nansum drops it).
    total = int(count[mj].sum())
    weighted = float(np.nansum(at_05[mj] * count[mj]) / total) if total else float("nan")
    return PCKhResult(
        per_joint=at_05,
        counts=count,
        parts={name: _nanmean(at_05[list(joints)]) for name, joints in PCKH_PARTS.items()},
        mean=_nanmean(at_05[mj]),
        mean_weighted=weighted,
        mean_at_0_1=_nanmean(at_01[mj]),
        count=len(gt),
        per_joint_at_0_1=at_01,
    )
