"""Whether `torch.compile` compiled what a run asked it to, from dynamo's own counters.

Dynamo gives up on a function without an error once it has compiled it `recompile_limit` times (8) in one process,
and runs it eagerly from then on. A process that runs case after case (`hgbench run --case all`) compiles the same
forward for every network, so from about the fourth case on a ``--compile`` run would train eagerly while its record
says ``compile``. A run therefore starts dynamo afresh (`CompileWatch.begin`, as `hgbench bench` does between modes)
and its record says what dynamo did (`CompileWatch.report`): frames compiled, frames left to eager, and recompile-limit
hits.

Every `torch.compile` of hgbench goes through `compile_model`, which keeps one torch notice out of the user's output:
inductor imports ``torch.utils.cpp_extension`` to build its CPU kernels, and that module logs "No CUDA runtime is
found, using CUDA_HOME=..." whenever CUDA_HOME is set on a machine where torch sees no GPU (a CPU run on a GPU
image). It is not news to a CPU run; every other message of that logger still shows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The logger and the start of the message `quiet_cuda_home_notice` drops (torch/utils/cpp_extension.py).
CPP_EXTENSION_LOGGER = "torch.utils.cpp_extension"
CUDA_HOME_NOTICE = "No CUDA runtime is found"

# The start of the message dynamo counts (``counters["unimplemented"]``) when a function hits its recompile limit.
RECOMPILE_LIMIT_MESSAGE = "Dynamo recompile limit exceeded"


def _snapshot() -> dict[str, int]:
    from torch._dynamo.utils import counters

    unimplemented: Mapping[str, int] = counters["unimplemented"]
    return {
        "frames": int(counters["frames"]["total"]),
        "frames_compiled": int(counters["frames"]["ok"]),
        "recompile_limit_hits": sum(int(n) for m, n in unimplemented.items() if m.startswith(RECOMPILE_LIMIT_MESSAGE)),
    }


@dataclass(frozen=True)
class CompileWatch:
    """Dynamo's counters at the start of a run, to tell the run's own compilations from earlier ones."""

    start: dict[str, int]

    @classmethod
    def begin(cls) -> CompileWatch:
        """Reset dynamo (compiled code, guards and recompile counts, as a fresh process has them), then watch."""
        import torch._dynamo

        torch._dynamo.reset()
        return cls(_snapshot())

    def report(self) -> dict[str, Any]:
        """What dynamo did since `begin`: the record's ``results.compile``.

        ``frames`` is every function dynamo was asked to compile, ``frames_compiled`` those it compiled; the rest,
        and any function that hit the recompile limit, ran eagerly (``eager_fallback``).
        """
        now = _snapshot()
        out: dict[str, Any] = {k: now[k] - self.start[k] for k in now}
        out["eager_fallback"] = out["recompile_limit_hits"] > 0 or out["frames_compiled"] < out["frames"]
        return out


def describe_fallback(report: Mapping[str, Any]) -> str | None:
    """A warning line for a run whose compiled model ran (partly) eagerly; None when everything compiled."""
    if not report.get("eager_fallback"):
        return None
    hits = report.get("recompile_limit_hits") or 0
    failed = report["frames"] - report["frames_compiled"]
    return (
        f"torch.compile fell back to eager: {failed} of {report['frames']} compilations failed"
        f"{f', {hits} at the recompile limit' if hits else ''} (recorded in results.compile)"
    )


class _DropCudaHomeNotice(logging.Filter):
    """Drops the CUDA_HOME notice of ``torch.utils.cpp_extension`` and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CUDA_HOME_NOTICE)


def quiet_cuda_home_notice() -> None:
    """Keep torch's "No CUDA runtime is found, using CUDA_HOME=..." out of the output (once per process).

    The filter sits on the logger by name, so it works whether or not torch.utils.cpp_extension is imported yet.
    """
    logger = logging.getLogger(CPP_EXTENSION_LOGGER)
    if not any(isinstance(f, _DropCudaHomeNotice) for f in logger.filters):
        logger.addFilter(_DropCudaHomeNotice())


def compile_model(model: Any, *, mode: str | None = None) -> Any:
    """``torch.compile(model, mode=mode)`` without torch's CUDA_HOME notice (see the module docstring)."""
    import torch

    quiet_cuda_home_notice()
    return torch.compile(model, mode=mode)
