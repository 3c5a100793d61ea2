"""A spy for the rules that only bite on a GPU: no host read of a device value, no synchronous host-to-device copy.

On a CPU every tensor is a host tensor, so a loop that reads a device value every batch costs nothing and no test
notices. The spy gives the loop a device of its own to break the rule on: run it on the ``meta`` device (shapes,
no data) and every read of a meta tensor's value (``.item()``, ``float()``, ``bool()``, ``.cpu()``, ``.tolist()``,
``.numpy()``) is counted as the host waiting for the device, answered with zeros so the loop runs on; every copy of
host data to the watched device that is not ``non_blocking`` (``.to``, ``.copy_``, ``torch.tensor(..., device=)``)
is counted as a synchronous upload.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def _dummy(name: str, t: torch.Tensor) -> Any:
    zeros = torch.zeros(t.shape, dtype=t.dtype)
    if name == "cpu":
        return zeros
    if name == "numpy":
        return zeros.numpy()
    if name == "tolist":
        return zeros.tolist()
    if name == "__bool__":
        return False
    if name in ("__int__", "__index__"):
        return 0
    return 0.0 if t.dtype.is_floating_point else 0


def _target_device(args: tuple, kwargs: dict) -> torch.device | None:
    dev = kwargs.get("device")
    if dev is None and args and isinstance(args[0], (str, torch.device)):
        dev = args[0]
    if dev is None and args and isinstance(args[0], torch.Tensor):
        dev = args[0].device
    return torch.device(dev) if dev is not None else None


def _non_blocking(args: tuple, kwargs: dict) -> bool:
    if "non_blocking" in kwargs:
        return bool(kwargs["non_blocking"])
    # to(device, dtype, non_blocking) / to(other, non_blocking)
    flags = [a for a in args if isinstance(a, bool)]
    return bool(flags and flags[0])


@contextmanager
def count_host_syncs(device: torch.device, *, reads: bool = True) -> Iterator[Counter]:
    """Count host reads of `device` tensors and synchronous host-to-`device` copies while the block runs.

    Args:
        device: the device the code under test computes on (``meta`` to watch reads too).
        reads: count value reads of tensors on `device` (meaningless when `device` is the CPU).

    Yields:
        A Counter keyed by what happened (``"read:item"``, ``"upload:to"``, ...), filled as the block runs.
    """
    counts: Counter = Counter()
    on = torch.device(device)
    monkeypatch = pytest.MonkeyPatch()  # its own, undone when the block ends

    def watched(t: torch.Tensor) -> bool:
        return t.device.type == on.type

    if reads:
        for name in _READS:
            original = getattr(torch.Tensor, name)

            def read(self: torch.Tensor, *args: Any, _name: str = name, _orig: Any = original, **kwargs: Any) -> Any:
                if watched(self):
                    counts[f"read:{_name}"] += 1
                    return _dummy(_name, self)
                return _orig(self, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, read)

    original_to = torch.Tensor.to

    def to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        target = _target_device(args, kwargs)
        if target is not None and target.type == on.type and self.device.type == "cpu":
            if not _non_blocking(args, kwargs):
                counts["upload:to"] += 1
        return original_to(self, *args, **kwargs)

    original_copy = torch.Tensor.copy_

    def copy_(self: torch.Tensor, src: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
        if watched(self) and src.device.type == "cpu" and not non_blocking:
            counts["upload:copy_"] += 1
        if reads and watched(src) and self.device.type == "cpu":
            if not non_blocking:
                counts["read:copy_"] += 1
            return self  # a download from a meta tensor: nothing to copy, the host keeps what it had
        return original_copy(self, src, non_blocking)

    def creator(name: str) -> Any:
        original = getattr(torch, name)

        def create(data: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
            dev = kwargs.get("device")
            if dev is not None and torch.device(dev).type == on.type:
                counts[f"upload:{name}"] += 1
            return original(data, *args, **kwargs)

        return create

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.Tensor, "copy_", copy_)
    for name in ("tensor", "as_tensor"):
        monkeypatch.setattr(torch, name, creator(name))
    try:
        yield counts
    finally:
        monkeypatch.undo()


def fake_batches(n: int, *, batch: int = 2, res: int = 64, joints: int = 16) -> list[dict[str, torch.Tensor]]:
    """`n` collated batches shaped as the loader gives them (host tensors)."""
    g = torch.Generator().manual_seed(0)
    hm = res // 4
    return [
        {
            "image": torch.randn(batch, 3, res, res, generator=g),
            "target": torch.rand(batch, joints, hm, hm, generator=g),
            "target_weight": torch.ones(batch, joints),
            "center": torch.full((batch, 2), res / 2.0),
            "scale": torch.ones(batch),
            "rotation": torch.zeros(batch),
            "index": torch.arange(i * batch, (i + 1) * batch),
            "bad": torch.zeros(batch, dtype=torch.bool),
        }
        for i in range(n)
    ]
