"""One training epoch: the hot loop, with data wait and compute timed apart and no host syncs inside it.

The loss is accumulated on the device and its running mean copied to the host asynchronously after every step (into
a small ring of pinned buffers), so the progress bar shows the newest value that has landed, a step or a few behind,
and the NaN check every `log_every` steps reads it without stalling the GPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from hgbench.errors import RunFailed
from hgbench.measure.timing import StepTimer
from hgbench.train.loss import heatmap_loss


@dataclass
class StepOptions:
    """How the model is fed (fixed for a run)."""

    device: torch.device
    amp: bool = False  # bf16 autocast
    channels_last: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images


class AsyncScalar:
    """A device scalar mirrored to the host without blocking: `read()` gives the newest posted value that has landed.

    Each `post` copies into the next of `slots` host buffers (pinned on CUDA) and records an event; `read` looks for
    the newest completed copy. With one buffer, a value posted every step would rarely have landed by the next read
    (the GPU runs behind the host), and the host would see nothing all epoch.
    """

    def __init__(self, device: torch.device, *, slots: int = 4) -> None:
        self._device = device
        self._cuda = device.type == "cuda"
        self._async = device.type != "cpu"  # on the CPU a copy is a copy; elsewhere the host must not wait
        self._host = [torch.zeros((), pin_memory=self._cuda) for _ in range(slots)]
        self._events = [torch.cuda.Event() if self._cuda else None for _ in range(slots)]
        self._posted: list[int] = []  # slot indices, oldest first

    def post(self, value: torch.Tensor) -> None:
        slot = (self._posted[-1] + 1) % len(self._host) if self._posted else 0
        self._host[slot].copy_(value.detach().float(), non_blocking=self._async)
        if self._cuda:
            self._events[slot].record(torch.cuda.current_stream(self._device))  # the copy's stream, not GPU 0's
        self._posted = [i for i in self._posted if i != slot] + [slot]

    def read(self) -> float | None:
        """The newest posted value whose copy has landed (never waits); None before any has."""
        for slot in reversed(self._posted):
            event = self._events[slot]
            if event is None or event.query():
                return float(self._host[slot])
        return None


@dataclass
class EpochStats:
    """What one training epoch measured."""

    train_loss: float  # mean loss per step (sum over stacks)
    steps: int
    images: int  # images this process trained on
    wall_s: float  # first batch requested to last step finished (host clock, after a final sync)
    compute_s: float  # device time inside forward/backward/step (CUDA events; perf_counter on CPU)
    data_wait_s: float  # host time blocked waiting for the next batch
    device_idle_s: float | None = None  # CUDA: device-clock gaps between steps (GPU-side batch preparation included)
    decode_host_s: float | None = None  # --decode device: host seconds held by the batched decode (in data_wait_s)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable[dict],
    optimizer: torch.optim.Optimizer,
    opts: StepOptions,
    *,
    epoch: int,
    log_every: int = 20,
    on_progress: Callable[[int, float | None], None] | None = None,
    on_batch: Callable[[dict], object] | None = None,
    stop_on_nan: bool = True,
) -> EpochStats:
    """Train for one pass over `loader`.

    Args:
        stop_on_nan: raise as soon as the loss is seen NaN or infinite. Off under DDP, where one rank must not stop
            alone (the others would wait for it in the gradient all-reduce until killed, and rank 0's record would
            say "interrupted"): the epoch's loss comes back NaN and the caller stops every rank at once.

    Raises:
        RunFailed: the loss became NaN or infinite (checked every `log_every` steps and at the end).
    """
    model.train()
    timer = StepTimer(opts.device, capacity=len(loader))  # CUDA events made up front, not in the loop
    loss_sum = torch.zeros((), device=opts.device)
    mirror = AsyncScalar(opts.device)
    steps = images = 0
    for batch in timer.iter_data(loader):  # every next(), the exhausted one too, counts as data wait
        if on_batch is not None:
            on_batch(batch)  # host-side bookkeeping (e.g. images skipped as corrupt); never touches the device
        timer.compute_start()
        x = opts.to_device(batch["image"])
        target = batch["target"].to(opts.device, non_blocking=True)
        weight = batch["target_weight"].to(opts.device, non_blocking=True)
        with opts.autocast():
            outputs = model(x)
        loss = heatmap_loss(outputs, target, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        timer.compute_end()
        steps += 1
        images += x.shape[0]
        mirror.post(loss_sum / steps)  # an asynchronous copy: the host never waits for this step to finish
        last = mirror.read()  # the newest running mean that has reached the host, maybe a few steps old
        if stop_on_nan and steps % log_every == 0 and last is not None and not math.isfinite(last):
            raise RunFailed(f"loss became {last} in epoch {epoch} (by step {steps}); stopping")
        if on_progress is not None:
            on_progress(steps, last)
    t = timer.summary()  # one synchronisation, at the end of the epoch
    mean_loss = float(loss_sum) / max(steps, 1)
    if stop_on_nan and not math.isfinite(mean_loss):
        raise RunFailed(f"loss became {mean_loss} in epoch {epoch}; stopping")
    # A loader that decodes on the device (`DeviceDecodeLoader`) says how long its decoder held the host.
    decode_host_s = getattr(loader, "decode_host_s", None)
    return EpochStats(
        mean_loss, steps, images, t["wall_s"], t["compute_s"], t["data_wait_s"], t["device_idle_s"], decode_host_s
    )
