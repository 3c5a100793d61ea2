"""Tests for hgbench.environment: environment and commit capture (with a fake NVML too), and the names derived from
machine_info (`machine_id` is also tested through the committed records in test_results)."""

from __future__ import annotations

import shutil
import subprocess
import types
from pathlib import Path

import pytest
import torch

from hgbench import environment
from hgbench.environment import collect_commit_info, collect_environment, device_label, machine_id


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


def test_a_record_with_a_malformed_float32_math_is_invalid() -> None:
    from hgbench.record import new_record, validate_record

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
    from hgbench.record import inference_entry

    timing = {"wall_s": 66.0, "device_s": 60.0, "compute_s": 60.0, "clock": "cuda_event", "data_wait_s": 6.0}
    entry = inference_entry(timing, 80.0)
    assert entry["clock"] == "cuda_event"
    assert entry["compute_min"] == entry["device_min"] == 1.0
