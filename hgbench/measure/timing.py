"""Clocks: per-iteration timing of a callable, the per-epoch `StepTimer` (data wait vs compute) and peak memory.

The runner and `hgbench bench` never ask the model anything; they hand this module a callable or bracket their own
loop with a `StepTimer` (TorchBench's `invoke()` idea, nanoGPT's `bench.py` burn-in). On CUDA the clocks are CUDA
event pairs read after one synchronisation; on the CPU they are `perf_counter`. Nothing is estimated.

References: TorchBench `run.py` (CUDA event pairs plus wall time); pytest-benchmark `stats.py` (statistic names and
the quartile method reused by `TimingStats`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from hgbench.measure.stats import describe, quartiles

# --------------------------------------------------------------------------------------------------------------------
# Devices, timing statistics and time_fn
# --------------------------------------------------------------------------------------------------------------------


def as_device(device: str | torch.device) -> torch.device:
    """`torch.device` from a string or device; a bare "cuda" means the current CUDA device."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@dataclass
class TimingStats:
    """Per-iteration times of a timed callable; `to_dict` uses pytest-benchmark's statistic names (seconds)."""

    data: list[float]  # one duration per timed iteration, seconds, on `clock`
    wall_s: float  # host wall time of all timed iterations, including the final synchronisation
    clock: str  # "cuda_event" (device time between two events on the stream) or "perf_counter" (host)
    warmup: int = 0  # untimed iterations run first
    warmup_s: float = 0.0  # host wall time of the warm-up iterations (shows compile / autotune cost)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("TimingStats needs at least one timed iteration")

    @property
    def rounds(self) -> int:
        return len(self.data)

    @property
    def min(self) -> float:
        return min(self.data)

    @property
    def max(self) -> float:
        return max(self.data)

    @property
    def mean(self) -> float:
        return statistics.mean(self.data)

    @property
    def stddev(self) -> float:
        return statistics.stdev(self.data) if len(self.data) > 1 else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.data)

    @property
    def iqr(self) -> float:
        q1, q3 = quartiles(self.data)
        return q3 - q1

    @property
    def total(self) -> float:
        return sum(self.data)

    def to_dict(self) -> dict:
        """min, max, mean, stddev, median, iqr, rounds, data (seconds), plus total, wall_s, clock and warm-up."""
        return {
            **describe(self.data),
            "total": self.total,
            "wall_s": self.wall_s,
            "clock": self.clock,
            "warmup": self.warmup,
            "warmup_s": self.warmup_s,
        }


def time_fn(fn: Callable[[], Any], *, warmup: int, iters: int, device: str | torch.device) -> TimingStats:
    """Time a zero-argument callable: `warmup` untimed calls, then `iters` timed ones.

    On CUDA each timed call is bracketed by a pair of CUDA events on the current stream, and the host synchronises
    once after the warm-up and once at the end, so the per-iteration figures are device time and the host's launch
    overhead shows only where it starves the GPU. On CPU the figures are `perf_counter` intervals.

    Args:
        fn: the work, e.g. one training step; its return value is ignored.
        warmup: untimed calls first (compilation, cuDNN autotuning, allocator growth).
        iters: timed calls (>= 1).
        device: where `fn` runs.

    Returns:
        The per-iteration statistics and the wall time of the timed part.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    dev = as_device(device)
    cuda = dev.type == "cuda"
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(dev)
    warmup_s = time.perf_counter() - t0

    if not cuda:
        data = []
        w0 = time.perf_counter()
        for _ in range(iters):
            s = time.perf_counter()
            fn()
            data.append(time.perf_counter() - s)
        return TimingStats(data, time.perf_counter() - w0, "perf_counter", warmup, warmup_s)

    with torch.cuda.device(dev):
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        w0 = time.perf_counter()
        for i in range(iters):
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize(dev)
        wall = time.perf_counter() - w0
    data = [s.elapsed_time(e) / 1000.0 for s, e in zip(starts, ends, strict=True)]
    return TimingStats(data, wall, "cuda_event", warmup, warmup_s)


# --------------------------------------------------------------------------------------------------------------------
# StepTimer: compute vs data wait inside an epoch, no host synchronisation in the loop
# --------------------------------------------------------------------------------------------------------------------


class StepTimer:
    """Times one epoch's steps: host time waiting for data, and compute time on the device's clock.

    What "data wait" means here: the host wall time spent inside the DataLoader's ``next()`` (`data_start` to
    `data_end`). On the CPU that is time the machine did no training. On CUDA the GPU runs asynchronously: while the
    host waits for a batch, kernels queued by earlier steps may still be running, so host data wait is an *upper
    bound* on the GPU time lost to loading. The time the GPU actually sat idle between steps is reported separately
    as ``device_idle_s``: the device-clock gaps from one step's end event to the next step's start event (it also
    includes host launch overhead; near zero when the pipeline keeps the GPU fed).

    Compute is everything between `compute_start` and `compute_end`: put the host-to-device copy, forward, loss,
    backward and optimiser step there. On CUDA these record CUDA events (created in advance, grown in blocks, never
    synchronised in the loop); `summary` synchronises once and reads them. On CPU both clocks are `perf_counter`.

    Args:
        device: the device the steps run on.
        capacity: steps to preallocate events for (e.g. ``len(loader)``); more are added in blocks if exceeded.
    """

    _GROW = 256  # events added at a time once the preallocated ones run out (event creation does not sync)

    def __init__(self, device: str | torch.device, *, capacity: int = 0) -> None:
        self.device = as_device(device)
        self.cuda = self.device.type == "cuda"
        self._starts: list[Any] = []
        self._ends: list[Any] = []
        if self.cuda:
            self._grow(max(capacity, 1))
        self._cpu_compute: list[float] = []
        self._cpu_t = 0.0  # perf_counter at the open compute bracket (CPU)
        self._steps = 0
        self._in_compute = False
        self._data_t: float | None = None
        self._data_wait = 0.0
        self._t_first: float | None = None
        self._summary: dict | None = None

    def _grow(self, n: int) -> None:
        # CUDA events are created lazily on their first record, on the device of the stream they are recorded on.
        self._starts.extend(torch.cuda.Event(enable_timing=True) for _ in range(n))
        self._ends.extend(torch.cuda.Event(enable_timing=True) for _ in range(n))

    def _touch(self) -> float:
        now = time.perf_counter()
        if self._t_first is None:
            self._t_first = now
        if self._summary is not None:
            raise RuntimeError("StepTimer already summarised; create one timer per epoch")
        return now

    def data_start(self) -> None:
        """Mark the host starting to wait for the next batch."""
        self._data_t = self._touch()

    def data_end(self) -> None:
        """Mark the batch having arrived on the host."""
        if self._data_t is None:
            raise RuntimeError("data_end() without data_start()")
        self._data_wait += time.perf_counter() - self._data_t
        self._data_t = None

    def compute_start(self) -> None:
        """Mark the start of a step's device work (records a CUDA event on the current stream; no sync)."""
        t = self._touch()
        if self._in_compute:
            raise RuntimeError("compute_start() twice without compute_end()")
        self._in_compute = True
        if self.cuda:
            if self._steps >= len(self._starts):
                self._grow(self._GROW)
            # On the run's device's stream, named: a bare record() goes to the *current* device's, which for
            # --device cuda:1 in one process is GPU 0, idle, and would time the host's launches instead.
            self._starts[self._steps].record(torch.cuda.current_stream(self.device))
        else:
            self._cpu_t = t

    def compute_end(self) -> None:
        """Mark the end of a step's device work."""
        if not self._in_compute:
            raise RuntimeError("compute_end() without compute_start()")
        if self.cuda:
            self._ends[self._steps].record(torch.cuda.current_stream(self.device))
        else:
            self._cpu_compute.append(time.perf_counter() - self._cpu_t)
        self._in_compute = False
        self._steps += 1

    @contextmanager
    def data(self) -> Iterator[None]:
        """``with timer.data(): batch = next(it)``."""
        self.data_start()
        yield
        self.data_end()

    @contextmanager
    def compute(self) -> Iterator[None]:
        """``with timer.compute(): loss = step(batch)``."""
        self.compute_start()
        yield
        self.compute_end()

    def iter_data(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Iterate a DataLoader, timing every ``next()`` (the last, exhausted one too) as data wait."""
        it = iter(iterable)  # creating the iterator starts the workers: count it as data wait too
        while True:
            self.data_start()
            try:
                item = next(it)
            except StopIteration:
                self.data_end()
                return
            self.data_end()
            yield item

    @property
    def steps(self) -> int:
        """Steps completed so far (host side; no synchronisation)."""
        return self._steps

    def summary(self) -> dict:
        """Synchronise once and return the epoch's figures (idempotent; the timer is closed afterwards).

        Returns:
            compute_s (sum of per-step compute), data_wait_s (host), wall_s (first mark to this synchronisation),
            steps, per_step_compute_ms (list), device_idle_s (CUDA: device gaps between steps; CPU: None),
            clock ("cuda_event" or "perf_counter").
        """
        if self._summary is not None:
            return self._summary
        if self._in_compute:
            raise RuntimeError("summary() inside a compute bracket; call compute_end() first")
        if self.cuda:
            torch.cuda.synchronize(self.device)
        t_end = time.perf_counter()
        n = self._steps
        if self.cuda:
            per_ms = [self._starts[i].elapsed_time(self._ends[i]) for i in range(n)]
            idle_ms = sum(max(0.0, self._ends[i].elapsed_time(self._starts[i + 1])) for i in range(n - 1))
            device_idle_s: float | None = idle_ms / 1000.0
        else:
            per_ms = [s * 1000.0 for s in self._cpu_compute]
            device_idle_s = None
        self._summary = {
            "compute_s": sum(per_ms) / 1000.0,
            "data_wait_s": self._data_wait,
            "wall_s": 0.0 if self._t_first is None else t_end - self._t_first,
            "steps": n,
            "per_step_compute_ms": per_ms,
            "device_idle_s": device_idle_s,
            "clock": "cuda_event" if self.cuda else "perf_counter",
        }
        return self._summary


# --------------------------------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------------------------------


def peak_memory_mib(device: str | torch.device) -> float | None:
    """Peak memory allocated by tensors on a CUDA device since the last reset (MiB); None on CPU."""
    dev = as_device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(dev) / 2**20


def reset_peak_memory(device: str | torch.device) -> None:
    """Start a new peak-memory window on a CUDA device (no-op on CPU)."""
    dev = as_device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(dev)


__all__ = ["StepTimer", "TimingStats", "as_device", "peak_memory_mib", "reset_peak_memory", "time_fn"]
