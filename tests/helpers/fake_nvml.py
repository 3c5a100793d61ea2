"""A fake pynvml module for tests: readings set through attributes, errors on demand (see `make_fake_nvml`)."""

from __future__ import annotations

import os
import types
from typing import Any

import pytest


class FakeNVMLError(Exception):
    """Stands in for pynvml.NVMLError."""


def make_fake_nvml(*, energy: bool = True) -> types.ModuleType:
    """A fake pynvml whose readings the test sets through attributes (util %, MiB used, W, mJ counter)."""
    m = types.ModuleType("pynvml")
    m.NVMLError = FakeNVMLError
    m.NVMLError_LibraryNotFound = type("NVMLError_LibraryNotFound", (FakeNVMLError,), {})
    m.NVMLError_NotSupported = type("NVMLError_NotSupported", (FakeNVMLError,), {})
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0
    m.NVML_DEVICE_MIG_DISABLE, m.NVML_DEVICE_MIG_ENABLE = 0, 1
    # mig: None for a GPU without MIG (NVML answers NotSupported), False for MIG off, True for MIG on: CUDA then sees
    # only slices, and a slice's PCI bus id finds its whole GPU's handle.
    m.state = types.SimpleNamespace(
        util=50,
        mem_mib=1024,
        power_w=100.0,
        energy_mj=1000,
        broken=False,
        shutdown=0,
        processes=None,
        throttle=4,
        mig=False,
    )
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
    m.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: st.throttle

    def processes(handle: object) -> list[types.SimpleNamespace]:
        # Default: this process alone computes on the GPU.
        pids = [os.getpid()] if st.processes is None else st.processes
        return [types.SimpleNamespace(pid=p, usedGpuMemory=2**20) for p in pids]

    m.nvmlDeviceGetComputeRunningProcesses = processes
    m.nvmlDeviceGetPersistenceMode = lambda h: 1

    def mig_mode(handle: object) -> list[int]:
        if st.mig is None:
            raise m.NVMLError_NotSupported("Not Supported")
        mode = m.NVML_DEVICE_MIG_ENABLE if st.mig else m.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]  # current, pending

    m.nvmlDeviceGetMigMode = mig_mode
    m.nvmlDeviceIsMigDeviceHandle = lambda h: str(h).startswith("mig")  # the board's handles are "gpuN"
    return m


def answer_for_standin(monkeypatch: pytest.MonkeyPatch, fake: types.ModuleType, gpu: Any) -> None:
    """Wire `fake` to the CUDA stand-in's GPUs (`gpu`, a helpers.cuda_standin.CudaStandin): it counts them and finds
    each by its PCI bus id, as NVML finds a real GPU by the bus id CUDA reports."""
    buses = {gpu.pci_bus_id(i): f"gpu{i}" for i in range(gpu.count)}

    def by_bus(bus: bytes) -> str:
        if bus.decode() not in buses:
            raise FakeNVMLError("Not Found")
        return buses[bus.decode()]

    monkeypatch.setattr(fake, "nvmlDeviceGetHandleByPciBusId", by_bus)
    monkeypatch.setattr(fake, "nvmlDeviceGetCount", lambda: gpu.count)
