"""Clocks and telemetry: the device clock (CUDA events or `perf_counter`), an NVML sampler, and environment capture.

The runner and `hgbench bench` never ask the model anything; they hand this module a callable or bracket their own
loop with a `StepTimer` (TorchBench's `invoke()` idea, nanoGPT's `bench.py` burn-in). Everything here degrades to
`None` values where the hardware or driver is absent, and says why; nothing is estimated or faked.

References: TorchBench `run.py` (CUDA event pairs plus wall time), `util/machine_config.py` and `conftest.py`
(`get_machine_state`: clocks, temperature, throttle reasons); pytest-benchmark `stats.py` (statistic names and the
quartile method reused by `TimingStats`); NVML API (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer).
"""

from __future__ import annotations

import importlib
import os
import platform
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from hgbench import __version__

# --------------------------------------------------------------------------------------------------------------------
# Environment capture
# --------------------------------------------------------------------------------------------------------------------


def _as_device(device: str | torch.device) -> torch.device:
    """`torch.device` from a string or device; a bare "cuda" means the current CUDA device."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else whatever `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_flags() -> set[str]:
    """Instruction-set flags of the first CPU in /proc/cpuinfo (empty where that file does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX); without it CPU autocast to bf16 emulates."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def _cudnn_version() -> int | None:
    try:
        return torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except (RuntimeError, OSError):  # a CUDA build whose cuDNN libraries cannot be loaded
        return None


def collect_environment(device: str | torch.device = "cpu") -> dict:
    """Everything about the machine and software a measurement depends on: the record's ``machine_info``.

    Never raises for a missing GPU, driver or NVML: those fields are ``None`` (``nvml`` is ``False``). Where NVML is
    present, ``gpu_state`` holds the device's clocks, temperature, power limit and throttle reasons at call time
    (call again after a run for the "after" state, as TorchBench's `get_machine_state`).

    Args:
        device: the device the measurement runs on ("cpu", "cuda", "cuda:1" or a `torch.device`).

    Returns:
        python, torch, torchvision, cuda, cudnn, cpu, cpu_count, platform, hostname, device, gpu_name, gpu_count,
        driver, nvml, nvml_reason, gpu_state, hgbench_version, machine_id.
    """
    dev = _as_device(device)
    try:
        import torchvision

        tv_version: str | None = torchvision.__version__
    except ImportError:
        tv_version = None
    cuda_ok = torch.cuda.is_available()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": tv_version,
        "cuda": torch.version.cuda,  # the CUDA the torch build targets (set on a CUDA build even without a GPU)
        "cudnn": _cudnn_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": dev.type,
        "gpu_name": torch.cuda.get_device_name(dev) if cuda_ok and dev.type == "cuda" else None,
        "gpu_count": torch.cuda.device_count() if cuda_ok else 0,
        "driver": None,
        "nvml": False,
        "nvml_reason": None,
        "gpu_state": None,
        "hgbench_version": __version__,
    }
    nvml, reason = _nvml_init()
    info["nvml_reason"] = reason
    if nvml is not None:
        info["nvml"] = True
        try:
            info["driver"] = _text(nvml.nvmlSystemGetDriverVersion())
            if dev.type == "cuda":
                info["gpu_state"] = gpu_state(nvml, _nvml_handle(nvml, dev))
        except Exception as exc:  # noqa: BLE001 - NVML raises many error classes; the record keeps the reason
            info["nvml_reason"] = f"NVML query failed: {exc}"
        finally:
            _nvml_shutdown(nvml)
    # The results store owns the naming of machine folders; one definition, so records and folders always agree.
    from hgbench.results import machine_id

    info["machine_id"] = machine_id(info)
    return info


def gpu_state(nvml: ModuleType, handle: Any) -> dict:
    """Clocks (MHz), temperature (C), power limit (W) and throttle reasons of one GPU; a field is None if unsupported.

    Args:
        nvml: an initialised pynvml module.
        handle: the NVML device handle.
    """

    def get(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - one unsupported query must not hide the others
            return None

    # nvml renamed "throttle reasons" to "clocks event reasons" (driver 535); accept either spelling.
    reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    limit_mw = get(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    return {
        "sm_clock_mhz": get(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "mem_clock_mhz": get(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
        "sm_clock_max_mhz": get(lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM)),
        "temperature_c": get(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        "power_limit_w": None if limit_mw is None else limit_mw / 1000.0,
        "throttle_reasons": get(lambda: int(reasons_fn(handle))) if reasons_fn else None,
        "persistence_mode": get(lambda: nvml.nvmlDeviceGetPersistenceMode(handle)),
    }


def collect_commit_info(repo_dir: str | os.PathLike | None = None) -> dict:
    """The git commit the harness runs from: ``{"id", "describe", "dirty"}``, all ``None`` outside a git checkout.

    Never raises (no git, not a repository, a hung git are all ``None``).

    Args:
        repo_dir: a directory inside the checkout; default: the directory holding the `hgbench` package.
    """
    cwd = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    sha = git("rev-parse", "HEAD")
    if not sha:
        return {"id": None, "describe": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "id": sha,
        "describe": git("describe", "--always", "--dirty"),
        "dirty": None if status is None else bool(status),
    }


# --------------------------------------------------------------------------------------------------------------------
# Timing statistics and time_fn
# --------------------------------------------------------------------------------------------------------------------


def _quartiles(data: list[float]) -> tuple[float, float]:
    """Q1 and Q3 exactly as pytest-benchmark computes them (Wikipedia methods 3 and 2), so records compare."""
    d = sorted(data)
    n = len(d)
    if n == 1:
        return d[0], d[0]
    if n % 2:
        k, q = n // 4, n % 4
        if q == 1:
            return 0.25 * d[k - 1] + 0.75 * d[k], 0.75 * d[3 * k] + 0.25 * d[3 * k + 1]
        return 0.75 * d[k] + 0.25 * d[k + 1], 0.25 * d[3 * k + 1] + 0.75 * d[3 * k + 2]
    return statistics.median(d[: n // 2]), statistics.median(d[n // 2 :])


@dataclass
class TimingStats:
    """Per-iteration times of a timed callable; `to_dict` uses pytest-benchmark's statistic names (seconds)."""

    data: list[float]  # one duration per timed iteration, seconds, on `clock`
    wall_s: float  # host wall time of all timed iterations, including the final synchronisation
    clock: str  # "cuda_event" (device time between two events on the stream) or "perf_counter" (host)
    warmup: int = 0  # untimed iterations run first
    warmup_s: float = 0.0  # host wall time of the warm-up iterations (shows compile / autotune cost)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("TimingStats needs at least one timed iteration")

    @property
    def rounds(self) -> int:
        return len(self.data)

    @property
    def min(self) -> float:
        return min(self.data)

    @property
    def max(self) -> float:
        return max(self.data)

    @property
    def mean(self) -> float:
        return statistics.mean(self.data)

    @property
    def stddev(self) -> float:
        return statistics.stdev(self.data) if len(self.data) > 1 else 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.data)

    @property
    def iqr(self) -> float:
        q1, q3 = _quartiles(self.data)
        return q3 - q1

    @property
    def total(self) -> float:
        return sum(self.data)

    def to_dict(self) -> dict:
        """min, max, mean, stddev, median, iqr, rounds, data (seconds), plus total, wall_s, clock and warm-up."""
        return {
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "stddev": self.stddev,
            "median": self.median,
            "iqr": self.iqr,
            "rounds": self.rounds,
            "data": list(self.data),
            "total": self.total,
            "wall_s": self.wall_s,
            "clock": self.clock,
            "warmup": self.warmup,
            "warmup_s": self.warmup_s,
        }


def time_fn(fn: Callable[[], Any], *, warmup: int, iters: int, device: str | torch.device) -> TimingStats:
    """Time a zero-argument callable: `warmup` untimed calls, then `iters` timed ones.

    On CUDA each timed call is bracketed by a pair of CUDA events on the current stream, and the host synchronises
    once after the warm-up and once at the end, so the per-iteration figures are device time and the host's launch
    overhead shows only where it starves the GPU. On CPU the figures are `perf_counter` intervals.

    Args:
        fn: the work, e.g. one training step; its return value is ignored.
        warmup: untimed calls first (compilation, cuDNN autotuning, allocator growth).
        iters: timed calls (>= 1).
        device: where `fn` runs.

    Returns:
        The per-iteration statistics and the wall time of the timed part.
    """
    if iters < 1 or warmup < 0:
        raise ValueError(f"need iters >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    dev = _as_device(device)
    cuda = dev.type == "cuda"
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(dev)
    warmup_s = time.perf_counter() - t0

    if not cuda:
        data = []
        w0 = time.perf_counter()
        for _ in range(iters):
            s = time.perf_counter()
            fn()
            data.append(time.perf_counter() - s)
        return TimingStats(data, time.perf_counter() - w0, "perf_counter", warmup, warmup_s)

    with torch.cuda.device(dev):
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        w0 = time.perf_counter()
        for i in range(iters):
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize(dev)
        wall = time.perf_counter() - w0
    data = [s.elapsed_time(e) / 1000.0 for s, e in zip(starts, ends, strict=True)]
    return TimingStats(data, wall, "cuda_event", warmup, warmup_s)


# --------------------------------------------------------------------------------------------------------------------
# StepTimer: compute vs data wait inside an epoch, no host synchronisation in the loop
# --------------------------------------------------------------------------------------------------------------------


class StepTimer:
    """Times one epoch's steps: host time waiting for data, and compute time on the device's clock.

    What "data wait" means here: the host wall time spent inside the DataLoader's ``next()`` (`data_start` to
    `data_end`). On the CPU that is time the machine did no training. On CUDA the GPU runs asynchronously: while the
    host waits for a batch, kernels queued by earlier steps may still be running, so host data wait is an *upper
    bound* on the GPU time lost to loading. The time the GPU actually sat idle between steps is reported separately
    as ``device_idle_s``: the device-clock gaps from one step's end event to the next step's start event (it also
    includes host launch overhead; near zero when the pipeline keeps the GPU fed).

    Compute is everything between `compute_start` and `compute_end`: put the host-to-device copy, forward, loss,
    backward and optimiser step there. On CUDA these record CUDA events (created in advance, grown in blocks, never
    synchronised in the loop); `summary` synchronises once and reads them. On CPU both clocks are `perf_counter`.

    Args:
        device: the device the steps run on.
        capacity: steps to preallocate events for (e.g. ``len(loader)``); more are added in blocks if exceeded.
    """

    _GROW = 256  # events added at a time once the preallocated ones run out (event creation does not sync)

    def __init__(self, device: str | torch.device, *, capacity: int = 0) -> None:
        self.device = _as_device(device)
        self.cuda = self.device.type == "cuda"
        self._starts: list[Any] = []
        self._ends: list[Any] = []
        if self.cuda:
            self._grow(max(capacity, 1))
        self._cpu_compute: list[float] = []
        self._cpu_t = 0.0  # perf_counter at the open compute bracket (CPU)
        self._steps = 0
        self._in_compute = False
        self._data_t: float | None = None
        self._data_wait = 0.0
        self._t_first: float | None = None
        self._summary: dict | None = None

    def _grow(self, n: int) -> None:
        with torch.cuda.device(self.device):
            self._starts.extend(torch.cuda.Event(enable_timing=True) for _ in range(n))
            self._ends.extend(torch.cuda.Event(enable_timing=True) for _ in range(n))

    def _touch(self) -> float:
        now = time.perf_counter()
        if self._t_first is None:
            self._t_first = now
        if self._summary is not None:
            raise RuntimeError("StepTimer already summarised; create one timer per epoch")
        return now

    def data_start(self) -> None:
        """Mark the host starting to wait for the next batch."""
        self._data_t = self._touch()

    def data_end(self) -> None:
        """Mark the batch having arrived on the host."""
        if self._data_t is None:
            raise RuntimeError("data_end() without data_start()")
        self._data_wait += time.perf_counter() - self._data_t
        self._data_t = None

    def compute_start(self) -> None:
        """Mark the start of a step's device work (records a CUDA event on the current stream; no sync)."""
        t = self._touch()
        if self._in_compute:
            raise RuntimeError("compute_start() twice without compute_end()")
        self._in_compute = True
        if self.cuda:
            if self._steps >= len(self._starts):
                self._grow(self._GROW)
            self._starts[self._steps].record()
        else:
            self._cpu_t = t

    def compute_end(self) -> None:
        """Mark the end of a step's device work."""
        if not self._in_compute:
            raise RuntimeError("compute_end() without compute_start()")
        if self.cuda:
            self._ends[self._steps].record()
        else:
            self._cpu_compute.append(time.perf_counter() - self._cpu_t)
        self._in_compute = False
        self._steps += 1

    @contextmanager
    def data(self) -> Iterator[None]:
        """``with timer.data(): batch = next(it)``."""
        self.data_start()
        yield
        self.data_end()

    @contextmanager
    def compute(self) -> Iterator[None]:
        """``with timer.compute(): loss = step(batch)``."""
        self.compute_start()
        yield
        self.compute_end()

    def iter_data(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Iterate a DataLoader, timing every ``next()`` (the last, exhausted one too) as data wait."""
        it = iter(iterable)  # creating the iterator starts the workers: count it as data wait too
        while True:
            self.data_start()
            try:
                item = next(it)
            except StopIteration:
                self.data_end()
                return
            self.data_end()
            yield item

    @property
    def steps(self) -> int:
        """Steps completed so far (host side; no synchronisation)."""
        return self._steps

    def summary(self) -> dict:
        """Synchronise once and return the epoch's figures (idempotent; the timer is closed afterwards).

        Returns:
            compute_s (sum of per-step compute), data_wait_s (host), wall_s (first mark to this synchronisation),
            steps, per_step_compute_ms (list), device_idle_s (CUDA: device gaps between steps; CPU: None),
            clock ("cuda_event" or "perf_counter").
        """
        if self._summary is not None:
            return self._summary
        if self._in_compute:
            raise RuntimeError("summary() inside a compute bracket; call compute_end() first")
        if self.cuda:
            torch.cuda.synchronize(self.device)
        t_end = time.perf_counter()
        n = self._steps
        if self.cuda:
            per_ms = [self._starts[i].elapsed_time(self._ends[i]) for i in range(n)]
            idle_ms = sum(max(0.0, self._ends[i].elapsed_time(self._starts[i + 1])) for i in range(n - 1))
            device_idle_s: float | None = idle_ms / 1000.0
        else:
            per_ms = [s * 1000.0 for s in self._cpu_compute]
            device_idle_s = None
        self._summary = {
            "compute_s": sum(per_ms) / 1000.0,
            "data_wait_s": self._data_wait,
            "wall_s": 0.0 if self._t_first is None else t_end - self._t_first,
            "steps": n,
            "per_step_compute_ms": per_ms,
            "device_idle_s": device_idle_s,
            "clock": "cuda_event" if self.cuda else "perf_counter",
        }
        return self._summary


# --------------------------------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------------------------------


def peak_memory_mib(device: str | torch.device) -> float | None:
    """Peak memory allocated by tensors on a CUDA device since the last reset (MiB); None on CPU."""
    dev = _as_device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(dev) / 2**20


def reset_peak_memory(device: str | torch.device) -> None:
    """Start a new peak-memory window on a CUDA device (no-op on CPU)."""
    dev = _as_device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(dev)


# --------------------------------------------------------------------------------------------------------------------
# NVML
# --------------------------------------------------------------------------------------------------------------------

NO_DRIVER = "no NVIDIA driver (NVML library not found)"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _nvml_init() -> tuple[ModuleType | None, str | None]:
    """Import and initialise pynvml; (module, None) on success, (None, reason) otherwise. Never raises."""
    try:
        # Looked up at call time (not a module-level import) so tests can inject a fake through sys.modules.
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return None, "pynvml not installed (pip install nvidia-ml-py)"
    not_found = getattr(nvml, "NVMLError_LibraryNotFound", ())
    try:
        nvml.nvmlInit()
    except not_found:
        return None, NO_DRIVER
    except Exception as exc:  # noqa: BLE001 - NVMLError subclasses per return code, plus OSError from ctypes
        return None, f"NVML init failed: {exc}"
    return nvml, None


def _nvml_shutdown(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # noqa: BLE001, S110 - nothing useful to do if shutdown fails
        pass


def _nvml_handle(nvml: ModuleType, device: torch.device) -> Any:
    """NVML handle of a CUDA device, matched by PCI bus id (CUDA_VISIBLE_DEVICES renumbers CUDA but not NVML)."""
    index = device.index or 0
    if torch.cuda.is_available():
        try:
            p = torch.cuda.get_device_properties(index)
            bus_id = f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
            return nvml.nvmlDeviceGetHandleByPciBusId(bus_id.encode())
        except Exception:  # noqa: BLE001, S110 - older torch without PCI fields, or NVML disagreeing: use the index
            pass
    return nvml.nvmlDeviceGetHandleByIndex(index)


@dataclass
class _Sample:
    t: float  # perf_counter seconds
    util: float | None  # GPU utilisation, percent of the interval with a kernel running
    mem_mib: float | None  # device memory used (all processes), MiB
    power_w: float | None  # board power draw, W
    energy_mj: float | None  # total energy counter, mJ since driver load (None if unsupported)


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
}


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
        nvml, reason = _nvml_init()
        if nvml is None:
            self.reason = reason
            return self
        try:
            if nvml.nvmlDeviceGetCount() == 0:
                self.reason = "no GPU (NVML sees no devices)"
                _nvml_shutdown(nvml)
                return self
            self._handle = _nvml_handle(nvml, dev)
        except Exception as exc:  # noqa: BLE001 - any NVML failure leaves telemetry null, with the reason
            self.reason = f"NVML device lookup failed: {exc}"
            _nvml_shutdown(nvml)
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
            _nvml_shutdown(self._nvml)
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
        with self._lock:
            self.errors += failed
            expected = 3 + (1 if self.energy_counter else 0)
            self._consecutive_errors = self._consecutive_errors + 1 if failed == expected else 0
        return _Sample(t, util, mem, power, energy)

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
            ("counter" | "power_integral" | None). All None (samples 0) where NVML is unavailable.
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
        }

    def summary(self) -> dict:
        """Whole-run figures for ``results.telemetry``: `window()` over all samples plus available, reason, errors."""
        return {"available": self.available, "reason": self.reason, **self.window(), "errors": self.errors}


__all__ = [
    "NO_DRIVER",
    "NvmlSampler",
    "StepTimer",
    "TimingStats",
    "collect_commit_info",
    "collect_environment",
    "cpu_has_native_bf16",
    "gpu_state",
    "peak_memory_mib",
    "reset_peak_memory",
    "time_fn",
]
