"""pytest-benchmark suite: the evaluation's cost on the full MPII validation set (2,958 people).

PCKh with its threshold sweep, heatmap decoding (argmax + quarter-pixel shift) and the inverse crop mapping, on
random data of the real shapes: what every validation epoch and `hgbench evaluate` pay on the host.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgbench.data.groundtruth import GroundTruth
from hgbench.eval.decoding import get_heatmap_maxima, heatmap_acc_counts, heatmap_to_image
from hgbench.eval.metrics import evaluate_pckh, pckh

from .conftest import rounds

N_VAL = 2958
RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def ground_truth() -> GroundTruth:
    joints = RNG.uniform(0, 1280, size=(N_VAL, 16, 2))
    missing = RNG.random((N_VAL, 16)) < 0.1
    top_left = RNG.uniform(0, 1000, size=(N_VAL, 2))
    boxes = np.stack([top_left, top_left + RNG.uniform(30, 120, size=(N_VAL, 2))], axis=1)
    return GroundTruth(joints, missing, boxes)


@pytest.mark.smoke
def test_pckh_full_validation_set(benchmark, ground_truth: GroundTruth) -> None:  # noqa: ANN001
    pred = ground_truth.joints + RNG.normal(0, 10, size=ground_truth.joints.shape)
    benchmark.extra_info["people"] = N_VAL
    result = benchmark.pedantic(evaluate_pckh, args=(pred, ground_truth), rounds=rounds(20), warmup_rounds=1)
    assert result.count == N_VAL


@pytest.mark.smoke
def test_pckh_threshold_sweep(benchmark, ground_truth: GroundTruth) -> None:  # noqa: ANN001
    pred = ground_truth.joints + RNG.normal(0, 10, size=ground_truth.joints.shape)
    thresholds = np.linspace(0, 0.5, 51)
    args = (pred, ground_truth.joints, ground_truth.missing, ground_truth.head_size, thresholds)
    pck, _ = benchmark.pedantic(pckh, args=args, rounds=rounds(20), warmup_rounds=1)
    assert pck.shape == (51, 16)


@pytest.mark.smoke
def test_decode_and_map_back_validation_heatmaps(benchmark) -> None:  # noqa: ANN001
    """Decode 2,958 people's 64x64 heatmaps (in batches of 6, as the inference pass) and map them to the image."""
    batch = torch.rand(6, 16, 64, 64)
    target = torch.rand(6, 16, 64, 64)
    center = RNG.uniform(200, 1000, size=(N_VAL, 2))
    scale = RNG.uniform(1, 4, size=N_VAL)
    rotation = np.zeros(N_VAL)

    def run() -> np.ndarray:
        coords = [get_heatmap_maxima(batch)[0] for _ in range(N_VAL // 6)]
        heatmap_acc_counts(batch, target)
        stacked = np.concatenate(coords)
        n = len(stacked)
        return heatmap_to_image(stacked, center[:n], scale[:n], 256, 64, rotation=rotation[:n])

    benchmark.extra_info["people"] = N_VAL // 6 * 6
    out = benchmark.pedantic(run, rounds=rounds(5), warmup_rounds=1)
    assert out.shape == (N_VAL // 6 * 6, 16, 2)
