"""Samplers that make a run's data order a function of (seed, epoch) alone, on any number of processes.

`GlobalBatchSampler` draws one permutation per epoch and cuts it into global batches; rank r takes the r-th slice
of every global batch. One process with batch B and W processes with batch B/W therefore see the same global batches,
and a resumed run sees the same order as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[int]):
    """Yields this rank's sample indices, global batch by global batch (drop-last: BatchNorm needs full batches)."""

    def __init__(
        self, n: int, global_batch: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True
    ) -> None:
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by the {world_size} processes")
        if n < global_batch:
            raise ValueError(f"{n} training samples are fewer than one batch of {global_batch}")
        self.n, self.global_batch, self.rank, self.world_size = n, global_batch, rank, world_size
        self.local_batch = global_batch // world_size
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        lo, hi = self.rank * self.local_batch, (self.rank + 1) * self.local_batch
        for b in range(self.n // self.global_batch):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            yield from batch[lo:hi]

    def __len__(self) -> int:
        return (self.n // self.global_batch) * self.local_batch


class ShardSampler(Sampler[int]):
    """Evaluation: rank r takes indices r, r+W, r+2W... (no padding, so nothing is counted twice)."""

    def __init__(self, n: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
