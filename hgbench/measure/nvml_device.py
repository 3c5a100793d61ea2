"""NVML's view of one GPU: the library initialised (or why not), the handle of a CUDA device, whether it is a MIG
slice, and its state at one instant (clocks, temperature, power limit, throttle reasons) for a record's
``machine_info``. Never raises: where the driver, pynvml or a GPU is absent, a ``reason`` says so.

pynvml is looked up at call time (never a module-level import), so a machine without it still imports hgbench, and
tests can inject a fake through ``sys.modules``. The background sampler over a run is `hgbench.measure.nvml`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

NO_DRIVER = "no NVIDIA driver (NVML library not found)"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def nvml_init() -> tuple[ModuleType | None, str | None]:
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


def nvml_shutdown(nvml: ModuleType) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # noqa: BLE001, S110 - nothing useful to do if shutdown fails
        pass


def nvml_handle(nvml: ModuleType, device: torch.device) -> Any:
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


def mig_slice(nvml: ModuleType, handle: Any) -> bool | None:
    """Whether the run's CUDA device, found in NVML as `handle`, is a MIG slice; None where NVML cannot say.

    A slice shares its GPU's PCI bus id, so `handle` is the whole GPU's (`nvml_handle`), whose readings are the
    board's, every slice's tenants included; and with MIG on, CUDA sees only slices. A GPU without MIG answers
    NotSupported: not a slice.
    """
    is_slice = getattr(nvml, "nvmlDeviceIsMigDeviceHandle", None)  # newer pynvml only
    try:
        if is_slice is not None and is_slice(handle):
            return True
        current = nvml.nvmlDeviceGetMigMode(handle)[0]
    except getattr(nvml, "NVMLError_NotSupported", ()):
        return False
    except Exception:  # noqa: BLE001 - an older pynvml without the calls, or NVML failing: unknown
        return None
    return current == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)


def gpu_state(nvml: ModuleType, handle: Any) -> dict:
    """Clocks (MHz), temperature (C), power limit (W), throttle reasons of one GPU and whether the run has only a MIG
    slice of it (`mig_slice`); a field is None if unsupported.

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
        "mig": mig_slice(nvml, handle),
    }


def device_facts(device: torch.device) -> dict:
    """What NVML says about the machine for a record's ``machine_info``: driver, nvml, nvml_reason, gpu_state.

    Never raises: without pynvml, a driver or an answer, ``nvml`` is False or ``nvml_reason`` says what failed.

    Args:
        device: the device the measurement runs on; ``gpu_state`` is read only for a CUDA device.
    """
    facts: dict[str, Any] = {"driver": None, "nvml": False, "nvml_reason": None, "gpu_state": None}
    nvml, reason = nvml_init()
    facts["nvml_reason"] = reason
    if nvml is None:
        return facts
    facts["nvml"] = True
    try:
        facts["driver"] = _text(nvml.nvmlSystemGetDriverVersion())
        if device.type == "cuda":
            facts["gpu_state"] = gpu_state(nvml, nvml_handle(nvml, device))
    except Exception as exc:  # noqa: BLE001 - NVML raises many error classes; the record keeps the reason
        facts["nvml_reason"] = f"NVML query failed: {exc}"
    finally:
        nvml_shutdown(nvml)
    return facts
