"""Tests for hgbench.telemetry: the step timer, time_fn, the NVML sampler (no-driver path and a fake NVML), and
environment / commit capture. CUDA variants use the `cuda_device` fixture and skip without a GPU."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from hgbench import telemetry
from hgbench.results import machine_id
from hgbench.telemetry import (
    NO_DRIVER,
    NvmlSampler,
    StepTimer,
    TimingStats,
    collect_commit_info,
    collect_environment,
    peak_memory_mib,
    reset_peak_memory,
    time_fn,
)

STAT_KEYS = {"min", "max", "mean", "stddev", "median", "iqr", "rounds", "data"}


# ------------------------------------------------------------------------------------------------------ StepTimer
def _fake_epoch(timer: StepTimer, steps: int, data_s: float, compute_s: float) -> None:
    for _ in range(steps):
        timer.data_start()
        time.sleep(data_s)
        timer.data_end()
        timer.compute_start()
        time.sleep(compute_s)
        timer.compute_end()


def test_step_timer_separates_data_wait_and_compute_on_cpu() -> None:
    timer = StepTimer("cpu")
    _fake_epoch(timer, steps=3, data_s=0.04, compute_s=0.02)
    s = timer.summary()
    assert s["steps"] == 3
    assert s["clock"] == "perf_counter"
    assert s["device_idle_s"] is None
    # Lower bounds only: a loaded machine may stretch a sleep by any amount, never shorten it.
    assert s["data_wait_s"] >= 0.12
    assert s["compute_s"] >= 0.06
    assert len(s["per_step_compute_ms"]) == 3
    assert all(ms >= 20.0 for ms in s["per_step_compute_ms"])
    assert s["compute_s"] == pytest.approx(sum(s["per_step_compute_ms"]) / 1000)
    assert s["wall_s"] >= s["data_wait_s"] + s["compute_s"]


def test_step_timer_iter_data_and_context_managers() -> None:
    def slow_loader() -> types.GeneratorType:
        for i in range(2):
            time.sleep(0.03)
            yield i

    timer = StepTimer("cpu")
    seen = []
    for item in timer.iter_data(slow_loader()):
        with timer.compute():
            time.sleep(0.01)
        seen.append(item)
    with timer.data():
        pass
    s = timer.summary()
    assert seen == [0, 1]
    assert s["steps"] == 2
    assert s["data_wait_s"] >= 0.06
    assert s["compute_s"] >= 0.02


def test_step_timer_misuse_and_idempotent_summary() -> None:
    timer = StepTimer("cpu")
    with pytest.raises(RuntimeError, match="without compute_start"):
        timer.compute_end()
    with pytest.raises(RuntimeError, match="without data_start"):
        timer.data_end()
    timer.compute_start()
    with pytest.raises(RuntimeError, match="twice"):
        timer.compute_start()
    with pytest.raises(RuntimeError, match="inside a compute"):
        timer.summary()
    timer.compute_end()
    first = timer.summary()
    assert timer.summary() is first  # one synchronisation, then cached
    with pytest.raises(RuntimeError, match="one timer per epoch"):
        timer.compute_start()


def test_step_timer_empty_epoch() -> None:
    s = StepTimer("cpu").summary()
    assert s["steps"] == 0
    assert s["compute_s"] == 0
    assert s["wall_s"] == 0
    assert s["per_step_compute_ms"] == []


def _sleep_cycles_for(seconds: float, device: torch.device) -> int:
    """GPU clock cycles that `torch.cuda._sleep` spins for about `seconds`, calibrated on the host clock."""
    cycles = 10_000_000
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize(device)
    return int(cycles * seconds / (time.perf_counter() - t0))


def test_step_timer_measures_a_known_device_workload(cuda_device: torch.device) -> None:
    """A 50 ms device sleep, measured by the event timer within 10%, and each step's compute within the wall time."""
    cycles = _sleep_cycles_for(0.05, cuda_device)
    torch.cuda.synchronize(cuda_device)
    t0 = time.perf_counter()
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize(cuda_device)
    reference_ms = 1000 * (time.perf_counter() - t0)
    timer = StepTimer(cuda_device, capacity=4)
    for _ in range(4):
        timer.data_start()
        timer.data_end()
        timer.compute_start()
        torch.cuda._sleep(cycles)
        timer.compute_end()
    s = timer.summary()
    for ms in s["per_step_compute_ms"]:
        assert ms == pytest.approx(reference_ms, rel=0.10)
    assert s["compute_s"] <= s["wall_s"]
    # The host queued all four sleeps at once: the GPU ran them back to back.
    assert s["device_idle_s"] < 0.1 * s["compute_s"]


def test_step_timer_cuda_events(cuda_device: torch.device) -> None:
    timer = StepTimer(cuda_device, capacity=2)  # fewer than the steps: the timer must grow its events
    a = torch.randn(1024, 1024, device=cuda_device)
    for _ in range(5):
        timer.data_start()
        time.sleep(0.01)
        timer.data_end()
        timer.compute_start()
        for _ in range(10):
            a = a @ a / 32
        timer.compute_end()
    s = timer.summary()
    assert s["clock"] == "cuda_event"
    assert s["steps"] == 5
    assert len(s["per_step_compute_ms"]) == 5
    assert s["compute_s"] > 0
    assert s["device_idle_s"] is not None
    assert s["device_idle_s"] >= 0
    assert s["data_wait_s"] >= 0.05


# ------------------------------------------------------------------------------------------------------ time_fn
def test_time_fn_counts_calls_and_uses_pytest_benchmark_names() -> None:
    calls = []
    stats = time_fn(lambda: calls.append(time.sleep(0.002)), warmup=2, iters=5, device="cpu")
    assert len(calls) == 7
    assert isinstance(stats, TimingStats)
    d = stats.to_dict()
    assert STAT_KEYS <= d.keys()
    assert d["rounds"] == 5
    assert len(d["data"]) == 5
    assert d["clock"] == "perf_counter"
    assert d["warmup"] == 2
    assert d["min"] <= d["median"] <= d["max"]
    assert d["min"] >= 0.002
    assert d["wall_s"] >= sum(d["data"])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 10])
def test_timing_stats_match_pytest_benchmark(n: int) -> None:
    from pytest_benchmark.stats import Stats

    data = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 0.5, 0.8, 0.6, 0.15][:n]
    ref = Stats()
    for x in data:
        ref.update(x)
    ours = TimingStats(data, wall_s=1.0, clock="perf_counter").to_dict()
    for key in ("min", "max", "mean", "stddev", "median", "iqr", "rounds"):
        assert ours[key] == pytest.approx(getattr(ref, key)), key


def test_time_fn_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="iters"):
        time_fn(lambda: None, warmup=0, iters=0, device="cpu")
    with pytest.raises(ValueError, match="at least one"):
        TimingStats([], wall_s=0.0, clock="perf_counter")


def test_time_fn_cuda(cuda_device: torch.device) -> None:
    a = torch.randn(512, 512, device=cuda_device)
    stats = time_fn(lambda: a @ a, warmup=2, iters=4, device=cuda_device)
    assert stats.clock == "cuda_event"
    assert stats.rounds == 4
    assert stats.min > 0


# ------------------------------------------------------------------------------------------------------ memory
def test_peak_memory_is_none_on_cpu() -> None:
    reset_peak_memory("cpu")  # a no-op, not an error
    assert peak_memory_mib("cpu") is None
    assert peak_memory_mib(torch.device("cpu")) is None


def test_peak_memory_cuda(cuda_device: torch.device) -> None:
    reset_peak_memory(cuda_device)
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device=cuda_device)
    assert peak_memory_mib(cuda_device) >= 64
    del x


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
    assert w == {"gpu_util_mean": None, "gpu_mem_used_max_mib": None, "power_mean_w": None, "energy_j": None,
                 "samples": 0, "energy_method": None}  # fmt: skip
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


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


def make_fake_nvml(*, energy: bool = True) -> types.ModuleType:
    """A fake pynvml whose readings the test sets through attributes (util %, MiB used, W, mJ counter)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    m.NVMLError_LibraryNotFound = type("NVMLError_LibraryNotFound", (FakeNVMLError,), {})
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.state = types.SimpleNamespace(util=50, mem_mib=1024, power_w=100.0, energy_mj=1000, broken=False, shutdown=0)
    st = m.state

    def reading(fn):  # noqa: ANN001, ANN202 - tiny test helper
        def wrapped(*args):  # noqa: ANN002, ANN202
            if st.broken:
                raise FakeNVMLError("GPU is lost")
            return fn(*args)

        return wrapped

    def total_energy(handle: object) -> int:
        if not energy:
            raise FakeNVMLError("Not Supported")
        if st.broken:
            raise FakeNVMLError("GPU is lost")
        return st.energy_mj

    m.nvmlInit = lambda: None
    m.nvmlShutdown = lambda: setattr(st, "shutdown", st.shutdown + 1)
    m.nvmlDeviceGetCount = lambda: 1
    m.nvmlDeviceGetHandleByIndex = lambda i: f"gpu{i}"
    m.nvmlDeviceGetHandleByPciBusId = lambda bus: "gpu0"
    m.nvmlSystemGetDriverVersion = lambda: b"999.99"
    m.nvmlDeviceGetUtilizationRates = reading(lambda h: types.SimpleNamespace(gpu=st.util, memory=10))
    m.nvmlDeviceGetMemoryInfo = reading(lambda h: types.SimpleNamespace(used=st.mem_mib * 2**20, total=2**35))
    m.nvmlDeviceGetPowerUsage = reading(lambda h: int(st.power_w * 1000))
    m.nvmlDeviceGetTotalEnergyConsumption = total_energy
    m.nvmlDeviceGetClockInfo = lambda h, kind: 1500 if kind == m.NVML_CLOCK_SM else 5000
    m.nvmlDeviceGetMaxClockInfo = lambda h, kind: 1980
    m.nvmlDeviceGetTemperature = lambda h, sensor: 61
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 300_000
    m.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 4
    m.nvmlDeviceGetPersistenceMode = lambda h: 1
    return m


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    fake = make_fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


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
        deadline = time.perf_counter() + 2.0
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


# ------------------------------------------------------------------------------------------------------ environment
def test_collect_environment_on_cpu() -> None:
    info = collect_environment("cpu")
    for key in ("python", "torch", "cpu", "platform", "hostname", "machine_id", "hgbench_version"):
        assert isinstance(info[key], str), key
        assert info[key], key
    assert info["device"] == "cpu"
    assert isinstance(info["cpu_count"], int)
    assert info["cpu_count"] >= 1
    assert isinstance(info["gpu_count"], int)
    assert isinstance(info["nvml"], bool)
    assert info["gpu_name"] is None
    assert info["gpu_state"] is None
    assert info["machine_id"] == machine_id(info)  # CPU model and core count: hgbench.results.machine_id
    assert info["machine_id"].startswith("cpu-")
    assert info["cudnn"] is None or isinstance(info["cudnn"], int)
    if not info["nvml"]:
        assert info["driver"] is None
        assert info["nvml_reason"]


def test_collect_environment_with_fake_nvml(fake_nvml: types.ModuleType) -> None:
    info = collect_environment("cuda")
    assert info["nvml"] is True
    assert info["driver"] == "999.99"
    state = info["gpu_state"]
    assert state["sm_clock_mhz"] == 1500
    assert state["temperature_c"] == 61
    assert state["power_limit_w"] == pytest.approx(300.0)
    assert state["throttle_reasons"] == 4
    assert fake_nvml.state.shutdown == 1


def test_collect_environment_cuda(cuda_device: torch.device) -> None:
    info = collect_environment(cuda_device)
    assert info["device"] == "cuda"
    assert info["gpu_name"]
    assert info["gpu_count"] >= 1
    assert not info["machine_id"].startswith("cpu")


def test_commit_info_outside_git(tmp_path: Path) -> None:
    assert collect_commit_info(tmp_path) == {"id": None, "describe": None, "dirty": None}
    assert collect_commit_info(tmp_path / "does-not-exist") == {"id": None, "describe": None, "dirty": None}


def test_commit_info_without_git_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH: OSError inside, None outside
    assert collect_commit_info()["id"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_info_in_a_repository(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("commit", "-q", "-m", "one")
    clean = collect_commit_info(tmp_path)
    assert len(clean["id"]) == 40
    assert clean["dirty"] is False
    assert clean["describe"] == clean["id"][:7]
    (tmp_path / "f.txt").write_text("b")
    dirty = collect_commit_info(tmp_path)
    assert dirty["dirty"] is True
    assert dirty["describe"].endswith("-dirty")


def test_cpu_bf16_flag_is_a_bool() -> None:
    assert isinstance(telemetry.cpu_has_native_bf16(), bool)
