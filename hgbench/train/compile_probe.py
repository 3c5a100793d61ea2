"""Whether torch.compile works on a GPU of this machine: a tiny function compiled and run once, per process.

On CUDA, inductor writes Triton kernels, and Triton builds its kernel launcher, a C extension, on first use: it needs a
C compiler (``$CC``, else gcc or clang on PATH) and Python's headers (``Python.h``). A machine without them (a slim
container, a Python built without its headers) fails at the first compiled call, which in a `--fast` run is the first
training step, after the run's record exists. `probe_compile` meets the same failure first, in seconds, with the
toolchain a real compile uses: `hgbench.train.speed_modes` then leaves compile off (`hgbench run --fast` runs without it
and its record's ``fast_mode`` says why; `hgbench bench` skips its compile rungs with the reason).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from hgbench.errors import one_line
from hgbench.measure.compile_watch import compile_model

# What to install when the failure is the toolchain's (Triton's own words name the compiler or the command only).
TOOLCHAIN_HINT = (
    "Triton builds its launcher with a C compiler and Python.h: install gcc and the Python headers, or set CC"
)


@dataclass(frozen=True)
class CompileProbe:
    """What compiling a tiny function on one device showed."""

    ok: bool  # it compiled and ran, forward and backward
    seconds: float  # wall seconds of the probe (inductor's first import included)
    reason: str | None = None  # one line: why torch.compile does not work here; None when ok

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_PROBED: dict[str, CompileProbe] = {}  # by device ("cuda:0"): one probe per device and process


def _tiny(x: torch.Tensor) -> torch.Tensor:
    # A fused elementwise kernel and a reduction, then their backward: what a network's first compiled step builds.
    return torch.relu(x * 2.0 + 1.0).sum()


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error: dynamo wraps the backend's failure (BackendCompilerFailed, InductorError)."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "inner_exception", None) or exc.__cause__
        if inner is None or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def describe_failure(exc: BaseException) -> str:
    """One line for a failed compile: the root error, and what to install where the toolchain is the cause."""
    root = _root_cause(exc)
    if isinstance(root, subprocess.CalledProcessError):
        command = root.cmd[0] if isinstance(root.cmd, list | tuple) and root.cmd else root.cmd
        text = f"{command} exited with code {root.returncode} building a kernel's launcher"
    else:
        text = f"{type(root).__name__}: {one_line(root)}"[:240]
    toolchain = isinstance(root, subprocess.CalledProcessError | FileNotFoundError | PermissionError) or any(
        word in text for word in ("compiler", "Python.h", " CC ")
    )
    return f"{text} ({TOOLCHAIN_HINT})" if toolchain else text


def probe_compile(device: str | torch.device) -> CompileProbe:  # cuda-only
    """Compile `_tiny` with torch.compile on `device` and run it forward and backward; the answer is kept for the
    rest of the process. Never raises: a failure is ``ok=False`` with its reason."""
    key = str(torch.device(device))
    if key not in _PROBED:
        start = time.perf_counter()
        try:
            dev = torch.device(key)
            if dev.index is None:
                dev = torch.device(dev.type, torch.cuda.current_device())
            x = torch.ones(64, device=dev, requires_grad=True)
            compile_model(_tiny)(x).backward()
            torch.cuda.synchronize(dev)  # the kernels ran, not only launched
            result = CompileProbe(True, time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - whatever fails, torch.compile is not usable here: say why
            result = CompileProbe(False, time.perf_counter() - start, describe_failure(exc))
        _PROBED[key] = result
    return _PROBED[key]


def forget_probes() -> None:
    """Drop the answers kept so far (the next `probe_compile` compiles again)."""
    _PROBED.clear()
