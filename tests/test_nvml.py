"""Tests for hgbench.measure.nvml: the sampler on the no-driver path, on a CPU device, and against a fake NVML (energy
from the counter or the power integral, errors mid-run, init failures); the real-GPU test skips without one."""

from __future__ import annotations

import os
import sys
import time
import types

import pytest
import torch
from helpers.fake_nvml import FakeNVMLError, make_fake_nvml

from hgbench.measure.contention import other_processes
from hgbench.measure.nvml import NvmlSampler
from hgbench.measure.nvml_device import NO_DRIVER


# ------------------------------------------------------------------------------------------------------ NVML
def _nvml_really_absent() -> bool:
    try:
        import pynvml
    except ImportError:
        return True
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return True
    pynvml.nvmlShutdown()
    return False


def test_nvml_sampler_without_driver_is_null_not_fake() -> None:
    if not _nvml_really_absent():
        pytest.skip("this machine has an NVIDIA driver; the no-driver path is tested where there is none")
    with NvmlSampler("cuda", interval_s=0.01) as s:
        s.mark("a")
        s.mark("b")
        assert not s.available
        assert s.reason == NO_DRIVER
        w = s.window("a", "b")
    assert w == {
        "gpu_util_mean": None,
        "gpu_mem_used_max_mib": None,
        "power_mean_w": None,
        "energy_j": None,
        "samples": 0,
        "energy_method": None,
        "gpu_other_processes": None,
        "gpu_throttle_reasons": None,
    }
    summary = s.summary()
    assert summary["available"] is False
    assert summary["reason"] == NO_DRIVER
    assert summary["energy_j"] is None


def test_nvml_sampler_on_cpu_device() -> None:
    with NvmlSampler(torch.device("cpu")) as s:
        assert not s.available
        assert "no GPU" in s.reason
        assert s.window()["energy_j"] is None


def test_nvml_sampler_unknown_mark() -> None:
    with NvmlSampler("cpu") as s:
        s.mark("a")
        with pytest.raises(KeyError, match="nope"):
            s.window("a", "nope")


def test_nvml_sampler_energy_from_counter(fake_nvml: types.ModuleType) -> None:
    st = fake_nvml.state
    with NvmlSampler("cuda", interval_s=0.01) as s:
        assert s.available
        assert s.reason is None
        assert s.energy_counter
        s.mark("epoch1-start")
        st.mem_mib = 3072
        time.sleep(0.05)  # a few background samples inside the window
        st.energy_mj = 6000
        s.mark("epoch1-end")
        st.util, st.power_w, st.energy_mj = 0, 10.0, 9000  # after the window: must not leak into it
        time.sleep(0.03)
        s.mark("after")
        w = s.window("epoch1-start", "epoch1-end")
    assert st.shutdown == 1
    assert w["energy_method"] == "counter"
    assert w["energy_j"] == pytest.approx(5.0)  # (6000 - 1000) mJ
    assert w["gpu_util_mean"] == pytest.approx(50.0)
    assert w["power_mean_w"] == pytest.approx(100.0)
    assert w["gpu_mem_used_max_mib"] == pytest.approx(3072)
    assert w["samples"] >= 2  # the two marks (background samples depend on how busy the machine is)
    later = s.window("epoch1-end", "after")
    assert later["energy_j"] == pytest.approx(3.0)
    whole = s.summary()
    assert whole["available"]
    assert whole["errors"] == 0
    assert whole["energy_j"] == pytest.approx(8.0)


def test_nvml_sampler_integrates_power_without_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_nvml(energy=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with NvmlSampler("cuda", interval_s=0.01) as s:
        assert s.available
        assert not s.energy_counter
        t0 = time.perf_counter()
        s.mark("a")
        t1 = time.perf_counter()
        time.sleep(0.1)
        t2 = time.perf_counter()
        s.mark("b")
        t3 = time.perf_counter()
        w = s.window("a", "b")
    assert w["energy_method"] == "power_integral"
    # Constant 100 W: the trapezoid integral is 100 W x the time between the two mark samples.
    assert 100 * (t2 - t1) <= w["energy_j"] <= 100 * (t3 - t0)
    assert w["power_mean_w"] == pytest.approx(100.0)


def test_nvml_sampler_survives_errors_mid_run(fake_nvml: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NvmlSampler, "_MAX_CONSECUTIVE_ERRORS", 3)
    with NvmlSampler("cuda", interval_s=0.005) as s:
        s.mark("a")
        fake_nvml.state.broken = True
        deadline = time.perf_counter() + 60.0  # liveness only: the loop ends at the third error, however slow
        while s.reason is None and time.perf_counter() < deadline:
            time.sleep(0.01)
        s.mark("b")  # a mark while NVML is failing: recorded, not raised
        w = s.window("a", "b")
    assert s.errors > 0
    assert "mid-run" in s.reason
    assert "GPU is lost" in s.reason
    assert w["gpu_util_mean"] == pytest.approx(50.0)  # the good samples still count
    assert w["energy_method"] == "power_integral" or w["energy_j"] is None  # the end counter read failed


def test_nvml_init_failure_other_than_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_nvml()

    def fail() -> None:
        raise FakeNVMLError("Driver/library version mismatch")

    fake.nvmlInit = fail
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with NvmlSampler("cuda") as s:
        assert not s.available
        assert "version mismatch" in s.reason


def test_nvml_sampler_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_fake_nvml()
    fake.nvmlDeviceGetCount = lambda: 0
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with NvmlSampler("cuda") as s:
        assert not s.available
        assert s.reason.startswith("no GPU")


def test_nvml_sampler_real_gpu(cuda_device: torch.device) -> None:
    if _nvml_really_absent():
        pytest.skip("CUDA without an NVML library")
    with NvmlSampler(cuda_device, interval_s=0.02) as s:
        s.mark("a")
        a = torch.randn(2048, 2048, device=cuda_device)
        for _ in range(50):
            a = a @ a / 64
        torch.cuda.synchronize(cuda_device)
        s.mark("b")
        w = s.window("a", "b")
    assert s.available
    assert w["samples"] >= 2
    assert w["energy_j"] is not None
    assert w["energy_j"] >= 0


def test_nvml_energy_agrees_with_mean_power_times_time(cuda_device: torch.device) -> None:
    """Two seconds of matrix products: the energy counter (or power integral) against mean sampled power x time."""
    if _nvml_really_absent():
        pytest.skip("CUDA without an NVML library")
    a = torch.randn(4096, 4096, device=cuda_device)
    with NvmlSampler(cuda_device, interval_s=0.02) as s:
        s.mark("a")
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 2.0:
            for _ in range(20):
                a = a @ a / 64
            torch.cuda.synchronize(cuda_device)
        s.mark("b")
        elapsed = time.perf_counter() - t0
        w = s.window("a", "b")
    assert w["power_mean_w"] > 0
    assert w["energy_j"] == pytest.approx(w["power_mean_w"] * elapsed, rel=0.3)


def test_nvml_sampler_counts_other_processes_and_throttling(fake_nvml: types.ModuleType) -> None:
    """Another process on the GPU and a thermal slowdown inside a window are recorded (the contended mark's GPU
    half); idle is not a throttle reason, and readings after the window stay out of it."""
    st = fake_nvml.state
    with NvmlSampler("cuda", interval_s=0.01) as s:
        s.mark("quiet-start")
        s.mark("quiet-end")
        st.processes = [os.getpid(), 4242, 4343]
        st.throttle = 0x1 | 0x20  # idle + software thermal slowdown
        s.mark("busy-start")
        s.mark("busy-end")
        quiet, busy = s.window("quiet-start", "quiet-end"), s.window("busy-start", "busy-end")
    assert quiet["gpu_other_processes"] == 0
    assert quiet["gpu_throttle_reasons"] == ["sw_power_cap"]  # the fake's default reading (4)
    assert busy["gpu_other_processes"] == 2
    assert busy["gpu_throttle_reasons"] == ["sw_thermal_slowdown"]
    assert s.summary()["errors"] == 0


def test_other_processes_in_a_container_counts_one_as_ours() -> None:
    """NVML lists host pids, none of them ours inside a container: one of them is this run."""
    procs = [types.SimpleNamespace(pid=p) for p in (901, 902)]
    assert other_processes(procs, {os.getpid()}) == 1
    assert other_processes(procs[:1], {os.getpid()}) == 0
    assert other_processes([types.SimpleNamespace(pid=os.getpid()), *procs], {os.getpid()}) == 2


@pytest.mark.parametrize(("mode", "slice_"), [(True, True), (False, False), (None, False)])
def test_a_mig_slice_is_told_apart_from_its_whole_gpu(
    fake_nvml: types.ModuleType, mode: bool | None, slice_: bool
) -> None:
    """A MIG slice shares its GPU's PCI bus id: NVML answers for the whole board, so its telemetry says so, and the
    board's other processes (other slices' tenants) are not counted as the run's competitors. A GPU without MIG
    (NotSupported) and one with MIG off are whole GPUs."""
    from hgbench.measure.nvml import MIG_BOARD_WIDE
    from hgbench.measure.nvml_device import gpu_state

    st = fake_nvml.state
    st.mig = mode
    st.processes = [os.getpid(), 4242]
    with NvmlSampler("cuda", interval_s=0.01) as s:
        s.mark("a")
        s.mark("b")
        window = s.window("a", "b")
    summary = s.summary()
    assert summary["mig"] is slice_
    assert summary["board_wide"] == (MIG_BOARD_WIDE if slice_ else None)
    assert summary["energy_j"] is not None  # still recorded: the board's, said so
    assert window["gpu_other_processes"] == (None if slice_ else 1)
    assert gpu_state(fake_nvml, "gpu0")["mig"] is slice_
    assert gpu_state(fake_nvml, "mig-gpu0-slice1")["mig"] is True  # a slice's own handle says so itself
