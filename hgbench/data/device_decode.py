"""The input pipeline's second form, `--decode device`: decode and crop whole batches on the training device.

With ``decode="workers"`` (the default, and what the study's code did) each DataLoader worker decodes a JPEG, warps
the crop and draws the targets. On a GPU the decode of full MPII frames (about 1280x720) is most of that work, and a
few host cores cannot feed an 8-stack hourglass at bf16 speed. With ``decode="device"`` the workers only read the
file's bytes, draw the augmentation, and compute the crop matrix and the heatmap targets (cheap); the main process
then

1. decodes the whole batch in one call, ``torchvision.io.decode_jpeg(list, device=...)`` (nvjpeg's batched decoder
   on CUDA),
2. crops, scales, rotates and flips all of it in one ``grid_sample`` (bilinear, zeros outside the image: what
   ``cv2.warpAffine`` with a zero constant border computes, up to OpenCV's 1/32-pixel fixed-point rounding),
3. applies the colour gain, clamps and subtracts the mean, as `to_input_tensor` does.

The geometry, the random draws and the targets are the worker path's own (same (seed, epoch, position) generator,
same matrix), so both forms train on the same samples; tests pin the crops to within a few grey levels.

On CUDA, `DeviceDecodeLoader` prepares the next batch on a side stream, one batch ahead of the step. Where its time
goes:

- the host: torchvision's batched decode synchronises its decoder's stream before and after decoding
  (``cudaStreamSynchronize`` in torchvision's ``decode_jpegs_cuda.cpp``), so each call holds the host until the
  batch is decoded. That time is data wait in `StepTimer`, and `decode_host_s` keeps it apart (the record's
  ``decode_host_s`` per epoch). Meanwhile the GPU runs only the step queued before, so the prefetch overlaps one step
  at most;
- the device: the side stream's decode, crop and copies run beside the step's kernels and share the GPU with them,
  so they lengthen the step's event-timed compute (``compute_s``); only where the GPU waits for a batch does the
  wait show as ``device_idle_s``. No clock here tells the two apart: judge this path by images/s and data wait
  against the worker path's on frames of MPII's size (``hgbench synth --image-size mpii``).

On the CPU this path works (and is tested) but is slower than workers: the decode then runs serially in the main
process. ``benchmarks/test_data_pipeline.py`` measures both forms on whatever device is at hand.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from hgbench.data.jpeg import decode_jpegs
from hgbench.data.transforms import MPII_MEAN
from hgbench.errors import DataError

DECODE_MODES: tuple[str, ...] = ("workers", "device")
_LIST_KEYS = ("jpeg", "image_name")  # per-sample values of different sizes (or strings): collated as lists


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`default_collate`, except that encoded JPEGs (one length each) and image names stay lists."""
    lists = {k: [s[k] for s in samples] for k in _LIST_KEYS if k in samples[0]}
    rest = default_collate([{k: v for k, v in s.items() if k not in lists} for s in samples])
    return {**rest, **lists}


def crop_theta(matrices: torch.Tensor, canvas: tuple[int, int], res: int) -> torch.Tensor:
    """`F.affine_grid` thetas that sample each crop from a zero-padded canvas holding its image at the top left.

    Args:
        matrices: [B, 2, 3] image-to-crop matrices (`crop_matrix`, pixel-centre convention).
        canvas: (H, W) of the padded batch.
        res: crop side.

    Returns:
        [B, 2, 3] float64 thetas mapping normalised crop coordinates to normalised canvas coordinates
        (``align_corners=True``: -1 and 1 are the centres of the first and last pixels).
    """
    ch, cw = canvas
    b = matrices.shape[0]
    m = torch.zeros(b, 3, 3, dtype=torch.float64)
    m[:, :2] = matrices.to(torch.float64)
    m[:, 2, 2] = 1.0
    crop_to_image = torch.linalg.inv(m)
    # normalised crop -> crop pixels: u = (x + 1) (res - 1) / 2
    from_norm = torch.tensor(
        [[(res - 1) / 2, 0, (res - 1) / 2], [0, (res - 1) / 2, (res - 1) / 2], [0, 0, 1]], dtype=torch.float64
    )
    # canvas pixels -> normalised canvas: x = 2 u / (W - 1) - 1 (a side of one pixel cannot be normalised)
    sx, sy = 2.0 / max(cw - 1, 1), 2.0 / max(ch - 1, 1)
    to_norm = torch.tensor([[sx, 0, -1], [0, sy, -1], [0, 0, 1]], dtype=torch.float64)
    return (to_norm @ crop_to_image @ from_norm)[:, :2]


def warp_batch(images: Sequence[torch.Tensor], matrices: torch.Tensor, res: int) -> torch.Tensor:
    """Crop every image with its 2x3 matrix in one bilinear `grid_sample`; zeros outside the image.

    Args:
        images: [3, H_i, W_i] uint8 images on one device (sizes may differ).
        matrices: [B, 2, 3] image-to-crop matrices (any device, any float dtype).
        res: crop side.

    Returns:
        [B, 3, res, res] float32 crops in 0..255 on the images' device (not rounded).
    """
    if len(images) != matrices.shape[0]:
        raise ValueError(f"{len(images)} images but {matrices.shape[0]} matrices")
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    ch, cw = max(2, max(h for h, _ in sizes)), max(2, max(w for _, w in sizes))
    device = images[0].device
    # Zero padding to a common size is the warp's own border: samples beyond an image's edge read zeros either way.
    canvas = torch.zeros((len(images), 3, ch, cw), dtype=torch.uint8, device=device)
    for i, im in enumerate(images):
        canvas[i, :, : sizes[i][0], : sizes[i][1]] = im
    theta = to_device_async(crop_theta(matrices.detach().cpu(), (ch, cw), res).float(), device)
    grid = F.affine_grid(theta, [len(images), 3, res, res], align_corners=True)
    return F.grid_sample(canvas.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without making the host wait: on CUDA through pinned memory with ``non_blocking``.

    A copy from pageable memory is synchronous, and on the side stream it would also wait for the step the stream
    follows: batch preparation would then run between steps instead of beside them.
    """
    if device.type == "cuda" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


@functools.cache
def _mean_on(device: torch.device, mean: tuple[float, ...]) -> torch.Tensor:
    """The [1, 3, 1, 1] mean on `device`, copied there once, not per batch."""
    return to_device_async(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), device)


def normalise_batch(crops: torch.Tensor, gain: torch.Tensor, mean: Sequence[float] = MPII_MEAN) -> torch.Tensor:
    """[B, 3, R, R] crops in 0..255 -> network input: times gain / 255, clamped to [0, 1], minus the mean (in place).

    `gain` [B, 3] may be on the host (pinned, as the loader delivers it) or on the device.
    """
    g = to_device_async(gain.float(), crops.device).view(-1, 3, 1, 1) / 255.0
    return crops.mul_(g).clamp_(0.0, 1.0).sub_(_mean_on(crops.device, tuple(mean)))


class DeviceDecodeLoader:
    """Wraps a loader of encoded samples (``MPIIDataset(decode="device")``) and yields batches with ``image`` ready.

    Each batch it yields has ``image`` [B, 3, R, R] float32 on `device`, ``target`` and ``target_weight`` on `device`,
    and the rest of the sample keys as the worker path gives them. An image the decoder rejects raises `DataError`
    (one line naming the file); with the dataset's ``skip_bad_images`` it is blanked instead, with zero loss weight
    and ``bad`` set, exactly as the worker path blanks it.

    Args:
        loader: iterates batches collated with `collate` (`make_loader` does that).
        dataset: the `MPIIDataset` behind `loader` (its input size, skip policy and error wording).
        device: where to decode and crop.
        prefetch: on CUDA, prepare the next batch on a side stream while the current one trains.
    """

    def __init__(self, loader: Any, dataset: Any, device: torch.device, *, prefetch: bool = True) -> None:
        self.loader = loader
        self.dataset = dataset
        self.device = torch.device(device)
        self.prefetch = prefetch and self.device.type == "cuda"
        # Host seconds spent in the decoder's calls during the current (or last) pass: torchvision's CUDA decode
        # synchronises its stream, so these are seconds the host could launch nothing else.
        self.decode_host_s = 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def prepare(self, batch: dict[str, Any], *, decode_stream: Any = None) -> dict[str, Any]:
        """Decode, crop and normalise one collated batch on the device (on the current stream).

        Args:
            decode_stream: on CUDA, a stream that only ever decodes (`_decode_on`); None decodes on the current one.
        """
        res = self.dataset.input_res
        decoded = self._decode_on(decode_stream, batch["jpeg"])
        bad = batch["bad"].clone()
        weight = batch["target_weight"]
        images = []
        for i, im in enumerate(decoded):
            if isinstance(im, str):
                name = batch["image_name"][i]
                if not self.dataset.skip_bad_images:
                    raise DataError(self.dataset.corrupt_message(name, im))
                bad[i] = True
                # A black image crops to black whatever the gain: the worker path's blank sample, minus the mean.
                im = torch.zeros((3, 1, 1), dtype=torch.uint8, device=self.device)
            images.append(im)
        if bool(bad.any()):
            weight = weight.clone()
            weight[bad] = 0.0
        crops = warp_batch(images, batch["matrix"], res)
        x = normalise_batch(crops, batch["gain"])
        out = {k: v for k, v in batch.items() if k != "jpeg"}
        out["image"] = x
        # Pinned like every other host value of the batch (the worker path's loader pins them): the validation loop
        # uploads it without blocking, which from pageable memory would be a synchronous copy every batch.
        out["bad"] = bad.pin_memory() if self.device.type == "cuda" else bad
        out["target"] = to_device_async(batch["target"], self.device)
        out["target_weight"] = to_device_async(weight, self.device)
        return out

    def _decode_on(self, stream: Any, jpegs: Sequence[torch.Tensor]) -> list[torch.Tensor | str]:
        """`decode_jpegs`, on `stream` when one is given, its images handed over to the current stream.

        torchvision's CUDA decoder allocates its outputs on the current stream and writes them from a stream of its
        own that does not wait for the current one (pytorch/vision PR 9606). On the stream that crops, whose blocks
        are freed while its queued kernels may still read them, it could overwrite a block before that read. A stream
        that only decodes has no such blocks: its images are read on the cropping stream alone, which waits for
        them, and `record_stream` keeps each image's block from being reused until that stream's reads are done.
        """
        start = time.perf_counter()
        if stream is None:
            decoded = decode_jpegs(jpegs, self.device)
            self.decode_host_s += time.perf_counter() - start
            return decoded
        here = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(stream):
            decoded = decode_jpegs(jpegs, self.device)
        self.decode_host_s += time.perf_counter() - start
        here.wait_stream(stream)
        for im in decoded:
            if isinstance(im, torch.Tensor):
                im.record_stream(here)
        return decoded

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.decode_host_s = 0.0
        try:
            if not self.prefetch:
                for batch in self.loader:
                    yield self.prepare(batch)
                return
            yield from self._iter_prefetch()
        except Exception:  # not GeneratorExit: leaving a loop early must keep the persistent workers
            stop = getattr(self.loader, "_stop_workers", None)
            if stop is not None:  # as HGDataLoader does for its own errors: now, not after PyTorch's timeout
                stop()
            raise

    def _iter_prefetch(self) -> Iterator[dict[str, Any]]:  # cuda-only
        """One batch ahead on a side stream; the compute stream waits for it only when it is consumed.

        Every hand-over between streams is ordered: the decoded images from the decode stream to the side stream
        (`_decode_on`), the prepared batch from the side stream to the compute stream (``wait_stream``), and each
        block read on a stream other than the one that allocated it is given to that stream (``record_stream``), so
        the caching allocator does not hand it out again while the reading stream may still be queued.

        The side stream does not wait for the compute stream: batch k+1 is decoded and cropped while step k runs.
        Memory stays bounded because batch k+2 is launched only after batch k+1 was handed out, and every copy into
        the side stream is asynchronous (`to_device_async`), so launching never blocks the host either.
        """
        side = torch.cuda.Stream(device=self.device)
        decode = torch.cuda.Stream(device=self.device)  # nvjpeg's outputs from a pool of their own (`_decode_on`)
        main = torch.cuda.current_stream(self.device)
        it = iter(self.loader)

        def launch() -> dict[str, Any] | None:
            batch = next(it, None)
            if batch is None:
                return None
            with torch.cuda.stream(side):
                return self.prepare(batch, decode_stream=decode)

        ready = launch()
        while ready is not None:
            main.wait_stream(side)
            for key in ("image", "target", "target_weight"):
                # Allocated on the side stream, used and freed on the compute stream: tell the caching allocator.
                ready[key].record_stream(main)
            current, ready = ready, launch()
            yield current
