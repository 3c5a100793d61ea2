"""Tests for hgbench.measure.timing: the step timer, time_fn and its statistics, and peak memory. CUDA variants use the
`cuda_device` fixture and skip without a GPU."""

from __future__ import annotations

import time
import types

import pytest
import torch

from hgbench.measure.timing import StepTimer, TimingStats, peak_memory_mib, reset_peak_memory, time_fn

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
