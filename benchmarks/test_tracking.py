"""pytest-benchmark suite: what TensorBoard logging adds to an epoch (hgbench.tracking).

Per epoch a run logs about twenty scalars and draws four validation people (read once, cropped, drawn and PNG-encoded)
into its event file, then flushes it. Timed here on MPII-sized images (1280x720 JPEGs), against an epoch of the
shortest the study measured (14.3 min, the published table) and against a one-minute epoch (a fast GPU on a subset):
the claim is under 1% of an epoch. A one-step CPU smoke epoch is seconds, so there the share is larger; the smoke run's
own records say how long its epochs took.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hgbench.data.mpii import MPIIDataset
from hgbench.data.synthetic import generate
from hgbench.spec.cases import PUBLISHED
from hgbench.tracking import Tracking
from hgbench.tracking.pictures import PictureSource
from hgbench.tracking.tensorboard_log import TensorBoardTracker

from .conftest import SMOKE, rounds

ONE_MINUTE_S = 60.0


@pytest.fixture(scope="module")
def val_split(tmp_path_factory: pytest.TempPathFactory) -> MPIIDataset:
    root = generate(
        tmp_path_factory.mktemp("mpii-sized") / "synth", people=12, seed=0, image_size=(1280, 720), val_fraction=0.5
    )
    return MPIIDataset(root, split="val", input_res=256)


def _record(tmp: Path) -> dict:
    return {
        "run_id": "0001_bench",
        "started": "2026-12-05T00:00:00+00:00",
        "machine_info": {"machine_id": "bench"},
        "results": {"epochs": []},
        "status": "running",
    }


def _entry(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "lr": 5e-4,
        "train_loss": 0.002,
        "val_loss": 0.0019,
        "heatmap_acc": 0.41,
        "pckh": 38.2,
        "pckh_parts": {g: 40.0 for g in ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")},
        "wall_s": 61.2,
        "compute_s": 55.0,
        "data_wait_s": 4.1,
        "device_idle_s": 0.4,
        "val_wall_s": 5.0,
        "images_per_s": 98.1,
        "energy_j": 12345.0,
        "gpu_util_mean": 97.0,
        "gpu_mem_used_max_mib": 5000,
        "power_mean_w": 250.0,
        "load": {"other_cpu_frac": 0.01, "steal_frac": 0.0},
    }


@pytest.mark.smoke
def test_tensorboard_logging_per_epoch(benchmark, val_split: MPIIDataset, tmp_path: Path) -> None:  # noqa: ANN001
    """One epoch's logging: the scalars, four people drawn from 1280x720 images, the event file flushed."""
    gt = val_split.ground_truth()
    index = np.array([val_split.position(i) for i in range(len(val_split))])
    predictions = gt.joints + np.random.default_rng(0).normal(0, 8, size=gt.joints.shape)
    tracking = Tracking([TensorBoardTracker(tmp_path / "tb")], pictures=PictureSource(val_split, gt))
    tracking.open(_record(tmp_path))
    epochs = iter(range(1, 10_000))

    def log() -> None:
        tracking.log_epoch(_entry(next(epochs)), predictions, index)

    benchmark.pedantic(log, rounds=rounds(20), warmup_rounds=1)
    tracking.close("finished")
    seconds = benchmark.stats.stats.median
    shortest = min(row.min_per_epoch for row in PUBLISHED.values()) * 60
    benchmark.extra_info["ms_per_epoch"] = seconds * 1000
    benchmark.extra_info["pct_of_shortest_published_epoch"] = 100 * seconds / shortest
    benchmark.extra_info["pct_of_one_minute_epoch"] = 100 * seconds / ONE_MINUTE_S
    assert tracking.state()["tensorboard"]["error"] is None
    if not SMOKE:  # CI machines are shared and noisy: no time assertion in smoke mode
        assert seconds < 0.01 * ONE_MINUTE_S
