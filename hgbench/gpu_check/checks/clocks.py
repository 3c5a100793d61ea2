"""The clock and energy checks: the StepTimer's CUDA events against a device sleep the host timed, and NVML's
energy against the sampled mean power x time over a steady load."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from hgbench.gpu_check.checks._common import no_cuda
from hgbench.gpu_check.protocol import Outcome, StepContext

if TYPE_CHECKING:
    import torch

EVENT_TIMER_TOLERANCE = 0.10  # event-timed sleep vs the host's synchronised wall time of the same sleep
ENERGY_TOLERANCE = 0.15  # energy counter vs mean power x time over the same steady load


def _sleep_seconds(cycles: int, device: torch.device) -> float:
    """Host wall time of one device sleep, bracketed by synchronisations."""
    import torch

    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    torch.cuda._sleep(cycles)
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def event_timer(ctx: StepContext) -> Outcome:
    """The StepTimer's CUDA events against a known device sleep (`torch.cuda._sleep`) timed by the host."""
    if skip := no_cuda():
        return skip
    import torch

    from hgbench.measure.timing import StepTimer

    dev = torch.device("cuda", torch.cuda.current_device())
    _sleep_seconds(1_000_000, dev)  # context and clocks up
    probe = 20_000_000
    cycles = int(probe * 0.05 / _sleep_seconds(probe, dev))  # about 50 ms at the clock the GPU runs now
    reference_ms = 1000 * statistics.median(_sleep_seconds(cycles, dev) for _ in range(5))
    timer = StepTimer(dev, capacity=5)
    for _ in range(5):
        timer.data_start()
        timer.data_end()
        timer.compute_start()
        torch.cuda._sleep(cycles)
        timer.compute_end()
    s = timer.summary()
    event_ms = statistics.median(s["per_step_compute_ms"])
    error = event_ms / reference_ms - 1
    ctx.update(
        sleep_cycles=cycles,
        reference_ms=reference_ms,
        event_ms=s["per_step_compute_ms"],
        error_pct=100 * error,
        device_idle_ms=1000 * s["device_idle_s"],
        clock=s["clock"],
        implied_clock_mhz=cycles / reference_ms / 1000,  # the sleep counts SM cycles: near NVML's SM clock
    )
    from hgbench.measure.nvml_device import device_facts

    ctx.update(nvml_sm_clock_mhz=(device_facts(dev).get("gpu_state") or {}).get("sm_clock_mhz"))
    summary = f"sleep {reference_ms:.1f} ms (host), {event_ms:.1f} ms (events), {100 * error:+.1f}%"
    if s["clock"] != "cuda_event" or abs(error) > EVENT_TIMER_TOLERANCE:
        return Outcome("fail", f"events differ from the host clock by {100 * error:+.1f}% (> 10%)", summary)
    return Outcome("pass", None, summary)


def nvml_energy(ctx: StepContext) -> Outcome:
    """NVML's energy over 8 s of steady matrix products against the sampled mean power x the same time."""
    if skip := no_cuda():
        return skip
    import torch

    from hgbench.measure.nvml import NvmlSampler

    dev = torch.device("cuda", torch.cuda.current_device())
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.empty_like(a)

    def load(seconds: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                torch.mm(a, a, out=b)
            torch.cuda.synchronize(dev)

    with NvmlSampler(dev, interval_s=0.05) as sampler:
        if not sampler.available:
            return Outcome("fail", f"NVML unavailable: {sampler.reason}")
        load(3.0)  # power settles (NVML's power reading averages over about a second)
        sampler.mark("a")
        t0 = time.perf_counter()
        load(8.0)
        sampler.mark("b")
        elapsed = time.perf_counter() - t0
        w = sampler.window("a", "b")
    expected = (w["power_mean_w"] or 0.0) * elapsed
    ctx.update(
        energy_j=w["energy_j"],
        energy_method=w["energy_method"],
        power_mean_w=w["power_mean_w"],
        seconds=elapsed,
        power_x_time_j=expected,
        samples=w["samples"],
        gpu_util_mean=w["gpu_util_mean"],
    )
    if w["energy_j"] is None or not expected:
        return Outcome("fail", "NVML gave no energy or no power over the window")
    error = w["energy_j"] / expected - 1
    ctx.update(error_pct=100 * error)
    summary = f"{w['energy_j']:.0f} J ({w['energy_method']}) vs {w['power_mean_w']:.0f} W x {elapsed:.1f} s, "
    summary += f"{100 * error:+.1f}%"
    if abs(error) > ENERGY_TOLERANCE:
        return Outcome("fail", f"energy differs from power x time by {100 * error:+.1f}% (> 15%)", summary)
    note = None if w["energy_method"] == "counter" else "no energy counter on this GPU: energy is the power integral"
    return Outcome("pass", note, summary)
