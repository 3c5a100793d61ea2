"""`hgbench.measure.compile_watch`: dynamo's silent fallback to eager is seen and recorded, and every compiled run
starts it afresh (tiny functions on dynamo's "eager" backend: tracing only, no code generation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from hgbench.measure.compile_watch import RECOMPILE_LIMIT_MESSAGE, CompileWatch, describe_fallback
from hgbench.spec.config import RunConfig


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

    from hgbench.run.runner import run

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


# ------------------------------------------------------------------------------------------- torch's CUDA_HOME notice
_IMPORT_AS_INDUCTOR_DOES = (
    "import logging, sys\n"
    "{before}"
    "import torch.utils.cpp_extension\n"  # what inductor's CPU code generation imports
    "logging.getLogger('torch.utils.cpp_extension').warning('another warning')\n"
)


def _stderr_of(before: str, tmp_path: Path) -> str:
    env = {**os.environ, "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}  # set, on a machine without a GPU
    code = _IMPORT_AS_INDUCTOR_DOES.format(before=before)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_compiling_keeps_torchs_cuda_home_notice_out_and_other_warnings_in(tmp_path: Path) -> None:
    plain = _stderr_of("", tmp_path)
    if "No CUDA runtime is found" not in plain:
        pytest.skip("this torch does not log the CUDA_HOME notice here")
    compile_first = (
        "import torch\nfrom hgbench.measure.compile_watch import compile_model\ncompile_model(torch.nn.Linear(2, 2))\n"
    )
    compiled = _stderr_of(compile_first, tmp_path)
    assert "No CUDA runtime is found" not in compiled
    assert "another warning" in compiled
