"""`hgbench.compile_watch`: dynamo's silent fallback to eager is seen and recorded, and every compiled run starts it
afresh (tiny functions on dynamo's "eager" backend: tracing only, no code generation)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from hgbench.compile_watch import RECOMPILE_LIMIT_MESSAGE, CompileWatch, describe_fallback
from hgbench.config import RunConfig


class Repeat(nn.Module):
    """A layer applied `n` times: each `n` is a new graph for the same `forward` code, as each case's network is."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.layer = n, nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.n):
            x = self.layer(x)
        return x


def _compile_cases(*sizes: int) -> None:
    for n in sizes:
        torch.compile(Repeat(n), backend="eager")(torch.zeros(2, 4))


def test_a_forward_past_the_recompile_limit_is_reported_as_eager() -> None:
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=2):
        watch = CompileWatch.begin()
        _compile_cases(1, 2, 3)  # the third "case" finds the forward at its limit
        report = watch.report()
    assert report["recompile_limit_hits"] == 1
    assert report["eager_fallback"] is True
    assert report["frames_compiled"] == 2
    assert "recompile limit" in describe_fallback(report)


def test_each_watch_starts_dynamo_afresh() -> None:
    """What `hgbench run --case all` needs between cases: a forward at its limit in an earlier run compiles again."""
    import torch._dynamo

    with torch._dynamo.config.patch(recompile_limit=2):
        CompileWatch.begin()
        _compile_cases(1, 2)  # an earlier run used up the limit
        watch = CompileWatch.begin()
        _compile_cases(3)
        report = watch.report()
    assert report == {"frames": 1, "frames_compiled": 1, "recompile_limit_hits": 0, "eager_fallback": False}
    assert describe_fallback(report) is None


def test_a_compiled_run_starts_dynamo_afresh_and_records_what_it_compiled(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner, without compiling a network: the fake compile counts as dynamo would for a forward at its limit."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from hgbench.runner import run

    events: list[str] = []
    real_reset = torch._dynamo.reset

    def reset() -> None:
        events.append("reset")
        real_reset()

    def fake_compile(model: nn.Module, **kwargs: object) -> nn.Module:
        events.append("compile")
        counters["frames"]["total"] += 1  # tried, not compiled: left to eager
        counters["unimplemented"][f"{RECOMPILE_LIMIT_MESSAGE}\n  Explanation: ..."] += 1
        return model

    monkeypatch.setattr(torch._dynamo, "reset", reset)
    monkeypatch.setattr(torch, "compile", fake_compile)
    outcome = run(replace(tiny, compile=True), progress=False)
    assert events[0] == "reset"
    assert "compile" in events
    record = json.loads(outcome.record_path.read_text())
    assert record["config"]["compile"] is True
    compiled = record["results"]["compile"]
    assert compiled["eager_fallback"] is True
    assert compiled["recompile_limit_hits"] == events.count("compile")
