"""Tests for hgbench.measure.environment: environment and commit capture (with a fake NVML too), and the names derived
from machine_info (`machine_id` is also tested through the committed records in test_results)."""

from __future__ import annotations

import json
import shutil
import subprocess
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from hgbench.measure import environment
from hgbench.measure.environment import collect_commit_info, collect_environment, device_label, machine_id
from hgbench.spec.config import RunConfig

if TYPE_CHECKING:
    from helpers.cuda_standin import CudaStandin


# ------------------------------------------------------------------------------------------------------ environment
def test_collect_environment_on_cpu() -> None:
    info = collect_environment("cpu")
    for key in ("python", "torch", "cpu", "platform", "hostname", "machine_id", "hgbench_version"):
        assert isinstance(info[key], str), key
        assert info[key], key
    assert info["device"] == "cpu"
    assert isinstance(info["cpu_count"], int)
    assert info["cpu_count"] >= 1
    assert isinstance(info["gpu_count"], int)
    assert isinstance(info["nvml"], bool)
    assert info["gpu_name"] is None
    assert info["gpu_state"] is None
    assert info["machine_id"] == machine_id(info)  # CPU model and core count
    assert info["machine_id"].startswith("cpu-")
    assert info["cudnn"] is None or isinstance(info["cudnn"], int)
    if not info["nvml"]:
        assert info["driver"] is None
        assert info["nvml_reason"]


def test_collect_environment_with_fake_nvml(fake_nvml: types.ModuleType) -> None:
    info = collect_environment("cuda")
    assert info["nvml"] is True
    assert info["driver"] == "999.99"
    state = info["gpu_state"]
    assert state["sm_clock_mhz"] == 1500
    assert state["temperature_c"] == 61
    assert state["power_limit_w"] == pytest.approx(300.0)
    assert state["throttle_reasons"] == 4
    assert fake_nvml.state.shutdown == 1


def test_collect_environment_cuda(cuda_device: torch.device) -> None:
    info = collect_environment(cuda_device)
    assert info["device"] == "cuda"
    assert info["gpu_name"]
    assert info["gpu_count"] >= 1
    assert not info["machine_id"].startswith("cpu")


def test_commit_info_outside_git(tmp_path: Path) -> None:
    assert collect_commit_info(tmp_path) == {"id": None, "describe": None, "dirty": None}
    assert collect_commit_info(tmp_path / "does-not-exist") == {"id": None, "describe": None, "dirty": None}


def test_commit_info_without_git_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on PATH: OSError inside, None outside
    assert collect_commit_info()["id"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_info_in_a_repository(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("commit", "-q", "-m", "one")
    clean = collect_commit_info(tmp_path)
    assert len(clean["id"]) == 40
    assert clean["dirty"] is False
    assert clean["describe"] == clean["id"][:7]
    (tmp_path / "f.txt").write_text("b")
    dirty = collect_commit_info(tmp_path)
    assert dirty["dirty"] is True
    assert dirty["describe"].endswith("-dirty")


def test_cpu_bf16_flag_is_a_bool() -> None:
    assert isinstance(environment.cpu_has_native_bf16(), bool)


def test_device_label_names_the_gpu_else_the_cpu() -> None:
    assert device_label({"gpu_name": "NVIDIA H100", "cpu": "Xeon"}) == "NVIDIA H100"
    assert device_label({"gpu_name": None, "cpu": "Xeon"}) == "CPU: Xeon"
    assert device_label({"gpu_name": None, "cpu": "Xeon", "torch_threads": 2}, threads=True) == "CPU: Xeon (2 threads)"
    assert device_label({}) == "unknown device"


def test_float32_math_on_the_cpu_is_fp32() -> None:
    math = collect_environment("cpu")["float32_math"]
    assert math["conv"] == "fp32"
    assert math["cudnn_allow_tf32"] is None
    assert environment.float32_label(math) == "fp32"


@pytest.mark.parametrize(
    ("capability", "allow", "conv"), [((8, 0), True, "tf32"), ((8, 0), False, "fp32"), ((7, 0), True, "fp32")]
)
def test_float32_math_says_tf32_where_a_gpu_runs_fp32_convolutions_as_tf32(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], allow: bool, conv: str
) -> None:
    """Ampere-or-newer with torch's default `cudnn.allow_tf32 = True`: an "fp32" run's convolutions are TF32."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow)
    math = environment.float32_math("cuda:0")
    assert math["cudnn_allow_tf32"] is allow
    assert math["conv"] == conv
    assert math["tf32_capable"] is (capability >= (8, 0))
    assert environment.float32_label(math) == conv


@pytest.fixture
def newer_fp32_api() -> Iterator[None]:
    """torch 2.9+'s ``fp32_precision`` switches, put back as they were after the test (through the same API: once it
    is used, torch refuses to read the legacy TF32 switches until their parts agree again)."""
    parts = [(torch.backends.cudnn, "conv"), (torch.backends.cudnn, "rnn"), (torch.backends.cuda, "matmul")]
    if not all(hasattr(getattr(b, p, None), "fp32_precision") for b, p in parts):
        pytest.skip("this torch has no fp32_precision switches")
    saved = [(getattr(b, p), getattr(b, p).fp32_precision) for b, p in parts]
    yield
    for part, value in saved:
        part.fp32_precision = value


def test_the_environment_is_collected_after_the_newer_fp32_api_was_used(newer_fp32_api: None) -> None:
    """A script that asked for TF32 matrix products the new way: torch then refuses to say its matmul precision the
    old way, which every run and bench record reads, on a CPU too."""
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    math = collect_environment("cpu")["float32_math"]
    assert math["matmul_precision"] is None  # torch would not say
    assert (math["conv"], math["matmul"]) == ("fp32", "fp32")  # no GPU: whatever the switches say


def test_tf32_on_a_gpu_is_read_through_the_newer_api_where_it_was_set(
    newer_fp32_api: None, cuda_standin: CudaStandin
) -> None:
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # torch now raises on reading cudnn.allow_tf32
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    math = collect_environment("cuda:0")["float32_math"]
    assert math["cudnn_conv_fp32_precision"] == "ieee"
    assert (math["cudnn_allow_tf32"], math["conv"]) == (False, "fp32")
    assert (math["cuda_matmul_fp32_precision"], math["cuda_matmul_allow_tf32"], math["matmul"]) == (
        "tf32",
        True,
        "tf32",
    )
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    assert environment.float32_math("cuda:0")["conv"] == "tf32"


def test_run_and_bench_on_a_gpu_survive_the_newer_fp32_api(
    newer_fp32_api: None, cuda_standin: CudaStandin, tiny: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functools

    from hgbench.run import bench, runner
    from hgbench.spec.cases import get_spec

    small_peak = functools.partial(bench.measure_peak_conv_tflops, batch=1, channels=8, size=8, iters=2)
    monkeypatch.setattr(bench, "measure_peak_conv_tflops", small_peak)  # the real one: minutes on a CPU

    torch.backends.cudnn.conv.fp32_precision = "ieee"
    outcome = runner.run(
        replace(tiny, device="cuda", limit_train=4, limit_val=2, test_batch_size=2), quiet=True, progress=False
    )
    assert outcome.status == "finished"
    record = json.loads(outcome.record_path.read_text())
    assert record["machine_info"]["float32_math"]["conv"] == "fp32"
    config = bench.BenchConfig("hg1", False, 1, 1, 0, 64, "cuda", ("eager",))
    result = bench.run_bench(get_spec("hg1"), config)
    assert result["results"]["eager"]["label"] == "fp32"  # computed as IEEE float32, as asked, not "tf32"
    assert result["config"]["cudnn_allow_tf32"] is False


def test_a_record_with_a_malformed_float32_math_is_invalid() -> None:
    from hgbench.run.record import new_record, validate_record

    record = new_record(
        run_id="0001_case1_seed0",
        machine_info=collect_environment("cpu"),
        commit_info={},
        spec={"name": "1"},
        config={},
        dataset={},
        model={},
    )
    assert validate_record(record) == []
    record["machine_info"]["float32_math"] = {"conv": "fast"}
    assert validate_record(record) == [
        "machine_info.float32_math is {'conv': 'fast'}, not an object whose conv is tf32 or fp32"
    ]


def test_an_inference_entry_names_the_clock_of_its_compute_minutes() -> None:
    from hgbench.run.record import inference_entry

    timing = {"wall_s": 66.0, "device_s": 60.0, "compute_s": 60.0, "clock": "cuda_event", "data_wait_s": 6.0}
    entry = inference_entry(timing, 80.0)
    assert entry["clock"] == "cuda_event"
    assert entry["compute_min"] == entry["device_min"] == 1.0
