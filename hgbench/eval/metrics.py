"""Accuracy metrics of the study (protocol.md, "Two accuracy figures"): heatmap accuracy and MPII PCKh.

Pure numpy in mmpose's style (`mmpose/evaluation/functional/keypoint_eval.py`): every function documents its
shapes, never mutates its inputs and sweeps thresholds by broadcasting. It works on the small results of a pass, on
the host: predicted coordinates and per-joint counts. Getting those from heatmaps (peaks, the counts of one batch, the
flip test, the mapping to image pixels) is `hgbench.eval.decoding`, which runs on the heatmaps' device; per-joint counts
may still arrive as CPU tensors, which `heatmap_acc_from_counts` accepts.

1. Heatmap accuracy ("Val Acc" of the reference training loop, bearpaw/pytorch-pose `accuracy`): argmax of the
   predicted heatmap vs argmax of the target heatmap, distance / (heatmap width / 10) < 0.5, over
   `HEATMAP_ACC_JOINTS`; targets with an empty heatmap are left out; the mean is over joints of per-joint accuracy.
   It is computed from per-joint (correct, count) sums (`hgbench.eval.decoding.heatmap_acc_counts`, one batch) so the
   runner can add batches and DDP ranks before dividing. Two deliberate differences from the reference, both on edge
   cases: the reference also dropped targets whose peak lies on the first heatmap row or column (its `target > 1`
   test on 1-based coordinates), and it averaged per-batch accuracies weighted by batch size rather than pooling the
   counts. Protocol.md defines the pooled version.
2. PCKh (the official MPII protocol as the common Python evaluators compute it, bearpaw `evaluation/eval_PCKh.py`,
   mmpose `MpiiDataset`): decode heatmaps to original-image pixels (`hgbench.eval.decoding`: argmax, 0.25 px toward the
   higher neighbour, inverse crop transform), then ||pred - gt|| / head size < thr over annotated joints. Mean =
   unweighted mean of the 14 joints other than pelvis and thorax (upper neck included); mmpose's count-weighted mean
   and PCKh@0.1 are reported beside it, labelled.
3. Uncertainty of the Mean over people: per person, which joints were scored (annotated) and which were correct at
   PCKh@0.5 (`PCKhResult.person_scored` / `person_correct`, stored in the record as 16-bit masks, `pack_masks`);
   from them a percentile bootstrap interval of the Mean (`pckh_mean_interval`: 1,000 resamples of the people, a
   fixed seed) and the paired bootstrap of two runs on the same people (`paired_pckh_bootstrap`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from hgbench.data.groundtruth import GroundTruth
from hgbench.errors import HGBenchError
from hgbench.measure.stats import (
    BOOTSTRAP_LEVEL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    bootstrap_p_value,
    bootstrap_weights,
    percentile_interval,
)
from hgbench.spec.skeleton import HEATMAP_ACC_JOINTS, JOINT_NAMES, NUM_JOINTS, PCKH_MEAN_JOINTS, PCKH_PARTS

if TYPE_CHECKING:
    import torch

PCKH_THRESHOLD = 0.5  # official MPII threshold, in head sizes
PCKH_LOW_THRESHOLD = 0.1  # the stricter figure reported beside it (mmpose's "PCKh@0.1")
HEATMAP_ACC_THRESHOLD = 0.5  # in units of heatmap width / 10
HEATMAP_ACC_NORM_DIVISOR = 10.0  # reference: norm = heatmap width / 10 (6.4 px at 64x64)


def _is_torch(x: object) -> bool:
    return type(x).__module__.startswith("torch")


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; nan (without a RuntimeWarning) when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if _is_torch(x) else np.asarray(x)


# --------------------------------------------------------------------------------------------- heatmap accuracy


class HeatmapAccuracy(NamedTuple):
    """Heatmap accuracy of a set of samples; unpacks as ``mean, per_joint, counts``."""

    mean: float  # mean over the selected joints (those with counted samples) of per-joint accuracy, in [0, 1]
    per_joint: np.ndarray  # [K] accuracy of every joint, nan where no sample was counted
    counts: np.ndarray  # [K] int64 number of samples counted per joint (non-empty target heatmaps)


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
        raise HGBenchError(
            f"missing {valid.shape} and head_size {head_size.shape} must be [N,K] and [N] for N,K = {pred.shape[:2]}"
        )
    bad = ~(head_size > 0) & valid.any(axis=1)
    if bad.any():
        raise HGBenchError(
            f"{int(bad.sum())} people with annotated joints have a head size <= 0 or NaN "
            f"(first: person {int(np.argmax(bad))})"
        )
    thr_arr = np.asarray(thr, dtype=np.float64)
    correct = _correct(pred, gt, valid, head_size, thr_arr)  # [T, N, K]
    count = valid.sum(axis=0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pck = np.where(count > 0, 100.0 * correct.sum(axis=1) / np.maximum(count, 1), np.nan)  # [T, K]
    return (pck[0] if thr_arr.ndim == 0 else pck), count


def _correct(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, head_size: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """[T, N, K] bool: annotated and within each of the [T] thresholds (NaN distances compare False)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.linalg.norm(pred - gt, axis=-1) / np.where(head_size > 0, head_size, np.inf)[:, None]  # [N, K]
    return (dist[None] < thr.reshape(-1, 1, 1)) & valid[None]


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
    person_scored: np.ndarray | None = field(repr=False, default=None)  # [N, 16] bool: annotated joints
    person_correct: np.ndarray | None = field(repr=False, default=None)  # [N, 16] bool: correct at PCKh@0.5
    ci95: tuple[float, float] | None = None  # bootstrap interval of `mean` over people (`pckh_mean_interval`)

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
            "ci95": list(self.ci95) if self.ci95 is not None else None,
            "per_person": person_masks_to_dict(self.person_scored, self.person_correct),
        }


def describe_non_finite(what: str, arr: np.ndarray) -> str | None:
    """One line naming how many people/joints of an [N, K, 2] array hold NaN/inf, or None when all finite."""
    bad = ~np.isfinite(arr).all(axis=-1)  # [N, K]
    if not bad.any():
        return None
    person, joint = (int(i) for i in np.argwhere(bad)[0])
    name = f" {JOINT_NAMES[joint]}" if arr.shape[1] == NUM_JOINTS else ""
    return (
        f"{what} hold NaN/inf at {int(bad.sum())} joints of {int(bad.any(axis=1).sum())} of {arr.shape[0]} people "
        f"(first: person {person}, joint {joint}{name})"
    )


def evaluate_pckh(pred: np.ndarray, gt: GroundTruth, *, interval: bool = True) -> PCKhResult:
    """Score predictions against the validation ground truth with the study's PCKh conventions.

    Args:
        pred: [N, 16, 2] predicted (x, y) in original-image pixels, in split order.
        gt: ground truth of the same N people.
        interval: bootstrap the Mean's 95% interval (`ci95`; a fraction of a second for MPII's 2,958 people, so
            the per-epoch validation, which reports the Mean alone, skips it).

    Returns:
        `PCKhResult`.

    Raises:
        HGBenchError: shapes differ (both named), or predictions hold NaN/inf (how many people and joints).
    """
    pred = np.asarray(pred)
    if pred.shape != gt.joints.shape:
        raise HGBenchError(
            f"predictions have shape {pred.shape} but the ground truth {gt.joints.shape} "
            "(expected [N,16,2] with the same N)"
        )
    if not np.issubdtype(pred.dtype, np.number):
        raise HGBenchError(f"predictions must be numeric, got dtype {pred.dtype}")
    msg = describe_non_finite("predictions", pred.astype(np.float64))
    if msg:
        raise HGBenchError(msg)
    pck, count = pckh(pred, gt.joints, gt.missing, gt.head_size, np.array([PCKH_THRESHOLD, PCKH_LOW_THRESHOLD]))
    at_05, at_01 = pck
    scored = ~np.asarray(gt.missing, dtype=bool)
    correct = _correct(
        pred.astype(np.float64), gt.joints, scored, np.asarray(gt.head_size, np.float64), np.array([PCKH_THRESHOLD])
    )[0]
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
        person_scored=scored,
        person_correct=correct,
        ci95=pckh_mean_interval([(scored, correct)]) if interval else None,
    )


# ------------------------------------------------------------------------------------ uncertainty over people


def pckh_mean_of_sums(correct: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """The study's Mean from per-joint sums, for any number of (resampled) sets of people at once.

    Args:
        correct: [..., 16] correct joints at PCKh@0.5, summed over people.
        scored: [..., 16] annotated joints, summed over the same people.

    Returns:
        [...] the unweighted mean over `PCKH_MEAN_JOINTS` of per-joint PCKh (%), joints with no annotation left
        out (as `evaluate_pckh`); nan where no joint of the Mean was annotated.
    """
    mj = list(PCKH_MEAN_JOINTS)
    c, n = np.asarray(correct, np.float64)[..., mj], np.asarray(scored, np.float64)[..., mj]
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(n > 0, 100.0 * c / np.maximum(n, 1), 0.0)
        return np.where((n > 0).any(-1), pct.sum(-1) / (n > 0).sum(-1), np.nan)


People = tuple[np.ndarray, np.ndarray]  # (scored, correct): [N, 16] bool masks of one run's validation people


def _check_same_people(runs: Sequence[People]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The runs' masks as bool arrays, checking that all scored the same people (same joints annotated).

    Raises:
        HGBenchError: no run, or runs that scored different people (counts or annotated joints differ).
    """
    if not runs:
        raise HGBenchError("no run's per-person PCKh to resample")
    scored = [np.asarray(s, dtype=bool) for s, _ in runs]
    correct = [np.asarray(c, dtype=bool) for _, c in runs]
    if any(s.shape != scored[0].shape or not np.array_equal(s, scored[0]) for s in scored[1:]):
        sizes = sorted({s.shape[0] for s in scored})
        raise HGBenchError(
            f"the runs scored different validation people ({' vs '.join(map(str, sizes))} people, or other "
            "annotated joints); resampling people needs the same people in every run"
        )
    return scored, correct


def _resampled_means(scored: Sequence[np.ndarray], correct: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """[B] the runs' average Mean in each resample, given [B, N] draw counts of the N people shared by the runs."""
    w = np.asarray(weights, np.float64)  # float: BLAS (counts stay exact integers far beyond any split size)
    means = [
        pckh_mean_of_sums(w @ c.astype(np.float64), w @ s.astype(np.float64))
        for s, c in zip(scored, correct, strict=True)
    ]
    return np.mean(means, axis=0)


def pckh_mean_interval(
    runs: Sequence[People],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the PCKh Mean over validation people (resampled with replacement).

    People, not joints, are resampled: the joints of one person are scored on one image and are not independent.
    With several runs of the same people (seeds of one setting) each resample draws the same people for every run
    and takes the runs' average Mean: the interval of the seed-averaged Mean that comes from which people were
    scored, not the spread between seeds. The seed is fixed, so the interval is a pure function of the masks.

    Args:
        runs: (scored, correct) [N, 16] bool masks per run: joints annotated, joints correct at PCKh@0.5.

    Returns:
        (low, high) in %, or None when there are no people.

    Raises:
        HGBenchError: the runs scored different people.
    """
    scored, correct = _check_same_people(runs)
    if scored[0].shape[0] == 0:
        return None
    weights = bootstrap_weights(scored[0].shape[0], resamples=resamples, seed=seed)
    return percentile_interval(_resampled_means(scored, correct, weights), level)


class PairedBootstrap(NamedTuple):
    """The PCKh Mean of side B minus side A on the same people, with its bootstrap interval and p-value."""

    diff: float  # observed B - A, percentage points (each side's Mean averaged over its runs)
    ci95: tuple[float, float] | None  # percentile interval of the resampled differences
    p_value: float | None  # two-sided (`hgbench.measure.stats.bootstrap_p_value`)
    resamples: int
    people: int


def paired_pckh_bootstrap(
    a: Sequence[People],
    b: Sequence[People],
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = BOOTSTRAP_LEVEL,
) -> PairedBootstrap:
    """Paired bootstrap of the Mean's difference B - A: each resample draws the same people for every run of both.

    Pairing removes the person-to-person spread both sides share (hard people are hard for both), so one seed per
    side can show a difference that a test over seeds needs many runs for. It says nothing about seed-to-seed
    variation: with one seed a side, a difference is between two trained networks, not two settings.

    Args:
        a, b: (scored, correct) [N, 16] bool masks per run, the same N people in the same order in every run.

    Raises:
        HGBenchError: a side has no run, or the runs scored different people.
    """
    if not a or not b:
        raise HGBenchError("a paired bootstrap needs per-person PCKh of at least one run a side")
    scored, correct = _check_same_people([*a, *b])
    n = scored[0].shape[0]
    weights = bootstrap_weights(n, resamples=resamples, seed=seed)
    k = len(a)
    diffs = _resampled_means(scored[k:], correct[k:], weights) - _resampled_means(scored[:k], correct[:k], weights)
    ones = np.ones((1, n))
    observed = float(
        (_resampled_means(scored[k:], correct[k:], ones) - _resampled_means(scored[:k], correct[:k], ones))[0]
    )
    return PairedBootstrap(observed, percentile_interval(diffs, level), bootstrap_p_value(diffs), resamples, n)


# Per-person masks in the record: one 16-bit mask per person, bit j = MPII joint j (`JOINT_NAMES`), as little-endian
# uint16 bytes in base64 (2 bytes a person: 90 people are 240 characters, MPII's 2,958 about 7,900).
MASK_ENCODING = "base64 of little-endian uint16, one per person in split order; bit j = MPII joint j"


def pack_masks(mask: np.ndarray) -> str:
    """[N, 16] bool -> the base64 text of `MASK_ENCODING`."""
    bits = np.asarray(mask, dtype=np.uint16) << np.arange(NUM_JOINTS, dtype=np.uint16)
    return base64.b64encode(bits.sum(axis=1, dtype=np.uint16).astype("<u2").tobytes()).decode("ascii")


def unpack_masks(text: str) -> np.ndarray:
    """The base64 text of `MASK_ENCODING` -> [N, 16] bool.

    Raises:
        HGBenchError: not base64 of whole uint16s.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise HGBenchError(f"per-person masks are not base64 ({exc})") from exc
    if len(raw) % 2:
        raise HGBenchError(f"per-person masks hold {len(raw)} bytes, not whole 16-bit masks")
    words = np.frombuffer(raw, dtype="<u2")
    return ((words[:, None] >> np.arange(NUM_JOINTS, dtype=np.uint16)) & 1).astype(bool)


def person_masks_to_dict(scored: np.ndarray | None, correct: np.ndarray | None) -> dict | None:
    """The record's ``results.pckh.per_person`` (docs/record.md), or None without masks."""
    if scored is None or correct is None:
        return None
    return {
        "encoding": MASK_ENCODING,
        "threshold": PCKH_THRESHOLD,
        "scored": pack_masks(scored),
        "correct": pack_masks(correct),
    }


def person_masks_from_dict(per_person: object) -> tuple[np.ndarray, np.ndarray] | None:
    """(scored, correct) [N, 16] bool from a record's ``results.pckh.per_person``; None when absent (old records).

    Raises:
        HGBenchError: present but malformed.
    """
    if per_person is None:
        return None
    if not isinstance(per_person, dict) or not all(isinstance(per_person.get(k), str) for k in ("scored", "correct")):
        raise HGBenchError("results.pckh.per_person must hold base64 strings 'scored' and 'correct'")
    scored, correct = unpack_masks(per_person["scored"]), unpack_masks(per_person["correct"])
    if scored.shape != correct.shape or (correct & ~scored).any():
        raise HGBenchError("results.pckh.per_person: 'correct' must mark a subset of 'scored', person by person")
    return scored, correct
