"""NVML: a background sampler of one GPU's utilisation, memory, power and energy over a run (a GPU's state at one
instant is `hgbench.measure.nvml_device`).

Everything here degrades to `None` values where the driver, the library or a GPU is absent, and says why in a
``reason``; nothing is estimated or faked. pynvml is looked up at call time (never a module-level import), so a
machine without it still imports hgbench, and tests can inject a fake through ``sys.modules``.

References: NVML API (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer); TorchBench `util/machine_config.py`
and `conftest.py` (`get_machine_state`: clocks, temperature, throttle reasons).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

from hgbench.measure.contention import other_processes, throttle_names
from hgbench.measure.nvml_device import mig_slice, nvml_handle, nvml_init, nvml_shutdown

MIG_BOARD_WIDE = (
    "a MIG slice: energy, power, utilisation and memory are its whole GPU's, other slices' tenants included"
)


@dataclass
class _Sample:
    t: float  # perf_counter seconds
    util: float | None  # GPU utilisation, percent of the interval with a kernel running
    mem_mib: float | None  # device memory used (all processes), MiB
    power_w: float | None  # board power draw, W
    energy_mj: float | None  # total energy counter, mJ since driver load (None if unsupported)
    others: int | None = None  # compute processes on the GPU other than this one (None if NVML cannot list them)
    throttle: int | None = None  # clocks-event (throttle) reasons bitmask (None if unsupported)


@dataclass
class _Mark:
    name: str
    index: int  # position of the mark's own sample in the sample list (-1 if sampling was unavailable)
    t: float


_EMPTY_WINDOW = {
    "gpu_util_mean": None,
    "gpu_mem_used_max_mib": None,
    "power_mean_w": None,
    "energy_j": None,
    "samples": 0,
    "energy_method": None,
    "gpu_other_processes": None,
    "gpu_throttle_reasons": None,
}


def combine_windows(windows: list[dict]) -> dict:
    """One epoch's telemetry of a run over several GPUs, from each rank's `NvmlSampler.window` of its own GPU.

    Energy and power are the run's: summed over the GPUs (None unless every GPU measured them, never a part passed
    off as the whole); utilisation is the GPUs' mean and memory the largest, as for one GPU.
    """
    if len(windows) == 1:
        return dict(windows[0])

    def every(key: str) -> list | None:
        values = [w.get(key) for w in windows]
        return None if any(v is None for v in values) else values

    energy, power = every("energy_j"), every("power_mean_w")
    util, mem = every("gpu_util_mean"), every("gpu_mem_used_max_mib")
    methods = {w.get("energy_method") for w in windows}
    return {
        "gpu_util_mean": sum(util) / len(util) if util else None,
        "gpu_mem_used_max_mib": max(mem) if mem else None,
        "power_mean_w": sum(power) if power else None,
        "energy_j": sum(energy) if energy else None,
        "samples": min(int(w.get("samples") or 0) for w in windows),
        "energy_method": methods.pop() if len(methods) == 1 and energy else None,
        "gpu_other_processes": _max_known([w.get("gpu_other_processes") for w in windows]),
        "gpu_throttle_reasons": _union_known([w.get("gpu_throttle_reasons") for w in windows]),
    }


def _max_known(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _union_known(lists: list[list[str] | None]) -> list[str] | None:
    known = [x for x in lists if x is not None]
    return list(dict.fromkeys(n for names in known for n in names)) if known else None


@dataclass
class NvmlSampler:
    """Background sampler of one GPU's utilisation, memory, power and energy through NVML.

    Use as a context manager around a run and call `mark` at epoch boundaries; `window(a, b)` gives the figures
    between two marks. Energy is the difference of NVML's total-energy counter between the marks where the GPU has
    it (Volta and newer; ``energy_method="counter"``), otherwise power integrated over the samples with the
    trapezoid rule (``"power_integral"``). Where NVML or a GPU is absent, `available` is False, `reason` says why,
    and every figure is None. An NVML error during the run is recorded in `errors`/`reason`, never raised.

    Args:
        device: the CUDA device to watch ("cuda", "cuda:1", int index or `torch.device`); a CPU device means "no GPU".
        interval_s: seconds between background samples.
    """

    device: str | int | torch.device = "cuda"
    interval_s: float = 0.1
    available: bool = field(default=False, init=False)  # sampling works (set by `start`)
    reason: str | None = field(default=None, init=False)  # why not, or why it stopped
    energy_counter: bool = field(default=False, init=False)  # the GPU has the total-energy counter
    mig: bool | None = field(default=None, init=False)  # the device is a MIG slice: every reading is its whole GPU's
    errors: int = field(default=0, init=False)  # failed samples (each metric's failure counted once per sample)
    _MAX_CONSECUTIVE_ERRORS = 20  # then the device is presumed lost and sampling stops

    def __post_init__(self) -> None:
        self._nvml: ModuleType | None = None
        self._handle: Any = None
        self._samples: list[_Sample] = []
        self._marks: dict[str, _Mark] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consecutive_errors = 0
        self._last_error: str | None = None
        self._started = False

    # -- life cycle ---------------------------------------------------------------------------------------------------

    def start(self) -> NvmlSampler:
        """Initialise NVML and start the sampling thread; on any failure stay unavailable with a reason."""
        if self._started:
            return self
        self._started = True
        dev = self.device
        if isinstance(dev, int):
            dev = torch.device("cuda", dev)
        dev = torch.device(dev)
        if dev.type != "cuda":
            self.reason = f"no GPU (device is {dev.type})"
            return self
        nvml, reason = nvml_init()
        if nvml is None:
            self.reason = reason
            return self
        try:
            if nvml.nvmlDeviceGetCount() == 0:
                self.reason = "no GPU (NVML sees no devices)"
                nvml_shutdown(nvml)
                return self
            self._handle = nvml_handle(nvml, dev)
            self.mig = mig_slice(nvml, self._handle)
        except Exception as exc:  # noqa: BLE001 - any NVML failure leaves telemetry null, with the reason
            self.reason = f"NVML device lookup failed: {exc}"
            nvml_shutdown(nvml)
            return self
        self._nvml = nvml
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.energy_counter = True
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported before Volta: integrate power instead
            self.energy_counter = False
        self.available = True
        self._append(self._read())
        self._thread = threading.Thread(target=self._run, name="hgbench-nvml", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (taking a last sample) and shut NVML down. Safe to call twice."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=max(5.0, 5 * self.interval_s))
            self._thread = None
            if self.available:
                self._append(self._read())
        if self._nvml is not None:
            nvml_shutdown(self._nvml)
            self._nvml = None

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sampling -----------------------------------------------------------------------------------------------------

    def _read(self) -> _Sample:
        """One sample; each metric separately so one unsupported query does not blank the others."""
        nvml, h = self._nvml, self._handle
        failed = 0

        def get(fn: Callable[[], Any]) -> Any:
            nonlocal failed
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - recorded, never raised: telemetry must not kill the run
                failed += 1
                self._last_error = str(exc) or type(exc).__name__
                return None

        t = time.perf_counter()
        if nvml is None:
            return _Sample(t, None, None, None, None)
        util = get(lambda: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu))
        mem = get(lambda: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20)
        power = get(lambda: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)
        energy = get(lambda: float(nvml.nvmlDeviceGetTotalEnergyConsumption(h))) if self.energy_counter else None
        others, throttle = self._contention(nvml, h)
        with self._lock:
            self.errors += failed
            expected = 3 + (1 if self.energy_counter else 0)
            self._consecutive_errors = self._consecutive_errors + 1 if failed == expected else 0
        return _Sample(t, util, mem, power, energy, others, throttle)

    def _contention(self, nvml: ModuleType, h: Any) -> tuple[int | None, int | None]:
        """Other compute processes on the GPU and the throttle reasons; None where unsupported (never counted as an
        error: many boards and containers answer neither)."""
        others = throttle = None
        try:
            # On a MIG slice the list is the whole GPU's, other slices' tenants included, whom MIG keeps off the run's
            # share: not counted (null), never taken for competitors.
            if not self.mig:
                others = other_processes(list(nvml.nvmlDeviceGetComputeRunningProcesses(h)), {os.getpid()})
        except Exception:  # noqa: BLE001, S110 - unsupported (MIG, containers): recorded as null
            pass
        reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
        )
        try:
            throttle = int(reasons_fn(h)) if reasons_fn else None
        except Exception:  # noqa: BLE001, S110 - unsupported: recorded as null
            pass
        return others, throttle

    def _append(self, s: _Sample) -> int:
        with self._lock:
            self._samples.append(s)
            return len(self._samples) - 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._append(self._read())
            except Exception as exc:  # noqa: BLE001 - belt and braces: the thread must never die with a traceback
                with self._lock:
                    self.errors += 1
                    self._consecutive_errors += 1
                    self._last_error = str(exc)
            if self._consecutive_errors >= self._MAX_CONSECUTIVE_ERRORS:
                self.reason = f"NVML stopped answering mid-run ({self._last_error}); sampling stopped"
                return

    # -- marks and windows --------------------------------------------------------------------------------------------

    def mark(self, name: str) -> None:
        """Record a named instant (e.g. ``"epoch3_start"``), with a sample taken right now for exact energy."""
        if self.available:
            index = self._append(self._read())
            t = self._samples[index].t
        else:
            index, t = -1, time.perf_counter()
        self._marks[name] = _Mark(name, index, t)

    def window(self, start_mark: str | None = None, end_mark: str | None = None) -> dict:
        """Figures between two marks (None = the first / last sample).

        Returns:
            gpu_util_mean (%), gpu_mem_used_max_mib, power_mean_w, energy_j, samples, energy_method
            ("counter" | "power_integral" | None), gpu_other_processes (the most compute processes not this run's
            seen at once; `other_processes`), gpu_throttle_reasons (names of every clocks-event reason but idle seen
            in the window). All None (samples 0) where NVML is unavailable.
        """
        for m in (start_mark, end_mark):
            if m is not None and m not in self._marks:
                raise KeyError(f"no NVML mark named {m!r}; marks: {sorted(self._marks)}")
        if not self.available:
            return dict(_EMPTY_WINDOW)
        with self._lock:
            samples = list(self._samples)
        lo = 0 if start_mark is None else self._marks[start_mark].index
        hi = len(samples) - 1 if end_mark is None else self._marks[end_mark].index
        # Samples from the thread and from mark() interleave in list order, which is time order under the lock.
        return self._summarise(samples[lo : hi + 1])

    @staticmethod
    def _summarise(win: list[_Sample]) -> dict:
        def mean(xs: list[float | None]) -> float | None:
            vals = [x for x in xs if x is not None]
            return statistics.fmean(vals) if vals else None

        mems = [s.mem_mib for s in win if s.mem_mib is not None]
        energy_j: float | None = None
        method: str | None = None
        if len(win) >= 2 and win[0].energy_mj is not None and win[-1].energy_mj is not None:
            energy_j = (win[-1].energy_mj - win[0].energy_mj) / 1000.0
            method = "counter"
        else:
            pts = [(s.t, s.power_w) for s in win if s.power_w is not None]
            if len(pts) >= 2:
                energy_j = sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(pts, pts[1:], strict=False))
                method = "power_integral"
        return {
            "gpu_util_mean": mean([s.util for s in win]),
            "gpu_mem_used_max_mib": max(mems) if mems else None,
            "power_mean_w": mean([s.power_w for s in win]),
            "energy_j": energy_j,
            "samples": len(win),
            "energy_method": method,
            "gpu_other_processes": _max_known([s.others for s in win]),
            "gpu_throttle_reasons": _throttled(win),
        }

    def summary(self) -> dict:
        """Whole-run figures for ``results.telemetry``: `window()` over all samples plus available, reason, errors,
        and whether the device is a MIG slice (then ``board_wide`` says every figure is its whole GPU's)."""
        board_wide = MIG_BOARD_WIDE if self.mig else None
        window = {**self.window(), "errors": self.errors, "mig": self.mig, "board_wide": board_wide}
        return {"available": self.available, "reason": self.reason, **window}


def _throttled(win: list[_Sample]) -> list[str] | None:
    """Every throttle reason seen in the window but idle (an idle GPU between epochs is not a slowed one)."""
    masks = [s.throttle for s in win if s.throttle is not None]
    if not masks:
        return None
    mask = 0
    for m in masks:
        mask |= m
    return [n for n in throttle_names(mask) if n != "gpu_idle"]


__all__ = ["MIG_BOARD_WIDE", "NvmlSampler", "combine_windows"]
