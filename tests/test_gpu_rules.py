"""The rules that only bite on a GPU, made to fail on a CPU.

- Collectives take tensors on the process group's device (NCCL rejects host tensors): the real run code is driven
  with a process context whose device is a second, non-CPU device (PyTorch's ``lazy`` device, which runs on the
  CPU), and collectives that reject anything else.
- No per-batch host read of a device value and no synchronous host-to-device copy inside the timed loops: the loops
  run on the ``meta`` device under a spy (tests/helpers/host_sync.py); the count must not grow with the batches.
- On a GPU the same loops also run under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers.host_sync import count_host_syncs, fake_batches
from torch import nn

from hgbench import runner
from hgbench.cases import get_spec
from hgbench.config import RunConfig
from hgbench.data.device_decode import DeviceDecodeLoader
from hgbench.data.loader import make_loader
from hgbench.data.mpii import MPIIDataset
from hgbench.distributed import DistContext
from hgbench.inference import predict
from hgbench.models import build_model
from hgbench.training import StepOptions, train_one_epoch


@pytest.fixture(scope="module")
def lazy_device() -> torch.device:
    """A device that is not the CPU yet runs on it (TorchScript's lazy-tensor backend)."""
    try:
        import torch._lazy
        import torch._lazy.ts_backend

        torch._lazy.ts_backend.init()
        probe = torch.ones(2, dtype=torch.float64).to("lazy")
        assert probe.sum().item() == 2.0
    except Exception as exc:  # not built into every torch
        pytest.skip(f"PyTorch's lazy device is unavailable: {exc}")
    return torch.device("lazy", 0)


class NcclLikeGroup:
    """Stands in for a process group of two identical ranks whose collectives, like NCCL's, refuse tensors that are
    not on the group's device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reduced: list[torch.device] = []

    def all_reduce(self, tensor: torch.Tensor, op: object = None, **kwargs: object) -> None:
        if tensor.device != self.device:
            raise RuntimeError(f"collective on a tensor on {tensor.device}; the group's device is {self.device}")
        self.reduced.append(tensor.device)
        tensor.mul_(2)  # the other rank holds the same value

    def all_gather_object(self, out: list, obj: object, **kwargs: object) -> None:
        out[:] = [obj] * len(out)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)
        monkeypatch.setattr(dist, "all_gather_object", self.all_gather_object)
        monkeypatch.setattr(dist, "broadcast_object_list", lambda box, src=0, **kw: None)
        monkeypatch.setattr(dist, "barrier", lambda *a, **kw: None)
        # One process plays rank 0: DDP's own gradient all-reduce needs a real group and is not what is tested here.
        monkeypatch.setattr(nn.parallel, "DistributedDataParallel", lambda model, **kw: model)


def test_every_collective_of_a_run_takes_tensors_on_the_process_groups_device(
    tiny: RunConfig, lazy_device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = NcclLikeGroup(lazy_device)
    group.install(monkeypatch)
    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=lazy_device)
    config = tiny
    outcome = runner._run(
        config, get_spec(config.case), ctx, resume=False, quiet=True, progress=False, stop_after_epoch=None
    )
    assert outcome.status == "finished"
    assert len(group.reduced) >= 4  # images and loss, val loss, accuracy counts, batches
    epoch = outcome.record["results"]["epochs"][-1]
    assert epoch["images"] == config.limit_train  # rank 0 trained half; the sum over ranks counts both halves


def _meta_model(case: str = "hg2") -> nn.Module:
    return build_model(get_spec(case)).to("meta")


@pytest.mark.parametrize("loop", ["train", "validate", "infer-flip"])
def test_the_timed_loops_never_wait_for_the_device_per_batch(loop: str) -> None:
    meta = torch.device("meta")
    opts = StepOptions(meta)

    def run(batches: int):
        model = _meta_model()
        data = fake_batches(batches)
        with count_host_syncs(meta) as counts:
            if loop == "train":
                train_one_epoch(model, data, torch.optim.Adam(model.parameters()), opts, epoch=1)
            else:
                predict(model, data, opts, input_res=64, flip=loop == "infer-flip", with_targets=loop == "validate")
        return counts

    few, many = run(2), run(6)
    # Anything done once per pass (the final read of the loss, the coordinates) is allowed; nothing per batch.
    assert many == few, f"per-batch host syncs: {dict(many - few)}"


def test_the_spy_catches_a_per_batch_read_and_a_blocking_upload() -> None:
    meta = torch.device("meta")
    with count_host_syncs(meta) as counts:
        for _ in range(3):
            x = torch.ones(2).to(meta)
            float(x.sum())
    assert counts == {"upload:to": 3, "read:__float__": 3}


def test_device_batch_preparation_never_uploads_synchronously(synthetic_root: Path) -> None:
    """On CUDA a blocking upload on the side stream would wait for the running step: no overlap."""
    cpu = torch.device("cpu")
    ds = MPIIDataset(synthetic_root, "train", input_res=64, augment=True, decode="device")
    loader = make_loader(ds, 4, shuffle=False, workers=0, pin_memory=False, drop_last=True, device=cpu)
    assert isinstance(loader, DeviceDecodeLoader)
    batch = next(iter(loader.loader))
    with count_host_syncs(cpu, reads=False) as counts:
        out = loader.prepare(batch)
    assert out["image"].shape == (4, 3, 64, 64)
    assert not counts, dict(counts)


@pytest.mark.parametrize("loop", ["train", "validate", "infer-flip"])
def test_the_timed_loops_under_cuda_sync_debug_mode(cuda_device: torch.device, loop: str) -> None:
    """The real loops under ``set_sync_debug_mode("warn")``: the synchronisations must not grow with the batches."""
    opts = StepOptions(cuda_device)
    model = build_model(get_spec("hg2")).to(cuda_device)
    optimizer = torch.optim.Adam(model.parameters())

    def syncs(batches: int) -> int:
        data = [{k: v.pin_memory() for k, v in b.items()} for b in fake_batches(batches)]
        torch.cuda.synchronize(cuda_device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                if loop == "train":
                    train_one_epoch(model, data, optimizer, opts, epoch=1)
                else:
                    predict(model, data, opts, input_res=64, flip=loop == "infer-flip", with_targets=loop == "validate")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(2)  # warm-up: allocator, cuDNN autotuning, the flip index
    assert syncs(6) == syncs(2)
