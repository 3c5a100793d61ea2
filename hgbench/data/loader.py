"""DataLoader construction: worker processes, pinned memory, prefetching, and data that is a function of the seed.

Determinism does not depend on the workers: `MPIIDataset` draws each sample's augmentation from (seed, epoch,
position), so the batches are the same for 0, 1 or 8 workers. What the loader adds is a seeded shuffle per epoch
(`EpochShuffleSampler`, or the caller's sampler such as `hgbench.train.sampling.GlobalBatchSampler`), seeded worker RNGs
for any code that uses the global ones, and `set_epoch`, which reaches both the sampler and the dataset.

Errors raised inside a worker come back from PyTorch wrapped in a multi-line "Caught DataError in DataLoader worker
process 0 ... Original Traceback" message; `HGDataLoader` re-raises them as the original one-line `DataError`.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.context
import os
import random
import select
import threading
import time
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hgbench.data.device_decode import DeviceDecodeLoader, collate
from hgbench.errors import DataError

PREFETCH_FACTOR = 4  # batches each worker keeps ready


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation every epoch, drawn from ``Generator(seed, epoch)`` alone (resumable at any epoch)."""

    def __init__(self, data_source: Sized, *, seed: int = 0) -> None:
        self.n = len(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def _mix(seed: int, epoch: int) -> int:
    """One 63-bit seed from (seed, epoch), different for every pair."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _worker_init(worker_id: int, *, owner: int | None = None) -> None:
    """Seed a worker's global RNGs from the per-worker seed PyTorch derives from the loader's generator, and end the
    worker with `owner`, the process that iterates the loader."""
    if owner is not None:
        exit_with(owner)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)  # for third-party code that uses the legacy global RNG
    # One thread per worker: the workers are the parallelism, and OpenCV's pool would oversubscribe the cores. The
    # device path's workers never use OpenCV and run without it (the worker path's crop names it when it is missing).
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(1)
    del worker_id


def exit_with(pid: int) -> None:
    """End this process as soon as process `pid` ends, however it ends (`kill -9` included).

    A worker started through the fork server is the server's child, not the loader's: PyTorch's watchdog watches the
    server, and the server waits for its last child (each holds its "alive" pipe) before it exits, so after a
    `kill -9` of the run the server, the workers and multiprocessing's resource tracker would wait on each other
    forever. A worker that ends with the run's process lets the server and then the tracker end too. A daemon thread
    waits on a pidfd (Linux 5.3+; elsewhere it polls once a second).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone already
        os._exit(1)
    except (AttributeError, OSError):  # no pidfd here
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has ended
        else:
            while _alive(pid):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name=f"hgbench-exit-with-{pid}", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (the pid was reused)
        return True
    return True


def worker_context() -> multiprocessing.context.BaseContext:
    """Start workers with "forkserver" (else "spawn"), never a plain fork of the main process.

    OpenCV's thread pool does not survive `fork`: once the parent has run a parallel OpenCV call (the synthetic
    generator does, and so does any large warp), a forked worker's first OpenCV call waits forever on a lock of a
    thread that was not copied. A fork server is started clean, before any of that, and forks the workers itself.
    As with "spawn", a script that builds a loader with workers needs the ``if __name__ == "__main__":`` guard (the
    `hgbench` command has it).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Imported once by the server (no effect once it runs), so each worker forks with them loaded instead of
    # importing torch afresh. Importing starts no OpenCV or OpenMP threads, so the server stays fork-safe.
    ctx.set_forkserver_preload(["torch", "torchvision.io", "cv2", "numpy", "hgbench.data.mpii"])
    return ctx


class HGDataLoader(DataLoader):
    """A DataLoader with `set_epoch` and one-line errors from its workers."""

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch`'s shuffle and augmentation (call before iterating it)."""
        for obj in (self.sampler, self.dataset):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from super().__iter__()
        except Exception as exc:  # not GeneratorExit: leaving a loop early must keep the persistent workers
            self._stop_workers()
            if isinstance(exc, DataError):
                raise DataError(unwrap_worker_message(str(exc))) from None
            raise

    def _stop_workers(self) -> None:
        """Shut the workers down now, after an error.

        Left to the garbage collector, the iterator (caught in a reference cycle with the traceback) is finalised
        after the queues it signals its workers through, and each worker then takes PyTorch's 5 s timeout to die.
        """
        it = getattr(self, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self._iterator = None


def unwrap_worker_message(message: str) -> str:
    """The original one-line message inside PyTorch's "Caught X in DataLoader worker" wrapper (else `message`)."""
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught "):
        last = lines[-1]
        for prefix in ("hgbench.errors.DataError: ", "DataError: "):
            if last.startswith(prefix):
                return last[len(prefix) :]
        return last
    return message


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int,
    pin_memory: bool,
    sampler: Sampler | None = None,
    drop_last: bool,
    seed: int = 0,
    prefetch_factor: int = PREFETCH_FACTOR,
    device: torch.device | str | None = None,
) -> HGDataLoader | DeviceDecodeLoader:
    """Build the loader a run iterates.

    Args:
        dataset: typically an `MPIIDataset`.
        batch_size: samples per batch (per process).
        shuffle: shuffle with `EpochShuffleSampler` (ignored when `sampler` is given).
        workers: worker processes; 0 loads in the main process. Workers are persistent (kept between epochs).
        pin_memory: page-locked batches for fast host-to-GPU copies; only honoured when CUDA is available.
        sampler: a sampler of sample indices (e.g. `GlobalBatchSampler` under DDP); its `set_epoch` is called.
        drop_last: drop the last incomplete batch (training: BatchNorm wants full batches).
        seed: seeds the shuffle and the worker RNGs.
        prefetch_factor: batches each worker prepares ahead (workers > 0 only).
        device: the training device; needed when the dataset leaves decoding to it (``decode="device"``).

    Returns:
        An `HGDataLoader`, wrapped in a `DeviceDecodeLoader` when the dataset decodes on the device; call
        ``loader.set_epoch(e)`` before iterating epoch `e`.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if sampler is None and shuffle:
        sampler = EpochShuffleSampler(dataset, seed=seed)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(_mix(seed, 2**31 - 1))
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {
            "persistent_workers": True,
            "prefetch_factor": prefetch_factor,
            "worker_init_fn": functools.partial(_worker_init, owner=os.getpid()),
            "multiprocessing_context": worker_context(),
        }
    decode_on_device = getattr(dataset, "decode", "workers") == "device"
    if decode_on_device and device is None:
        raise ValueError("a dataset with decode='device' needs the device to decode on")
    loader = HGDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=workers,
        pin_memory=bool(pin_memory and torch.cuda.is_available()),
        drop_last=drop_last,
        generator=generator,
        collate_fn=collate,
        **extra,
    )
    return DeviceDecodeLoader(loader, dataset, torch.device(device)) if decode_on_device else loader
