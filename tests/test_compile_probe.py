"""torch.compile on a GPU needs a C compiler and Python.h on the host (Triton builds its launcher with them): `--fast`
and `hgbench bench` find out with a tiny compiled function first, and without them run uncompiled, saying why.

The CUDA stand-in runs compiled models eagerly but builds a C extension through Triton's own build code on the first
compiled call, as Triton does on a GPU, so a host without a compiler fails here as it would there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.cuda_standin import CudaStandin

from hgbench.spec.cases import get_spec
from hgbench.train import compile_probe
from hgbench.train.compile_probe import TOOLCHAIN_HINT, probe_compile
from hgbench.train.mode_probe import choose_fast_mode, describe_fast_mode
from hgbench.train.speed_modes import plan_modes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_c_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``CC`` names a compiler that is not there (Triton takes ``$CC`` before looking on PATH), with a Triton cache of
    its own (a launcher built earlier would need no compiler)."""
    build = pytest.importorskip("triton.runtime.build")

    missing = str(tmp_path / "no-such-cc")
    monkeypatch.setenv("CC", missing)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    build._find_compiler.cache_clear()  # Triton looks its compiler up once per process
    compile_probe.forget_probes()
    yield missing
    build._find_compiler.cache_clear()
    compile_probe.forget_probes()


def test_without_a_c_compiler_fast_runs_uncompiled_and_bench_skips_compile_saying_why(
    no_c_compiler: str, cuda_standin: CudaStandin
) -> None:
    probe = probe_compile("cuda")
    assert not probe.ok
    assert no_c_compiler in probe.reason
    assert probe.reason.endswith(f"({TOOLCHAIN_HINT})")
    assert probe_compile("cuda") is probe  # once per device and process

    choice = choose_fast_mode("cuda", get_spec("hg1"), batch=6, input_res=64)
    assert choice.settings == {"channels_last": True, "amp": True, "compile": False, "decode": "device"}
    assert choice.mode == "bf16"
    assert choice.probe["compile_probe"]["ok"] is False
    assert probe.reason in choice.probe["reason"]
    assert "without torch.compile" in describe_fast_mode(choice.to_dict())

    plans = {p.mode: p for p in plan_modes(["bf16", "compile", "cudagraphs"], "cuda:0")}
    assert plans["bf16"].settings is not None
    assert plans["compile"].settings is None
    assert plans["compile"].skip_reason == plans["cudagraphs"].skip_reason == probe.reason


@pytest.mark.skipif(torch.cuda.is_available(), reason="the stand-in stands in for a GPU that is not there")
def test_with_a_c_compiler_fast_compiles(cuda_standin: CudaStandin, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("triton")
    if not (os.environ.get("CC") or any(Path(d, c).exists() for d in os.get_exec_path() for c in ("gcc", "clang"))):
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))  # built now, not read from an earlier build
    compile_probe.forget_probes()
    probe = probe_compile("cuda")
    assert probe.ok, probe.reason
    choice = choose_fast_mode("cuda", get_spec("hg1"), batch=6, input_res=64)
    assert (choice.mode, choice.settings["compile"]) == ("compile", True)
    assert choice.probe["compile_probe"] == probe.to_dict()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine where CUDA cannot start")
def test_the_probe_never_raises() -> None:
    """Where CUDA itself cannot start (torch.cuda.is_available() taken at its word elsewhere): a failed probe, not
    a crash of the run that asked."""
    compile_probe.forget_probes()
    probe = probe_compile("cuda")
    assert not probe.ok
    assert probe.reason
    compile_probe.forget_probes()


def test_a_fast_gpu_run_on_a_host_without_a_c_compiler_finishes_uncompiled(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """The whole `hgbench run --fast` in a process whose PATH has no C compiler (and no CC): before, its record was
    written and the first compiled step failed; now it trains without compile and the record says why."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "CXX")}
    env |= {"PATH": str(empty), "TRITON_CACHE_DIR": str(tmp_path / "triton")}
    argv = ["run", "--case", "hg1", "--fast", "--device", "cuda", "--data-dir", str(synthetic_root), "--epochs", "1"]
    argv += ["--input-res", "64", "--batch", "4", "--test-batch", "2", "--limit-train", "4", "--limit-val", "2"]
    argv += ["--workers", "0", "--quiet", "--out", str(tmp_path / "results"), "--checkpoint-dir", str(tmp_path / "ck")]
    proc = subprocess.run(
        [sys.executable, str(REPO / "tests" / "helpers" / "standin_cli.py"), *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = (tmp_path / "results").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "finished"
    assert (record["config"]["compile"], record["config"]["amp"], record["config"]["decode"]) == (False, True, "device")
    fast = record["fast_mode"]
    assert fast["probe"]["compile_probe"]["ok"] is False
    assert "Failed to find C compiler" in fast["probe"]["reason"]
    assert TOOLCHAIN_HINT in fast["probe"]["reason"]
