"""A validation-like dataset that counts its fetches in a file, so the count covers DataLoader worker processes too."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class CountingDataset:
    """`n` samples shaped as the validation split's (no targets); every `__getitem__` appends one line to `log`."""

    def __init__(self, n: int, log: Path, *, res: int = 64) -> None:
        self.n, self.log, self.res = n, Path(log), res

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, b"x\n")  # one write of one line: appends from two processes never interleave
        finally:
            os.close(fd)
        return {
            "image": torch.zeros(3, self.res, self.res),
            "center": torch.full((2,), self.res / 2.0),
            "scale": torch.tensor(1.0),
            "rotation": torch.tensor(0.0),
            "index": torch.tensor(i),
        }

    def fetches(self) -> int:
        """Samples fetched so far, by any process."""
        return len(self.log.read_bytes().splitlines()) if self.log.exists() else 0
