"""Shared fixtures: devices, a fake NVML, and the real MPII files in ../shared/data/mpii when they are present."""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from helpers.fake_nvml import make_fake_nvml
from helpers.mpii_archive import ARCHIVE_NAME, make_archive

from hgbench.spec.config import RunConfig

if TYPE_CHECKING:
    from helpers.cuda_standin import CudaStandin

REPO = Path(__file__).resolve().parents[1]
SHARED_MPII = REPO.parent / "shared" / "data" / "mpii"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that takes `cuda_device` as `cuda`, so ``pytest -m cuda`` runs the GPU checks alone."""
    for item in items:
        if "cuda_device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cuda)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the model-cost and synthetic-data caches out of the user's home, shared across the session."""
    if "HGBENCH_CACHE_DIR" not in os.environ:
        os.environ["HGBENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("hgbench-cache"))
    # What Triton builds under the CUDA stand-in (its launcher's C extension) stays out of ~/.triton too.
    os.environ.setdefault("TRITON_CACHE_DIR", str(tmp_path_factory.mktemp("triton-cache")))
    # --fast on the CPU would time a few steps of the case to choose its mode (hgbench.train.mode_probe): seconds to a
    # minute per case. Tests take the rule; tests/test_mode_probe.py turns the probe on with a fake timer.
    os.environ.setdefault("HGBENCH_FAST_PROBE", "0")


@pytest.fixture
def device() -> torch.device:
    return torch.device("cpu")


@pytest.fixture
def cuda_device() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A fake pynvml in ``sys.modules`` (`helpers.fake_nvml.make_fake_nvml`); readings are set through ``.state``."""
    fake = make_fake_nvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


@pytest.fixture(scope="session")
def shared_mpii() -> Path:
    """The real MPII annotation files (annotations, val ground truth, valid.h5, the 7-image sample)."""
    root = Path(os.environ.get("HGBENCH_SHARED_MPII", SHARED_MPII))
    if not (root / "detections_our_format.mat").is_file():
        pytest.skip(f"real MPII annotation files not found at {root}")
    return root


@pytest.fixture(scope="session")
def mpii_sample(shared_mpii: Path) -> Path:
    """A real MPII data directory in miniature: 7 JPEGs, 2 train and the first 5 val people."""
    root = shared_mpii / "sample"
    if not (root / "mpii_annotations.json").is_file():
        pytest.skip(f"MPII sample directory not found at {root}")
    return root


@pytest.fixture
def mpii_dir() -> Path:
    """A full real MPII data directory, only when HGBENCH_MPII_DIR points at one."""
    root = os.environ.get("HGBENCH_MPII_DIR")
    if not root:
        pytest.skip("set HGBENCH_MPII_DIR to a real MPII data directory to run this test")
    return Path(root)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic MPII-format dataset (24 people: 16 train, 8 val; 320x240 JPEGs), generated once per session.

    Shared and read-only: a test that needs to damage it copies it first (`shutil.copytree`).
    """
    from hgbench.data.synthetic import generate

    return generate(
        tmp_path_factory.mktemp("synthetic") / "synth24", people=24, seed=0, image_size=(320, 240), val_fraction=1 / 3
    )


def tiny_config(tmp_path: Path, synthetic_root: Path, **changes: object) -> RunConfig:
    """hg1 at 64x64 on a handful of synthetic people, no worker processes: seconds per epoch on a CPU."""
    settings = {
        "case": "hg1",
        "epochs": 1,
        "batch_size": 4,
        "test_batch_size": 4,
        "input_res": 64,
        "device": "cpu",
        "workers": 0,
        "data_dir": str(synthetic_root),
        "limit_train": 8,
        "limit_val": 6,
        "out": str(tmp_path / "results"),
        "checkpoint_dir": str(tmp_path / "runs"),
    }
    return RunConfig(**{**settings, **changes})


@pytest.fixture
def tiny(tmp_path: Path, synthetic_root: Path) -> RunConfig:
    """`tiny_config` as a fixture (test_cli_evaluate.py names another fixture `tiny` and calls `tiny_config`)."""
    return tiny_config(tmp_path, synthetic_root)


# The sub-folders of results/ that are committed (.gitignore keeps everything else there: the user's own runs).
COMMITTED_RESULTS = ("published", "bench", "benchmarks")


@pytest.fixture
def fresh_clone_results(tmp_path: Path) -> Path:
    """``results/`` as a fresh clone has it: only the committed sub-folders, whatever `make run` left in this tree."""
    import shutil

    root = tmp_path / "results"
    root.mkdir()
    for name in COMMITTED_RESULTS:
        if (REPO / "results" / name).is_dir():
            shutil.copytree(REPO / "results" / name, root / name)
    return root


@pytest.fixture
def cuda_standin(monkeypatch: pytest.MonkeyPatch, fake_nvml: types.ModuleType) -> Iterator[CudaStandin]:
    """Two stand-in GPUs for one test (`helpers.cuda_standin`): CUDA's rules enforced on the CPU; the test fails on any
    rule broken, even where the code under test caught the error. NVML answers for the GPUs by their PCI bus ids."""
    from helpers.cuda_standin import cuda_standin as standin
    from helpers.fake_nvml import answer_for_standin

    with standin(monkeypatch, device_count=2) as gpu:
        answer_for_standin(monkeypatch, fake_nvml, gpu)
        yield gpu
    assert not gpu.violations, "CUDA rules broken:\n" + "\n".join(gpu.violations)


@pytest.fixture
def served(tmp_path: Path, synthetic_root: Path) -> Path:
    """A folder to serve, holding the archive of the synthetic dataset's images."""
    root = tmp_path / "www"
    root.mkdir()
    make_archive(synthetic_root, root / ARCHIVE_NAME)
    return root
