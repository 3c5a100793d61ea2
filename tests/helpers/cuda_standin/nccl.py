"""A process group of two ranks as NCCL's collectives behave (this process plays rank 0), for a run under the
stand-in: a collective on a tensor off the group's device, or an object collective through another current GPU,
fails as on NCCL; DDP's `device_ids` are checked and the module is not wrapped."""

from __future__ import annotations

from typing import Any

import pytest
import torch


class NcclLikeGroup:
    """Stands in for a process group of two identical ranks whose collectives, like NCCL's, refuse tensors that are
    not on the group's device; this process plays rank 0.

    NCCL's object collectives (``all_gather_object``, ``broadcast_object_list``) move the pickled object through the
    *current* CUDA device, so on CUDA that must be the process's own GPU; ``barrier`` takes ``device_ids``; DDP takes
    ``device_ids=[index]`` of the module's GPU (torch's `_get_device_index` checks the form). DDP itself is replaced
    by the module (its gradient all-reduce needs a real group and is not what is tested).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reduced: list[torch.device] = []
        self.inits: list[dict] = []

    def _current_gpu(self, what: str) -> None:
        if self.device.type == "cuda" and torch.cuda.current_device() != self.device.index:
            raise RuntimeError(
                f"{what} on NCCL goes through the current GPU {torch.cuda.current_device()}, not {self.device}"
            )

    def all_reduce(self, tensor: torch.Tensor, op: object = None, **kwargs: object) -> None:
        if tensor.device != self.device:
            raise RuntimeError(f"collective on a tensor on {tensor.device}; the group's device is {self.device}")
        self.reduced.append(tensor.device)
        tensor.mul_(2)  # the other rank holds the same value

    def all_gather_object(self, out: list, obj: object, **kwargs: object) -> None:
        self._current_gpu("all_gather_object")
        out[:] = [obj] * len(out)

    def broadcast_object_list(self, box: list, src: int = 0, **kwargs: object) -> None:
        self._current_gpu("broadcast_object_list")

    def barrier(self, *args: object, device_ids: list | None = None, **kwargs: object) -> None:
        if self.device.type == "cuda" and device_ids != [self.device.index]:
            raise RuntimeError(f"barrier(device_ids={device_ids}) on a group of {self.device}")

    def init_process_group(self, backend: str | None = None, **kwargs: object) -> None:
        self._current_gpu("init_process_group")
        self.inits.append({"backend": backend, **kwargs})

    def ddp(self, module: Any, device_ids: list | None = None, **kwargs: object) -> Any:
        from torch._utils import _get_device_index

        devices = {p.device for p in module.parameters()}
        if len(devices) != 1:
            raise ValueError(f"DistributedDataParallel's module is on {sorted(map(str, devices))}")
        (dev,) = devices
        if dev.type == "cuda":
            if device_ids is None or len(device_ids) != 1:
                raise ValueError("device_ids can only be None or contain a single element.")
            if _get_device_index(device_ids[0], True) != dev.index:
                raise ValueError(f"device_ids={device_ids} but the module is on {dev}")
        elif device_ids is not None:
            raise ValueError(f"DistributedDataParallel device_ids={device_ids} only work with GPU modules")
        return module

    def install(self, monkeypatch: pytest.MonkeyPatch) -> NcclLikeGroup:
        import torch.distributed as dist

        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)
        monkeypatch.setattr(dist, "all_gather_object", self.all_gather_object)
        monkeypatch.setattr(dist, "broadcast_object_list", self.broadcast_object_list)
        monkeypatch.setattr(dist, "barrier", self.barrier)
        monkeypatch.setattr(dist, "init_process_group", self.init_process_group)
        monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", self.ddp)
        return self
