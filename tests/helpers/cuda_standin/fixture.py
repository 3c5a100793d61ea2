"""The stand-in for one block or test: `cuda_standin` installs it and fails the test on any broken rule."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from helpers.cuda_standin.device import CudaStandin


@contextlib.contextmanager
def cuda_standin(monkeypatch: pytest.MonkeyPatch, *, device_count: int = 1) -> Iterator[CudaStandin]:
    """`CudaStandin` installed for the block; fails if any rule was broken, even where the code caught the error."""
    gpu = CudaStandin(device_count).install(monkeypatch)
    try:
        yield gpu
    finally:
        gpu.uninstall()
