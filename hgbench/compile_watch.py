"""Whether `torch.compile` compiled what a run asked it to, from dynamo's own counters.

Dynamo gives up on a function without an error once it has compiled it `recompile_limit` times (8) in one process,
and runs it eagerly from then on. A process that runs case after case (`hgbench run --case all`) compiles the same
forward for every network, so from about the fourth case on a ``--compile`` run would train eagerly while its record
says ``compile``. A run therefore starts dynamo afresh (`CompileWatch.begin`, as `hgbench bench` does between modes)
and its record says what dynamo did (`CompileWatch.report`): frames compiled, frames left to eager, and recompile-limit
hits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
