"""`hgbench.cli` for torchrun on a stand-in GPU: ``torchrun ... -m helpers.standin_torchrun run --device cuda ...``.

tests/test_gpu_check.py runs gpu-check's NCCL step with this module in place of `hgbench.cli`, so the step's own
torchrun launch runs for real, each process on a stand-in GPU (tests/helpers/cuda_standin/, NVML faked). NCCL is
modelled by a gloo group that keeps NCCL's rules: a group asked for as ``nccl`` is made of gloo underneath; tensors
given to a collective must be on the process's current GPU; and, as NCCL does under ``NCCL_DEBUG=VERSION``, the
communicator prints ``NCCL version ...`` when it starts, which is at the group's first collective. A run that never
creates its process group, or never uses it, never prints the line. The run is cut to one small epoch (``--workers
0``: the stand-in's tensor mode is per thread) after the step's own flags; any broken CUDA rule fails the process.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import torch
import torch.distributed as dist

from helpers.cuda_standin import CudaStandin, cuda_standin
from helpers.fake_nvml import answer_for_standin, make_fake_nvml
from hgbench.cli import main

NCCL_STANDIN_VERSION = "2.99.0+hgbench-stand-in-on-gloo"
SMALL_RUN = ["--workers", "0", "--epochs", "1", "--input-res", "64", "--limit-train", "6", "--limit-val", "6"]


class NcclOnGloo:
    """`torch.distributed` as NCCL behaves for a run's collectives, on a gloo group of the same ranks."""

    def __init__(self) -> None:
        self.started = False

    def _start(self, tensors: list[torch.Tensor], what: str) -> None:
        gpu = torch.device("cuda", torch.cuda.current_device())
        for t in tensors:
            if t.device != gpu:
                raise RuntimeError(f"NCCL {what}: tensor on {t.device}, not on the current GPU {gpu}")
        if not self.started:
            self.started = True
            if os.environ.get("NCCL_DEBUG", "").upper() in ("VERSION", "INFO", "TRACE"):
                print(f"NCCL version {NCCL_STANDIN_VERSION}", flush=True)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_init, real_all_reduce, real_barrier = dist.init_process_group, dist.all_reduce, dist.barrier
        real_gather, real_broadcast = dist.all_gather_object, dist.broadcast_object_list

        def init_process_group(backend: str | None = None, **kwargs: Any) -> None:
            real_init(backend="gloo" if backend == "nccl" else backend, **kwargs)

        def all_reduce(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self._start([tensor], "all_reduce")
            return real_all_reduce(tensor, *args, **kwargs)

        def barrier(*args: Any, device_ids: list[int] | None = None, **kwargs: Any) -> Any:
            self._start([], "barrier")
            return real_barrier(*args, **kwargs)

        def gathered(real: Any, what: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                self._start([], what)
                return real(*args, **kwargs)

            return call

        monkeypatch.setattr(dist, "init_process_group", init_process_group)
        monkeypatch.setattr(dist, "all_reduce", all_reduce)
        monkeypatch.setattr(dist, "barrier", barrier)
        monkeypatch.setattr(dist, "all_gather_object", gathered(real_gather, "all_gather_object"))
        monkeypatch.setattr(dist, "broadcast_object_list", gathered(real_broadcast, "broadcast_object_list"))


def _nvml(monkeypatch: pytest.MonkeyPatch, gpu: CudaStandin) -> None:
    """The fake NVML, answering for the stand-in GPUs by their PCI bus ids (as tests/conftest.py's fixture does)."""
    fake = make_fake_nvml()
    answer_for_standin(monkeypatch, fake, gpu)
    monkeypatch.setitem(sys.modules, "pynvml", fake)


def run(argv: list[str]) -> int:
    with pytest.MonkeyPatch.context() as mp, cuda_standin(mp, device_count=1) as gpu:
        _nvml(mp, gpu)
        NcclOnGloo().install(mp)
        rc = main([*argv, *SMALL_RUN])
    if gpu.violations:
        print("CUDA rules broken:\n" + "\n".join(gpu.violations), file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
