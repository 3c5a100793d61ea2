"""Prediction passes over the validation split: per-epoch validation and the timed inference pass (warm, plain + flip).

A pass runs the model on every batch, keeps the last stack's heatmaps, decodes their maxima on the device and moves
coordinates to the host once at the end; they are then mapped back to original-image pixels through the exact inverse
of each sample's crop transform (hgbench.eval.decoding.heatmap_to_image). With `flip`, the mirrored input's heatmaps are
flipped back (joints swapped) and averaged with the plain ones before decoding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from hgbench.eval import decoding, metrics
from hgbench.measure.timing import StepTimer
from hgbench.spec.geometry import heatmap_res
from hgbench.train.distributed import DistContext, all_gather_objects, all_reduce_sum, sum_over_ranks
from hgbench.train.loss import heatmap_loss
from hgbench.train.training import StepOptions


@dataclass
class PassResult:
    """What one pass over (this rank's share of) the validation split produced."""

    predictions: np.ndarray  # [N, 16, 2] original-image pixels, ordered by `index`
    index: np.ndarray  # [N] positions in the validation split (without `excluded`)
    loss: float | None  # mean loss per batch (None when targets were not used)
    acc_correct: np.ndarray  # [16] heatmap-accuracy hits per joint
    acc_count: np.ndarray  # [16] heatmap-accuracy counted samples per joint
    timing: dict = field(default_factory=dict)  # wall_s, device_s, images, images_per_s
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # positions found undecodable

    @property
    def heatmap_acc(self) -> float:
        return metrics.heatmap_acc_from_counts(self.acc_correct, self.acc_count)


@dataclass
class _Scores:
    """A pass's loss and heatmap-accuracy counts, summed on the device: read on the host once, after the loop."""

    loss_sum: torch.Tensor  # [] the training loss's sum over batches
    correct: torch.Tensor  # [16] heatmap-accuracy hits per joint
    count: torch.Tensor  # [16] heatmap-accuracy counted samples per joint

    @classmethod
    def zeros(cls, device: torch.device) -> _Scores:
        return cls(
            torch.zeros((), device=device),
            torch.zeros(16, dtype=torch.int64, device=device),
            torch.zeros(16, dtype=torch.int64, device=device),
        )

    def add(self, batch: dict, outputs: Sequence[torch.Tensor], heatmaps: torch.Tensor, opts: StepOptions) -> None:
        """Add one batch's loss and accuracy counts, without a host sync (the targets' copies are asynchronous)."""
        target = batch["target"].to(opts.device, non_blocking=True)
        weight = batch["target_weight"].to(opts.device, non_blocking=True)  # zero for undecodable samples
        self.loss_sum += heatmap_loss(outputs, target, weight)
        valid = ~batch["bad"].to(opts.device, non_blocking=True) if "bad" in batch else None
        c, n = decoding.heatmap_acc_counts(heatmaps, target, valid=valid)
        self.correct += c
        self.count += n


@dataclass
class _Crops:
    """Every batch's crop transforms and split positions, kept on the host to map the peaks back after the loop."""

    centers: list = field(default_factory=list)
    scales: list = field(default_factory=list)
    rotations: list = field(default_factory=list)
    indices: list = field(default_factory=list)
    bad: list = field(default_factory=list)

    def add(self, batch: dict) -> None:
        self.centers.append(batch["center"])
        self.scales.append(batch["scale"])
        self.rotations.append(batch["rotation"])
        self.indices.append(batch["index"])
        self.bad.append(batch["bad"] if "bad" in batch else torch.zeros(len(batch["index"]), dtype=torch.bool))


def _heatmaps(
    model: nn.Module, x: torch.Tensor, opts: StepOptions, *, flip: bool
) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
    """Every stack's output, and the last stack's heatmaps (averaged with the mirrored input's with `flip`)."""
    with opts.autocast():
        outputs = model(x)
        heatmaps = outputs[-1].float()
        if flip:
            mirrored = model(torch.flip(x, dims=[3]))[-1].float()
            heatmaps = (heatmaps + decoding.flip_back(mirrored)) / 2
    return outputs, heatmaps


@torch.no_grad()
def predict(
    model: nn.Module,
    loader,
    opts: StepOptions,
    *,
    input_res: int,
    flip: bool = False,
    with_targets: bool = True,
    ctx: DistContext | None = None,
    on_batch: Callable[[dict], object] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> PassResult:
    """Run `model` over `loader` and decode predictions; with `ctx`, results are gathered from every rank.

    Nothing inside the per-batch loop reads a device value on the host or copies host data to the device
    synchronously: the loss, the accuracy counts and the decoded peaks stay on the device until the loop ends.

    A sample whose image turned out undecodable (``bad``, only with ``--skip-bad-images``) is run like the others
    (the batch keeps its shape) but left out of the loss, the accuracy and the predictions: it is listed in
    `excluded`, and `on_batch` (e.g. the dataset's `collect_bad`) sees every batch to record it. `on_progress` gets
    the count of batches done after each one (a progress bar).

    The loss is the training loss's own: summed over every stack's heatmaps, so train and val loss compare.
    ``timing["wall_s"]`` is the pass as a user waits for it: from the first batch requested to the last prediction
    in image pixels on the host. ``timing["compute_s"]`` sums the per-batch compute spans on the device clock.
    """
    model.eval()
    t_start = time.perf_counter()
    timer = StepTimer(opts.device, capacity=len(loader))  # CUDA events made up front, not in the loop
    coords_dev, crops, scores = [], _Crops(), _Scores.zeros(opts.device)
    batches = images = 0
    for batch in timer.iter_data(loader):  # every next(), the exhausted one too, counts as data wait
        if on_batch is not None:
            on_batch(batch)
        timer.compute_start()
        x = opts.to_device(batch["image"])
        outputs, heatmaps = _heatmaps(model, x, opts, flip=flip)
        if with_targets:
            scores.add(batch, outputs, heatmaps, opts)
        coords, _ = decoding.get_heatmap_maxima(heatmaps)
        coords_dev.append(coords)
        timer.compute_end()
        crops.add(batch)
        batches += 1
        images += x.shape[0]
        if on_progress is not None:
            on_progress(batches)
    coords_host = torch.cat(coords_dev).cpu().numpy() if coords_dev else np.zeros((0, 16, 2))
    t = timer.summary()
    preds, index, excluded = _to_image_pixels(coords_host, crops, input_res)
    wall_s = time.perf_counter() - t_start
    timing = _pass_timing(t, wall_s, images)
    if ctx is not None and ctx.enabled:
        scores = _Scores(*(all_reduce_sum(ctx, t) for t in (scores.loss_sum, scores.correct, scores.count)))
        (batches,) = sum_over_ranks(ctx, batches)
        ranks = all_gather_objects(ctx, (preds, index, excluded))
        preds, index, excluded = (np.concatenate(part) for part in zip(*ranks, strict=True))
    order = np.argsort(index, kind="stable")
    return PassResult(
        predictions=preds[order],
        index=index[order],
        loss=float(scores.loss_sum) / max(batches, 1) if with_targets else None,
        acc_correct=scores.correct.cpu().numpy(),
        acc_count=scores.count.cpu().numpy(),
        timing=timing,
        excluded=np.sort(excluded),
    )


def _pass_timing(t: dict, wall_s: float, images: int) -> dict:
    """The pass's timing entry from its `StepTimer` summary `t` and its wall time."""
    return {
        "wall_s": wall_s,
        "device_s": t["compute_s"] if t["clock"] == "cuda_event" else None,
        "compute_s": t["compute_s"],
        "clock": t["clock"],
        "data_wait_s": t["data_wait_s"],
        "images": images,
        "images_per_s": images / wall_s if wall_s > 0 else None,
    }


def _to_image_pixels(coords: np.ndarray, crops: _Crops, input_res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heatmap peaks -> original-image pixels through each sample's inverse crop; undecodable samples set apart.

    Returns:
        predictions [N, 16, 2] and split positions [N] of the decodable samples, and the positions excluded.
    """
    preds = decoding.heatmap_to_image(
        coords,
        torch.cat(crops.centers).numpy() if crops.centers else np.zeros((0, 2)),
        torch.cat(crops.scales).numpy() if crops.scales else np.zeros(0),
        input_res,
        heatmap_res(input_res),
        rotation=torch.cat(crops.rotations).numpy() if crops.rotations else None,
    )
    index = torch.cat(crops.indices).numpy() if crops.indices else np.zeros(0, dtype=np.int64)
    is_bad = torch.cat(crops.bad).numpy().astype(bool) if crops.bad else np.zeros(0, dtype=bool)
    return preds[~is_bad], index[~is_bad], index[is_bad]


def _workers_running(loader) -> bool:
    """Whether iterating `loader` again starts no worker processes: it loads in the main process, or its persistent
    workers were started by an earlier pass (the validation pass the runner ran on it). Unknown iterables: False."""
    inner = getattr(loader, "loader", loader)  # a `DeviceDecodeLoader` wraps the DataLoader
    if not isinstance(inner, DataLoader):
        return False
    return inner.num_workers == 0 or (inner.persistent_workers and inner._iterator is not None)


@torch.no_grad()
def warm_up(
    model: nn.Module,
    loader,
    opts: StepOptions,
    *,
    flip: bool,
    tail: int,
    batch_size: int,
    input_res: int,
    batches: int = 2,
) -> None:
    """Bring `model` and `loader` to the state a timed pass should start from, untimed.

    The loader: a loader whose workers have not started yet is run through once, whole (data only), so its workers
    are up and idle. Never part of it: a loop left early leaves the workers' prefetched batches queued, and the next
    pass's `iter()` would fetch and drop them inside its timed span. The model: `batches` forwards of a batch of
    `batch_size` and one of the last, partial batch size `tail` (0: none), plain and mirrored with `flip`, on inputs
    of the loader's shape (tunes cuDNN or compiles for the eval shapes; the values do not matter), so that neither
    timed pass pays a one-off cost the other does not.
    """
    if not _workers_running(loader):
        for _ in loader:
            pass
    model.eval()
    sizes = [batch_size] * batches + ([tail] if tail else [])
    with opts.autocast():
        for size in sizes:
            # Made on the device: an upload of a pageable host tensor would be a synchronous copy.
            x = opts.to_device(torch.zeros(size, 3, input_res, input_res, device=opts.device))
            model(x)
            if flip:
                model(torch.flip(x, dims=[3]))
    if opts.device.type == "cuda":
        torch.cuda.synchronize(opts.device)


def timed_passes(
    model: nn.Module,
    loader,
    opts: StepOptions,
    *,
    input_res: int,
    flip_test: bool,
    tail: int,
    batch_size: int,
    on_batch: Callable[[dict], object] | None = None,
) -> dict[str, PassResult]:
    """The timed inference passes over one loader, each from the same warm state: ``plain`` and (with `flip_test`)
    ``flip``. `batch_size` is the loader's batch size and `tail` the size of its last, partial batch (0 when it
    divides evenly). Each pass fetches every sample of the split once, and nothing more."""
    warm_up(model, loader, opts, flip=flip_test, tail=tail, batch_size=batch_size, input_res=input_res)
    passes = {"plain": predict(model, loader, opts, input_res=input_res, with_targets=False, on_batch=on_batch)}
    if flip_test:
        passes["flip"] = predict(
            model, loader, opts, input_res=input_res, flip=True, with_targets=False, on_batch=on_batch
        )
    return passes
