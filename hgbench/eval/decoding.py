"""Heatmap decoding on the device: quarter-pixel peaks, heatmap-accuracy counts, the flip test, image mapping.

These functions take the network's heatmaps, numpy arrays or torch tensors. A tensor stays on its device and the
result is a tensor there too: a validation or timed inference loop calls them on every batch, and moving heatmaps to
the host, or even reading one number of them, would make the host wait for the GPU each batch and put that wait in
the timing. The loop keeps the small results ([N, K, 2] coordinates, [K] counts) on the device and moves them once
at the end; `hgbench.eval.metrics` then turns them into figures on the host, in pure numpy. `heatmap_to_image` is the
exception: it runs on the host, on those gathered coordinates, through the data pipeline's own crop matrices.

The rules (protocol.md, "Two accuracy figures") are the reference's (bearpaw/pytorch-pose `accuracy`,
`final_preds`): argmax, 0.25 px toward the higher neighbour, inverse crop transform; heatmap accuracy counts argmax
distances under `HEATMAP_ACC_THRESHOLD` x (heatmap width / 10), as `hgbench.eval.metrics` documents.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from hgbench.data.transforms import heatmap_matrix, invert
from hgbench.errors import HGBenchError
from hgbench.eval.metrics import (
    HEATMAP_ACC_NORM_DIVISOR,
    HEATMAP_ACC_THRESHOLD,
    HeatmapAccuracy,
    _is_torch,
    _to_numpy,
    heatmap_acc_from_counts,
    heatmap_acc_per_joint,
)
from hgbench.spec.skeleton import FLIP_INDEX, HEATMAP_ACC_JOINTS, NUM_JOINTS

if TYPE_CHECKING:
    import torch

    Heatmaps = np.ndarray | torch.Tensor

SUBPIXEL_SHIFT = 0.25  # heatmap pixels toward the higher neighbour (reference `final_preds`)


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


# --------------------------------------------------------------------------------------------- heatmap accuracy


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


# ------------------------------------------------------------------------- the publisher's decoding convention

ANIBALI = "anibali"
CONVENTIONS = ("hgbench", ANIBALI)


def anibali_heatmap_coords(heatmaps: np.ndarray) -> np.ndarray:
    """Peaks as anibali/pytorch-stacked-hourglass decodes them (`utils/evaluation.py`, ``final_preds_untransformed``),
    in its own heatmap frame; numpy on the host (used by ``--convention anibali`` only, never in a timed loop).

    Its rules, restated: 1-based argmax (a peak <= 0 becomes (0, 0)); a quarter pixel toward the higher neighbour in
    x and y, only when the peak is off every border (both axes tested together); then ``+ 0.5`` and ``- 1``. The
    result is the 0-based argmax + 0.5 (+- 0.25): half a pixel right and down of the pixel centre hgbench uses.

    Args:
        heatmaps: [N, K, H, W].

    Returns:
        [N, K, 2] float64 (x, y) in that frame (what its ``transform_preds`` takes).
    """
    hm = np.asarray(heatmaps, dtype=np.float64)
    n, k, h, w = _check_heatmaps(hm)
    flat = hm.reshape(n, k, h * w)
    idx = flat.argmax(axis=-1)
    maxval = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    x1, y1 = (idx % w + 1).astype(np.float64), (idx // w + 1).astype(np.float64)  # 1-based
    x1, y1 = np.where(maxval > 0, x1, 0.0), np.where(maxval > 0, y1, 0.0)
    inner = (x1 > 1) & (x1 < w) & (y1 > 1) & (y1 < h)
    xi, yi = np.clip(x1.astype(np.int64) - 1, 1, w - 2), np.clip(y1.astype(np.int64) - 1, 1, h - 2)  # 0-based
    nn_, kk = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    dx = hm[nn_, kk, yi, xi + 1] - hm[nn_, kk, yi, xi - 1]
    dy = hm[nn_, kk, yi + 1, xi] - hm[nn_, kk, yi - 1, xi]
    x = x1 + np.where(inner, SUBPIXEL_SHIFT * np.sign(dx), 0.0)
    y = y1 + np.where(inner, SUBPIXEL_SHIFT * np.sign(dy), 0.0)
    return np.stack([x, y], axis=-1) + 0.5 - 1.0


def anibali_to_image(coords: np.ndarray, center: np.ndarray, scale: np.ndarray, heatmap_res: int) -> np.ndarray:
    """anibali's ``transform_preds``: heatmap coordinates of `anibali_heatmap_coords` to original-image pixels.

    Restated: subtract 1, apply the inverse of its crop transform ``u = res (x - c) / (200 s) + res / 2``, truncate
    toward zero to a whole pixel (``astype(int)``) and add 1. With the ``- 1`` of the decoding this puts a
    prediction about one heatmap pixel up and left of where hgbench's exact inverse puts it.

    Args:
        coords: [N, K, 2] from `anibali_heatmap_coords`.
        center: [N, 2] the adjusted centres (``c[1] += 15 s``), as anibali's dataset gives them (float32).
        scale: [N] the adjusted scales (``1.25 s``).
        heatmap_res: heatmap side (64 for a 256 input).

    Returns:
        [N, K, 2] float64 whole-pixel coordinates.
    """
    coords = np.asarray(coords, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)[:, None, :]
    side = 200.0 * np.asarray(scale, dtype=np.float64).reshape(-1)[:, None, None]
    x = (coords - 1.0 - heatmap_res / 2.0) * side / heatmap_res + center
    return np.trunc(x) + 1.0


def anibali_decode(heatmaps: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``--convention anibali``: heatmaps to original-image pixels exactly as anibali's evaluation does
    (`anibali_heatmap_coords`, then `anibali_to_image`); [N, K, 2] float64."""
    hm = np.asarray(heatmaps)
    return anibali_to_image(anibali_heatmap_coords(hm), center, scale, int(hm.shape[-1]))
