"""The environment a measurement depends on: machine facts, software versions and the git commit, plus the names
derived from them (the results folder `machine_id`, the `device_label` tables show).

`collect_environment` is TorchBench's `get_machine_state` / pytest-benchmark's ``machine_info``: python, torch,
CUDA, cuDNN, CPU, GPU and driver, with NVML's clocks, temperature, power limit and throttle reasons where a GPU has
them. `collect_commit_info` is pytest-benchmark's ``commit_info``. Neither ever raises: what cannot be known is None.

This module imports torch only inside the functions that need it, so the results store and the reporter, which
use `machine_id` and `device_label`, stay free of torch.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hgbench._version import __version__

if TYPE_CHECKING:
    import torch

# --------------------------------------------------------------------------------------------------------------------
# Names derived from machine_info (pure functions: no torch, no I/O)
# --------------------------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    """Lower-case, runs of anything but letters, digits and dots become one hyphen."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")


_CPU_NOISE = re.compile(r"\((?:r|tm)\)|\b(?:cpu|processor)\b|@.*$", re.IGNORECASE)


def _cpu_slug(name: str) -> str:
    """A CPU model as a short slug: trademark marks, the words CPU and Processor, and the clock (``@ 2.20GHz``) go.

    ``Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz`` becomes ``intel-xeon-platinum-8375c``; what is left is what
    tells two CPUs apart, capped at 40 characters so the folder name stays readable.
    """
    return _slug(_CPU_NOISE.sub(" ", name))[:40].strip("-.")


def machine_id(machine_info: Mapping[str, Any]) -> str:
    """The results sub-folder for a machine: the device, torch version and (on a GPU) CUDA version, slugified.

    On a CPU the device is the CPU model and its logical core count, since CPU timings depend on both: two CPUs that
    share a torch version are not the same machine. Examples: ``cpu-amd-epyc-7b13-2c-pt2.14.1`` and
    ``nvidia-h100-80gb-hbm3-pt2.14.1-cu13.0``. The torch local version (``+cu130``) is dropped; CUDA is named only for
    GPU runs, since a CUDA build running on the CPU times the CPU. Records written before the CPU was named (folder
    ``cpu-pt2.14.1``) keep the id they stored in ``machine_info.machine_id``, which the readers use.

    Args:
        machine_info: the record's ``machine_info`` (``gpu_name``, ``torch``, ``cuda``, ``device``, ``cpu``,
            ``cpu_count``).
    """
    gpu = machine_info.get("gpu_name") or None
    on_gpu = bool(gpu) and machine_info.get("device", "cuda") != "cpu"
    if on_gpu:
        parts = [_slug(str(gpu)) or "gpu"]
    else:
        parts = ["cpu", _cpu_slug(str(machine_info.get("cpu") or ""))]
        cores = machine_info.get("cpu_count")
        has_cores = isinstance(cores, (int, float)) and not isinstance(cores, bool) and cores > 0
        parts.append(f"{int(cores)}c" if has_cores else "")
    torch_version = str(machine_info.get("torch") or "unknown").split("+")[0]
    parts.append(f"pt{_slug(torch_version) or 'unknown'}")
    if on_gpu and machine_info.get("cuda"):
        parts.append(f"cu{_slug(str(machine_info['cuda']))}")
    return "-".join(p for p in parts if p)


def device_label(machine_info: Mapping[str, Any], *, threads: bool = False) -> str:
    """What a table calls the device a record ran on: the GPU's name, else ``CPU: <model>``.

    Args:
        machine_info: the record's ``machine_info`` (``gpu_name``, ``cpu``, ``torch_threads``).
        threads: on the CPU, add the torch thread count (``CPU: <model> (2 threads)``), as `hgbench bench` shows.

    Returns:
        ``unknown device`` when the record names neither a GPU nor a CPU.
    """
    gpu = machine_info.get("gpu_name")
    if gpu:
        return str(gpu)
    cpu = machine_info.get("cpu")
    if not cpu:
        return "unknown device"
    return f"CPU: {cpu} ({machine_info.get('torch_threads')} threads)" if threads else f"CPU: {cpu}"


# --------------------------------------------------------------------------------------------------------------------
# Machine and software facts
# --------------------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
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


def _switch(read: Callable[[], Any]) -> Any:
    """A torch switch's value, or None where reading it raises: torch refuses to read a legacy TF32 switch (and
    `torch.get_float32_matmul_precision`) once the newer ``fp32_precision`` API set its parts differently."""
    try:
        return read()
    except (RuntimeError, AttributeError):
        return None


def _fp32_precision(backend: Any, part: str) -> str | None:
    """``torch.backends.<backend>.<part>.fp32_precision`` ("ieee", "tf32", or "none": not set, the legacy switch
    decides), or None on a torch without it."""
    value = _switch(lambda: getattr(backend, part).fp32_precision)
    return value if isinstance(value, str) else None


def _allows_tf32(precision: str | None, legacy: Callable[[], Any]) -> bool | None:
    """Whether float32 work of one kind may run as TF32: the new API's answer where it was set, else the legacy
    switch's (None where torch refuses to read it)."""
    if precision in ("ieee", "tf32"):
        return precision == "tf32"
    value = _switch(legacy)
    return None if value is None else bool(value)


def float32_math(device: str | torch.device = "cpu") -> dict[str, Any]:
    """How this process computes float32 convolutions and matrix products on `device`: the record's
    ``machine_info.float32_math`` (run and bench records alike), read when the measurement starts.

    On an Ampere-or-newer GPU (compute capability 8.0+) torch runs float32 cuDNN convolutions as TF32 (a 10-bit
    mantissa) unless told otherwise (``torch.backends.cudnn.allow_tf32 = False``, or since torch 2.9
    ``torch.backends.cudnn.conv.fp32_precision = "ieee"``), and it defaults to TF32: "fp32" eager there is TF32 for
    every convolution of these networks. Matrix products use TF32 only where allowed (default off). The newer
    ``fp32_precision`` attributes are read first: once they are set, torch raises on reading the legacy switches.
    Never raises: a switch torch refuses to read is None.

    Returns:
        ``cudnn_allow_tf32`` and ``cuda_matmul_allow_tf32`` (whether TF32 is allowed; None off CUDA),
        ``cudnn_conv_fp32_precision`` and ``cuda_matmul_fp32_precision`` (the newer API's values; None off CUDA or
        on a torch without them), ``matmul_precision`` (`torch.get_float32_matmul_precision`), ``tf32_capable``
        (the GPU has TF32), and what float32 work computes in: ``conv`` and ``matmul``, each ``"tf32"`` or
        ``"fp32"``.
    """
    import torch

    from hgbench.measure.timing import as_device

    dev = as_device(device)
    on_cuda = dev.type == "cuda" and torch.cuda.is_available()
    capable = on_cuda and torch.cuda.get_device_capability(dev)[0] >= 8
    conv_precision = _fp32_precision(torch.backends.cudnn, "conv") if on_cuda else None
    matmul_precision = _fp32_precision(torch.backends.cuda, "matmul") if on_cuda else None
    conv_tf32 = _allows_tf32(conv_precision, lambda: torch.backends.cudnn.allow_tf32) if on_cuda else None
    matmul_tf32 = _allows_tf32(matmul_precision, lambda: torch.backends.cuda.matmul.allow_tf32) if on_cuda else None
    return {
        "cudnn_allow_tf32": conv_tf32,
        "cuda_matmul_allow_tf32": matmul_tf32,
        "cudnn_conv_fp32_precision": conv_precision,
        "cuda_matmul_fp32_precision": matmul_precision,
        "matmul_precision": _switch(torch.get_float32_matmul_precision),
        "tf32_capable": capable,
        "conv": "tf32" if capable and conv_tf32 else "fp32",
        "matmul": "tf32" if capable and matmul_tf32 else "fp32",
    }


def float32_label(math: Mapping[str, Any] | None) -> str:
    """What float32 convolutions compute in, by `float32_math`'s answer: ``tf32`` or ``fp32`` (None: ``fp32``)."""
    return "tf32" if math and math.get("conv") == "tf32" else "fp32"


def _cudnn_version() -> int | None:
    import torch

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
        float32_math, driver, nvml, nvml_reason, gpu_state, hgbench_version, machine_id.
    """
    import torch

    from hgbench.measure.nvml_device import device_facts
    from hgbench.measure.timing import as_device

    dev = as_device(device)
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
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": dev.type,
        "gpu_name": torch.cuda.get_device_name(dev) if cuda_ok and dev.type == "cuda" else None,
        "gpu_count": torch.cuda.device_count() if cuda_ok else 0,
        "float32_math": float32_math(dev),  # TF32 or not: what an "fp32" mode's convolutions really compute in
        **device_facts(dev),  # driver, nvml, nvml_reason, gpu_state
        "hgbench_version": __version__,
    }
    info["machine_id"] = machine_id(info)
    return info


def collect_commit_info(repo_dir: str | os.PathLike | None = None) -> dict:
    """The git commit the harness runs from: ``{"id", "describe", "dirty"}``, all ``None`` outside a git checkout.

    Never raises (no git, not a repository, a hung git are all ``None``).

    Args:
        repo_dir: a directory inside the checkout; default: the directory holding the `hgbench` package.
    """
    cwd = Path(repo_dir) if repo_dir is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
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


def slurm_job() -> dict[str, Any] | None:
    """The Slurm job this process runs in, as sacct names it (``4242``, or ``4240_3`` for an array's task), with the
    times Slurm requeued it so far (``SLURM_RESTART_COUNT``: a preemption, a time limit, `scontrol requeue`); None
    outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        job = f"{array}_{task}"
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return {"job_id": job, "restarts": int(restarts) if restarts.isdigit() else 0}


__all__ = [
    "collect_commit_info",
    "collect_environment",
    "cpu_has_native_bf16",
    "device_label",
    "machine_id",
    "slurm_job",
]
