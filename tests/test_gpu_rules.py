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
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.cuda_standin import NcclLikeGroup
from helpers.host_sync import count_host_syncs, fake_batches
from torch import nn

from hgbench.data.device_decode import DeviceDecodeLoader
from hgbench.data.loader import make_loader
from hgbench.data.mpii import MPIIDataset
from hgbench.measure import nvml
from hgbench.measure.timing import StepTimer
from hgbench.models import build_model
from hgbench.run import runner
from hgbench.run import state as state_module
from hgbench.run.plan import make_plan
from hgbench.spec.cases import get_spec
from hgbench.spec.config import RunConfig
from hgbench.train.distributed import DistContext
from hgbench.train.inference import predict
from hgbench.train.training import AsyncScalar, StepOptions, train_one_epoch


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


def test_every_collective_of_a_run_takes_tensors_on_the_process_groups_device(
    tiny: RunConfig, lazy_device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = NcclLikeGroup(lazy_device)
    group.install(monkeypatch)
    gpu_window = {"gpu_util_mean": 50.0, "gpu_mem_used_max_mib": 900.0, "power_mean_w": 100.0, "energy_j": 5.0}
    monkeypatch.setattr(nvml.NvmlSampler, "window", lambda self, *marks: {**gpu_window, "samples": 3})
    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=lazy_device)
    config = tiny
    outcome = runner._run(
        config, get_spec(config.case), ctx, resume=False, quiet=True, progress=False, stop_after_epoch=None
    )
    assert outcome.status == "finished"
    assert len(group.reduced) >= 4  # images and loss, val loss, accuracy counts, batches
    epoch = outcome.record["results"]["epochs"][-1]
    assert epoch["images"] == config.limit_train  # rank 0 trained half; the sum over ranks counts both halves
    # Each rank measures its own GPU: the epoch's energy and power are both GPUs', not rank 0's half.
    assert (epoch["energy_j"], epoch["power_mean_w"]) == (10.0, 200.0)
    assert (epoch["gpu_util_mean"], epoch["gpu_mem_used_max_mib"]) == (50.0, 900.0)


def test_a_nan_on_one_rank_stops_every_rank_together(
    tiny: RunConfig, lazy_device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rank that stopped alone would leave the others waiting in DDP's all-reduce until torchrun killed them, and
    rank 0's record would say "interrupted, continue with --resume" into the same divergence."""
    import json

    from hgbench.errors import RunFailed
    from hgbench.train import training

    NcclLikeGroup(lazy_device).install(monkeypatch)
    loss = training.heatmap_loss
    monkeypatch.setattr(training, "heatmap_loss", lambda *a: loss(*a) * float("nan"))
    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=lazy_device)
    with pytest.raises(RunFailed, match=r"loss became nan in epoch 1 \(on 2 processes\)"):  # from the collective
        runner._run(tiny, get_spec(tiny.case), ctx, resume=False, quiet=True, progress=False, stop_after_epoch=None)
    [path] = Path(tiny.out).rglob("*.json")
    assert json.loads(path.read_text())["status"] == "failed"


def test_gpu_windows_combine_into_the_runs_and_a_missing_one_makes_energy_unknown() -> None:
    a = {"gpu_util_mean": 90.0, "gpu_mem_used_max_mib": 800.0, "power_mean_w": 300.0, "energy_j": 30.0, "samples": 9}
    b = {**a, "gpu_util_mean": 70.0, "gpu_mem_used_max_mib": 1000.0, "energy_j": 20.0, "samples": 8}
    both = nvml.combine_windows([a, b])
    assert both["energy_j"] == 50.0
    assert both["power_mean_w"] == 600.0
    assert both["gpu_util_mean"] == 80.0
    assert both["gpu_mem_used_max_mib"] == 1000.0
    assert both["samples"] == 8
    assert nvml.combine_windows([a, {**b, "energy_j": None}])["energy_j"] is None  # never one GPU's as the run's


def test_a_resumed_adam_keeps_its_step_on_the_host(tiny: RunConfig) -> None:
    """On a GPU a `step` on the device is read back for every parameter at every optimizer.step(): a resumed run
    would train slower than the run it continues. The plan's device is ``meta`` here, standing in for the GPU."""
    spec = get_spec(tiny.case)
    model = build_model(spec)
    optimizer = torch.optim.Adam(model.parameters())
    sum(p.sum() for p in model.parameters()).backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1])
    saved = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": state_module._rng_state(),
        "best_pckh": None,
    }
    plan = SimpleNamespace(config=tiny, spec=spec, device=torch.device("meta"), ctx=DistContext(), init_weights=None)
    restored = state_module.build_state(plan, SimpleNamespace(state=saved, epoch=1), has_unused_params=False)
    slots = list(restored.optimizer.state.values())
    assert slots
    assert {s["exp_avg"].device.type for s in slots} == {"meta"}
    assert {s["step"].device.type for s in slots} == {"cpu"}


class _Stream:
    def __init__(self, device: str | torch.device) -> None:
        self.device = torch.device(device)


def test_cuda_events_are_recorded_on_the_runs_gpu_not_the_current_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --device cuda:1 in one process, GPU 0 is the current device: events recorded there time nothing."""
    recorded: list[torch.device] = []

    class Event:
        def __init__(self, **kwargs: object) -> None:
            pass

        def record(self, stream: _Stream | None = None) -> None:
            recorded.append((stream or _Stream("cuda:0")).device)  # a bare record(): the current device's stream

        def query(self) -> bool:
            return True

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _Stream(device or "cuda:0"))
    zeros = torch.zeros
    monkeypatch.setattr(torch, "zeros", lambda *a, pin_memory=False, **kw: zeros(*a, **kw))  # nothing to pin for here
    gpu1 = torch.device("cuda", 1)
    timer = StepTimer(gpu1, capacity=2)
    timer.compute_start()
    timer.compute_end()
    AsyncScalar(gpu1, slots=2).post(torch.tensor(1.0))  # the NaN check's mirror of the loss
    assert recorded == [gpu1] * 3


@pytest.mark.parametrize(("name", "current"), [("cuda:1", 1), ("cuda", 0), ("auto", 0)])
def test_a_run_on_a_gpu_makes_it_the_current_device(tiny: RunConfig, cuda_standin, name: str, current: int) -> None:
    """torch.cuda.set_device runs as on a GPU (the stand-in answers only its C layer), so a device without an index,
    which torch refuses there, fails here too."""
    plan = make_plan(replace(tiny, device=name), get_spec(tiny.case), DistContext())
    assert plan.device == torch.device("cuda", current)
    assert torch.cuda.current_device() == current


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


def test_every_process_gets_a_validation_person(tiny: RunConfig) -> None:
    """DDP broadcasts its buffers on the first validation forward: a process without a validation batch would skip
    that collective and every process would hang."""
    from hgbench.errors import HGBenchError

    ctx = DistContext(rank=0, world_size=4, local_rank=0)
    with pytest.raises(HGBenchError, match="3 validation people are fewer than the 4 processes"):
        make_plan(replace(tiny, limit_val=3), get_spec(tiny.case), ctx)
