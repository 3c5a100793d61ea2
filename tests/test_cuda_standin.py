"""`hgbench run` on CUDA, end to end on a CPU, under the CUDA stand-in (tests/helpers/cuda_standin/).

Each full run below covers several flags at once (a tiny hg1 at 64 px, a few people), so the file stays within a
minute of one core. The stand-in fails a test on any broken CUDA rule, including ones the code under test caught.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers.cuda_standin import STANDIN_GPU_NAME, CudaStandin, StandinViolation, cuda_standin

from hgbench.errors import HGBenchError
from hgbench.run import plan as plan_module
from hgbench.run import runner
from hgbench.run.record import validate_record
from hgbench.spec.config import RunConfig
from hgbench.train.distributed import COMPILE_UNDER_DDP, DistContext


def _run(config: RunConfig, **kw: object) -> runner.RunOutcome:
    return runner.run(config, quiet=True, progress=False, **kw)


@pytest.fixture
def small(tiny: RunConfig) -> RunConfig:
    """`tiny` cut to one training step and one validation batch of two: the stand-in is about CUDA's rules."""
    return replace(tiny, limit_train=4, limit_val=2, test_batch_size=2)


# --------------------------------------------------------------------------------------------------------------------
# The stand-in itself
# --------------------------------------------------------------------------------------------------------------------


def test_the_standin_enforces_torchs_own_argument_rules(cuda_standin: CudaStandin) -> None:
    """torch.cuda's Python layer runs: a device without an index is refused where torch refuses it."""
    with pytest.raises(ValueError, match="Expected a torch.device with a specified index"):
        torch.cuda.set_device(torch.device("cuda"))
    torch.cuda.set_device(torch.device("cuda", 1))
    assert torch.cuda.current_device() == 1
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.cuda.set_device(2)
    torch.cuda.set_device(0)
    assert torch.zeros(2, device="cuda").device == torch.device("cuda", 0)  # a bare "cuda" is the current GPU


def test_the_standin_refuses_mixed_devices_host_reads_in_loops_and_pageable_async_uploads(
    cuda_standin: CudaStandin,
) -> None:
    from hgbench.measure.timing import StepTimer

    x = torch.ones(3, device="cuda:0")
    with pytest.raises(RuntimeError, match="cuda:0 and cpu"):
        x + torch.ones(3)
    with pytest.raises(RuntimeError, match="cuda:0 and cuda:1"):
        x + torch.ones(3, device="cuda:1")
    assert (x + torch.tensor(2.0)).device == x.device  # a host scalar is fine, as on a GPU
    assert float(x.sum()) == 3.0  # outside a batch loop the host may read (real values: the CPU computed them)
    with pytest.raises(StandinViolation, match="pageable"):
        torch.ones(4).to("cuda", non_blocking=True)
    assert torch.ones(4).pin_memory().to("cuda", non_blocking=True).is_cuda
    loop = StepTimer(torch.device("cuda", 0)).iter_data([1, 2])
    next(loop)
    with pytest.raises(StandinViolation, match="inside a batch loop"):
        float(x.sum())
    loop.close()
    cuda_standin.violations.clear()  # provoked on purpose


def test_the_standin_orders_streams_like_cuda(cuda_standin: CudaStandin) -> None:
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        y = torch.ones(4, device="cuda") * 2
    with pytest.raises(StandinViolation, match="without waiting"):
        y + 1  # the main stream reads what the side stream may not have written yet
    torch.cuda.current_stream().wait_stream(side)
    assert (y + 1).device.type == "cuda"
    assert ("cuda:0/stream0", "wait_stream(cuda:0/stream1)", "cuda:0/stream1") in cuda_standin.waits
    del y  # freed on the side stream while the main stream's read may still be queued
    assert any("record_stream" in v for v in cuda_standin.violations)
    cuda_standin.violations.clear()  # provoked on purpose
    with torch.cuda.stream(side):
        z = torch.ones(4, device="cuda")
    event = torch.cuda.Event()
    event.record(side)
    event.wait(torch.cuda.current_stream())
    assert (z + 1).device.type == "cuda"
    z.record_stream(torch.cuda.current_stream())
    del z
    assert not cuda_standin.violations


def test_nothing_of_the_standin_outlives_it() -> None:
    stream_type, available, autotune = torch.cuda.Stream, torch.cuda.is_available(), torch.backends.cudnn.benchmark
    with pytest.MonkeyPatch.context() as mp, cuda_standin(mp, device_count=2):
        assert torch.cuda.is_available()
        assert torch.ones(1, device="cuda").is_cuda
        torch.cuda.set_device(1)
        torch.backends.cudnn.benchmark = not autotune
    assert torch.cuda.Stream is stream_type
    assert torch.cuda.is_available() == available
    assert torch.backends.cudnn.benchmark == autotune
    assert torch.ones(1).device.type == "cpu"


# --------------------------------------------------------------------------------------------------------------------
# Defect 1: a bare "cuda" crashed every default GPU run in torch.cuda.set_device
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [("auto", "cuda:0"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1")])
def test_a_cuda_device_is_resolved_with_its_index(cuda_standin: CudaStandin, name: str, expected: str) -> None:
    assert plan_module.resolve_device(name) == torch.device(expected)


def test_resolving_a_device_leaves_cuda_uninitialised_and_follows_set_device(cuda_standin: CudaStandin) -> None:
    """The sweep's skip check resolves devices in the driver, which must not initialise CUDA for nothing."""
    assert plan_module.resolve_device("auto") == torch.device("cuda", 0)
    assert not torch.cuda.is_initialized()
    torch.cuda.set_device(1)
    assert plan_module.resolve_device("cuda") == torch.device("cuda", 1)


def test_a_gpu_the_machine_does_not_have_is_a_one_line_error(cuda_standin: CudaStandin) -> None:
    with pytest.raises(HGBenchError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\)"):
        plan_module.resolve_device("cuda:2")


def test_under_torchrun_each_process_takes_its_local_gpu(cuda_standin: CudaStandin) -> None:
    ctx = DistContext(rank=1, world_size=2, local_rank=1, device=torch.device("cuda", 1))
    assert plan_module.resolve_device("cuda", ctx) == torch.device("cuda", 1)


# --------------------------------------------------------------------------------------------------------------------
# Whole runs
# --------------------------------------------------------------------------------------------------------------------


def _record(outcome: runner.RunOutcome, tmp_path: Path) -> dict:
    assert outcome.status == "finished"
    assert outcome.record_path is not None
    assert outcome.record_path.is_relative_to(tmp_path)
    record = json.loads(outcome.record_path.read_text())
    assert validate_record(record) == []
    info = record["machine_info"]
    # Written by the stand-in, and saying so: the machine id can never be a real GPU's, so no report pools it.
    assert info["gpu_name"] == STANDIN_GPU_NAME
    assert "stand-in" in info["machine_id"]
    assert "stand-in" in str(outcome.record_path)
    return record


def test_a_default_gpu_run_reaches_a_finished_record(
    small: RunConfig, tmp_path: Path, cuda_standin: CudaStandin
) -> None:
    """``--device auto`` (the default) on a machine with GPUs: the crash of defect 1, then the whole pipeline."""
    record = _record(_run(replace(small, device="auto")), tmp_path)
    assert record["config"]["device"] == "auto"
    assert record["machine_info"]["device"] == "cuda"
    assert record["machine_info"]["gpu_state"]["power_limit_w"] == 300.0  # NVML found the GPU by its PCI bus id
    epoch = record["results"]["epochs"][0]
    assert epoch["device_idle_s"] is not None  # CUDA events timed the steps
    assert epoch["decode_host_s"] is None  # decoded by the workers
    assert record["results"]["inference"]["plain"]["device_min"] is not None
    assert record["results"]["peak_memory_mib"] > 0
    assert epoch["energy_j"] is not None
    assert "torch.cuda.synchronize(cuda:0)" in cuda_standin.host_syncs


def test_a_run_on_a_mig_slice_says_its_telemetry_is_the_whole_boards(
    small: RunConfig, tmp_path: Path, cuda_standin: CudaStandin, fake_nvml: object
) -> None:
    """With MIG on, the GPU CUDA runs on is a slice and NVML answers for its whole board: the record says so where
    the telemetry is and in its contention, and the table's reader keeps it apart from whole-GPU runs."""
    from hgbench.measure.nvml import MIG_BOARD_WIDE
    from hgbench.run.run_summary import summarize

    fake_nvml.state.mig = True
    outcome = _run(replace(small, device="cuda"))
    record = _record(outcome, tmp_path)
    assert record["machine_info"]["gpu_state"]["mig"] is True
    telemetry = record["results"]["telemetry"]
    assert (telemetry["mig"], telemetry["board_wide"]) == (True, MIG_BOARD_WIDE)
    assert telemetry["energy_j"] is not None  # measured, and marked as the board's
    contention = record["results"]["contention"]
    assert contention["mig_slice"] is True
    assert "MIG slice" in contention["board_wide"]
    assert summarize(record, outcome.record_path).mig_slice is True


def test_a_run_on_the_second_gpu_with_amp_channels_last_and_resume(
    small: RunConfig, tmp_path: Path, cuda_standin: CudaStandin
) -> None:
    config = replace(small, device="cuda:1", amp=True, channels_last=True, epochs=2)
    first = _run(config, stop_after_epoch=1)
    assert first.status == "interrupted"
    assert torch.cuda.current_device() == 1
    torch.cuda.set_device(0)  # a new process starts on GPU 0
    record = _record(_run(config, must_resume=True), tmp_path)
    assert record["config"]["device"] == "cuda:1"
    assert [e["epoch"] for e in record["results"]["epochs"]] == [1, 2]
    # Every event and stream the run used was on GPU 1; GPU 0 did nothing.
    assert all(label.startswith("cuda:1") for label, _, _ in cuda_standin.waits)
    assert cuda_standin.autocast_ops > 0
    assert cuda_standin.peak_bytes[0] == 0


# --------------------------------------------------------------------------------------------------------------------
# --decode device: defect 3 (hand-overs between streams) and defect 9 (a pageable upload per validation batch)
# --------------------------------------------------------------------------------------------------------------------


def _device_loader(root: Path, split: str, batch: int) -> object:
    from hgbench.data.loader import make_loader
    from hgbench.data.mpii import MPIIDataset

    ds = MPIIDataset(root, split, input_res=64, augment=split == "train", decode="device")
    cuda = torch.device("cuda", 0)
    return make_loader(ds, batch, shuffle=False, workers=0, pin_memory=True, drop_last=False, device=cuda)


def test_device_decode_orders_every_hand_over_between_streams(synthetic_root: Path, cuda_standin: CudaStandin) -> None:
    """Batch k+1 is decoded and cropped on a side stream while step k runs on the main one. nvjpeg (torchvision)
    writes its outputs from a stream of its own that does not wait for the stream it allocated them on; decoded on
    the side stream, they could be blocks batch k's crops were freed from while its reads were still queued. And what
    the main stream reads must be waited for and handed to it (record_stream)."""
    batches = 0
    for batch in _device_loader(synthetic_root, "train", 4):  # 16 people: 4 batches, each one prepared ahead
        # consumed on the main stream, as a training step does
        loss = batch["image"].mean() + (batch["target"] * batch["target_weight"][..., None, None]).sum()
        del loss
        batches += 1
    assert batches == cuda_standin.decodes == 4
    hand_overs = {(waiter, what.split("(")[0]) for waiter, what, _ in cuda_standin.waits}
    assert ("cuda:0/stream0", "wait_stream") in hand_overs  # the main stream waits for each prepared batch


def test_validation_on_device_decoded_batches_uploads_only_from_pinned_memory(
    synthetic_root: Path, cuda_standin: CudaStandin
) -> None:
    """Every upload in the validation loop is asynchronous, so from pinned memory: the ``bad`` flags too."""
    from hgbench.models import build_model
    from hgbench.spec.cases import get_spec
    from hgbench.train.inference import predict
    from hgbench.train.training import StepOptions

    cuda = torch.device("cuda", 0)
    model = build_model(get_spec("hg1")).to(cuda)
    result = predict(model, _device_loader(synthetic_root, "val", 4), StepOptions(cuda), input_res=64)
    assert len(result.index) == 8


def test_a_fast_run_decodes_on_the_gpu(small: RunConfig, tmp_path: Path, cuda_standin: CudaStandin) -> None:
    """``--fast`` on CUDA: channels_last, bf16 autocast, torch.compile (run eagerly by the stand-in) and JPEGs decoded
    and cropped on the GPU, prepared one batch ahead on a side stream."""
    record = _record(_run(replace(small, device="cuda", fast=True)), tmp_path)
    config = record["config"]
    assert (config["decode"], config["amp"], config["channels_last"], config["compile"]) == ("device", True, True, True)
    assert cuda_standin.decodes >= 3  # training, validation and the inference passes all decoded on the "GPU"
    assert cuda_standin.autocast_ops > 0
    # torchvision's decode synchronised its stream every batch (the host blocked), and the record says for how long:
    # part of the epoch's data wait.
    assert cuda_standin.decoder_syncs == cuda_standin.decodes
    (epoch,) = record["results"]["epochs"]
    assert 0 < epoch["decode_host_s"] <= epoch["data_wait_s"]


def test_a_two_process_nccl_run(
    small: RunConfig, tmp_path: Path, cuda_standin: CudaStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0 of a torchrun job of two processes on two GPUs (the other rank mirrored by `NcclLikeGroup`): NCCL's
    process group, each process on its own GPU, every collective on it, SyncBatchNorm and DDP on the GPU."""
    from helpers.cuda_standin import NcclLikeGroup

    group = NcclLikeGroup(torch.device("cuda", 0)).install(monkeypatch)
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    torch.cuda.set_device(1)  # torchrun starts every process on GPU 0... or wherever: the run must choose its own
    record = _record(_run(replace(small, device="cuda", decode="device", compile=True)), tmp_path)
    assert [i["backend"] for i in group.inits] == ["nccl"]
    assert set(group.reduced) == {torch.device("cuda", 0)}
    assert record["config"]["world_size"] == 2
    assert record["results"]["epochs"][0]["images"] == small.limit_train
    # --compile under torchrun is dropped, as --fast leaves it off there, and the record says why.
    assert record["config"]["compile"] is False
    assert record["results"]["compile"] is None
    assert record["setting_notes"] == [f"--compile dropped: {COMPILE_UNDER_DDP}"]


def test_cuda_only_lines_are_read_from_the_source() -> None:
    """`make coverage`'s definition (tests/helpers/cuda_lines.py): CUDA branches, what follows a non-CUDA early return,
    and functions marked ``# cuda-only``; never a branch that runs only without a GPU."""
    from helpers.cuda_lines import cuda_only_lines

    source = """
def f(device, ready):
    if device.type == "cuda":
        a = 1
        if not torch.cuda.is_available():
            raise RuntimeError
    else:
        b = 2
    if device.type != "cuda":
        return 0
    c = 3
    if self.cuda and ready:
        d = 4
    if cuda or ready:
        e = 5
def g():  # cuda-only
    h = 6
"""
    assert sorted(cuda_only_lines(source)) == [4, 5, 11, 12, 13, 14, 15, 17]


# --------------------------------------------------------------------------------------------------------------------
# The rest of the CUDA-only lines: hgbench bench, the clocks, NVML's lookup, the bf16 rule
# --------------------------------------------------------------------------------------------------------------------


def test_bench_on_cuda_times_modes_with_cuda_events(cuda_standin: CudaStandin, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hgbench bench --device cuda` in its CUDA-graphs mode, the conv peak measured on a small conv. On a V100
    (no native bf16), so the ladder runs in fp32: bf16 on a CPU without it is emulated, and slow."""
    import functools

    from hgbench.run import bench

    cuda_standin.capability = (7, 0)
    peak = bench.measure_peak_conv_tflops
    monkeypatch.setattr(
        bench, "measure_peak_conv_tflops", functools.partial(peak, batch=1, channels=8, size=8, iters=2)
    )
    config = bench.BenchConfig("hg1", False, 2, 1, 1, 64, "cuda", ("cudagraphs",))
    record = bench.run_bench(_spec("hg1"), config)
    assert record["device_peak"]["conv_tflops"] > 0
    result = record["results"]["cudagraphs"]
    assert result["status"] == "ok", result["reason"]
    assert result["settings"]["amp"] is False
    assert result["train"]["clock"] == "cuda_event"
    assert record["machine_info"]["gpu_name"] == STANDIN_GPU_NAME


def _spec(case: str) -> object:
    from hgbench.spec.cases import get_spec

    return get_spec(case)


def test_the_clocks_on_cuda(cuda_standin: CudaStandin) -> None:
    from hgbench.measure.timing import StepTimer, as_device

    assert as_device("cuda") == torch.device("cuda", 0)
    timer = StepTimer("cuda:1", capacity=1)
    for _ in range(2):  # one more step than events made up front: more are made, none in the timed bracket's way
        timer.compute_start()
        timer.compute_end()
    summary = timer.summary()
    assert summary["steps"] == 2
    assert summary["clock"] == "cuda_event"
    assert cuda_standin.host_syncs == ["torch.cuda.synchronize(cuda:1)"]


def test_nvml_finds_the_gpu_by_index_when_its_pci_bus_id_is_unknown(cuda_standin: CudaStandin, fake_nvml) -> None:
    from hgbench.measure.nvml_device import nvml_handle

    assert nvml_handle(fake_nvml, torch.device("cuda", 1)) == "gpu1"  # by its PCI bus id
    fake_nvml.nvmlDeviceGetHandleByPciBusId = lambda bus: (_ for _ in ()).throw(RuntimeError("Not Found"))
    assert nvml_handle(fake_nvml, torch.device("cuda", 1)) == "gpu1"  # by index


def test_a_gpu_without_native_bf16_gets_no_bf16_rung(cuda_standin: CudaStandin) -> None:
    from hgbench.train.speed_modes import best_mode, plan_modes

    cuda_standin.capability = (7, 0)  # a V100
    assert best_mode("cuda:0")["amp"] is False
    [bf16] = plan_modes(["bf16"], "cuda:0")
    assert bf16.settings is None
    assert "no native bf16" in bf16.skip_reason


@pytest.mark.parametrize("trouble", ["no pynvml", "no devices", "lookup fails", "no energy counter"])
def test_nvml_trouble_on_a_gpu_leaves_telemetry_null_with_the_reason(
    cuda_standin: CudaStandin, fake_nvml, monkeypatch: pytest.MonkeyPatch, trouble: str
) -> None:
    import sys

    from helpers.fake_nvml import FakeNVMLError

    from hgbench.measure.nvml import NvmlSampler

    def fail(*args: object) -> None:
        raise FakeNVMLError("Unknown Error")

    if trouble == "no pynvml":
        monkeypatch.setitem(sys.modules, "pynvml", None)
    elif trouble == "no devices":
        monkeypatch.setattr(fake_nvml, "nvmlDeviceGetCount", lambda: 0)
    elif trouble == "lookup fails":
        monkeypatch.setattr(fake_nvml, "nvmlDeviceGetHandleByPciBusId", fail)
        monkeypatch.setattr(fake_nvml, "nvmlDeviceGetHandleByIndex", fail)
    else:
        monkeypatch.setattr(fake_nvml, "nvmlDeviceGetTotalEnergyConsumption", fail)
    with NvmlSampler(torch.device("cuda", 0), interval_s=60) as sampler:
        pass
    if trouble == "no energy counter":
        assert sampler.available
        assert not sampler.energy_counter
    else:
        assert not sampler.available
        assert {"no pynvml": "pynvml not installed", "no devices": "NVML sees no devices"}.get(
            trouble, "NVML device lookup failed"
        ) in sampler.reason
