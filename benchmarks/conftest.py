"""pytest-benchmark setup: every saved benchmark carries hgbench's machine description, and device fixtures."""

from __future__ import annotations

import os

import pytest
import torch

from hgbench.measure.environment import collect_environment

torch.set_num_threads(min(2, os.cpu_count() or 1))  # the project's CPU figures are for 2 threads (environment.md)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Add `collect_environment()` (versions, CPU, GPU, driver, NVML clocks/temperature/throttling) under `hgbench`."""
    machine_info["hgbench"] = collect_environment("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the model-cost cache out of the user's home (as tests/conftest.py does)."""
    if "HGBENCH_CACHE_DIR" not in os.environ:
        os.environ["HGBENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("hgbench-cache"))


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


# `HGBENCH_BENCH_SMOKE=1` (what `make test` and CI use): the `smoke`-marked subset at the fewest rounds, so a slowdown
# shows in CI output; in that mode no benchmark asserts on a time figure (CI machines are shared and noisy).
SMOKE = os.environ.get("HGBENCH_BENCH_SMOKE") == "1"


def rounds(full: int) -> int:
    """Rounds to time: `full`, or 2 in smoke mode."""
    return min(full, 2) if SMOKE else full
