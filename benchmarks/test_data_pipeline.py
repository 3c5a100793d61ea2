"""Training-pipeline throughput per worker on 720x1280 JPEGs: hgbench's pipeline beside a straightforward PIL one.

Both do the same steps for the same samples and the same augmentation draws: decode, crop + scale + rotate + flip,
colour gain, mean subtraction, 16 Gaussian heatmaps. hgbench decodes with `torchvision.io.decode_jpeg` and warps
once with `cv2.warpAffine`; the baseline opens with PIL, rotates the whole image, then crops and resizes, and draws
the heatmaps joint by joint as the reference code did. One thread each, in the main process: what one DataLoader
worker does. The second test asserts the pipeline is at least twice as fast (plain comparison of the two means).

The ``device`` tests measure the other form of the pipeline (``--decode device``): what is left to a worker, and
the batched decode + crop + normalise of a whole batch on the device (nvjpeg and `grid_sample` on CUDA; on a CPU
it runs in the main process, which is why ``--fast`` keeps the workers there).

Run with ``pytest benchmarks/test_data_pipeline.py --benchmark-only``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytest_benchmark.fixture import BenchmarkFixture

from hgbench.data.device_decode import DeviceDecodeLoader, collate
from hgbench.data.mpii import MPIIDataset
from hgbench.data.synthetic import generate
from hgbench.data.transforms import (
    MPII_MEAN,
    Augmentation,
    adjust_center_scale,
    apply_affine,
    heatmap_matrix,
    sample_augmentation,
)
from hgbench.spec.skeleton import FLIP_INDEX

from .conftest import SMOKE, rounds

IMAGE_SIZE = (1280, 720)  # (width, height), as most MPII images
PEOPLE = 12  # about 10 train samples; each round processes all of them
ROUNDS = 5
INPUT_RES = 256
MIN_SPEEDUP = 2.0

_means: dict[str, float] = {}  # seconds per round, filled by the first test, checked by the second


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> MPIIDataset:
    root = generate(tmp_path_factory.mktemp("bench-data") / "hd", people=PEOPLE, seed=0, image_size=IMAGE_SIZE)
    return MPIIDataset(root, "train", input_res=INPUT_RES, augment=True)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Measure what one worker does: one torch thread, one OpenCV thread."""
    import cv2

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


def _draw_labelmap(heat: np.ndarray, pt: np.ndarray, sigma: float) -> bool:
    """The reference code's per-joint Gaussian: a (6 sigma + 1)^2 patch pasted around the rounded point."""
    res = heat.shape[0]
    x, y = int(np.floor(pt[0] + 0.5)), int(np.floor(pt[1] + 0.5))
    r = int(3 * sigma)
    if x < 0 or y < 0 or x >= res or y >= res:
        return False
    size = 2 * r + 1
    g = np.zeros((size, size), dtype=np.float32)
    for i in range(size):
        for j in range(size):
            g[i, j] = np.exp(-((j - r) ** 2 + (i - r) ** 2) / (2 * sigma**2))
    gx0, gy0 = max(0, r - x), max(0, r - y)
    x0, y0, x1, y1 = max(0, x - r), max(0, y - r), min(res, x + r + 1), min(res, y + r + 1)
    heat[y0:y1, x0:x1] = g[gy0 : gy0 + (y1 - y0), gx0 : gx0 + (x1 - x0)]
    return True


def pil_sample(ds: MPIIDataset, i: int, aug: Augmentation) -> dict[str, torch.Tensor]:
    """The same sample as ``ds[i]``, the straightforward way."""
    rec = ds.people[i]
    center, scale = adjust_center_scale(rec.center, rec.scale)
    scale *= aug.scale_factor
    res, hres = ds.input_res, ds.heatmap_res
    img = Image.open(ds.image_path(i)).convert("RGB")
    # PIL turns the picture counter-clockwise for a positive angle, as crop_matrix does.
    img = img.rotate(aug.rotation, resample=Image.Resampling.BILINEAR, center=(center[0], center[1]))
    half = 100.0 * scale
    box = (round(center[0] - half), round(center[1] - half), round(center[0] + half), round(center[1] + half))
    img = img.crop(box).resize((res, res), Image.Resampling.BILINEAR)
    if aug.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = np.clip(x * np.array(aug.gain, dtype=np.float32), 0.0, 1.0) - np.array(MPII_MEAN, dtype=np.float32)
    joints = rec.joints[list(FLIP_INDEX)] if aug.flip else rec.joints
    pts = apply_affine(joints[:, :2], heatmap_matrix(center, scale, aug.rotation, res, hres, flip=aug.flip))
    target = np.zeros((len(joints), hres, hres), dtype=np.float32)
    weight = np.zeros(len(joints), dtype=np.float32)
    for j in range(len(joints)):
        if joints[j, 0] == 0 and joints[j, 1] == 0:
            continue
        weight[j] = float(_draw_labelmap(target[j], pts[j], ds.sigma)) * float(joints[j, 2] > 0)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))),
        "target": torch.from_numpy(target),
        "target_weight": torch.from_numpy(weight),
    }


def _run_all(fn: Callable[[int], object], n: int) -> None:
    for i in range(n):
        fn(i)


def _measure(benchmark: BenchmarkFixture, name: str, fn: Callable[[int], object], n: int) -> None:
    benchmark.pedantic(_run_all, args=(fn, n), rounds=rounds(ROUNDS), iterations=1, warmup_rounds=1)
    mean = benchmark.stats.stats.mean
    _means[name] = mean
    benchmark.extra_info.update(
        {"samples_per_round": n, "samples_per_s": round(n / mean, 1), "image_size": "720x1280", "threads": 1}
    )


@pytest.mark.smoke
def test_pipeline_hgbench(benchmark: BenchmarkFixture, dataset: MPIIDataset) -> None:
    """decode_jpeg + one cv2.warpAffine + vectorised heatmaps + normalisation (`MPIIDataset.__getitem__`)."""
    _measure(benchmark, "hgbench", dataset.__getitem__, len(dataset))


@pytest.mark.smoke
def test_pipeline_pil_baseline(benchmark: BenchmarkFixture, dataset: MPIIDataset) -> None:
    """PIL open/convert, rotate, crop, resize, per-joint heatmaps; then the >= 2x assertion."""
    augs = [
        sample_augmentation(np.random.default_rng([dataset.seed, 0, dataset.position(i)])) for i in range(len(dataset))
    ]
    _measure(benchmark, "pil", lambda i: pil_sample(dataset, i, augs[i]), len(dataset))
    if "hgbench" not in _means:
        pytest.skip("the hgbench pipeline was not measured in this session; no ratio to check")
    speedup = _means["pil"] / _means["hgbench"]
    benchmark.extra_info["speedup_vs_pil"] = round(speedup, 2)
    print(
        f"\nsamples/s per worker on 720x1280 JPEGs: hgbench {len(dataset) / _means['hgbench']:.1f}, "
        f"PIL baseline {len(dataset) / _means['pil']:.1f} ({speedup:.2f}x)"
    )
    if not SMOKE:  # CI (smoke) shows the figure but never fails on a time
        assert speedup >= MIN_SPEEDUP, f"pipeline only {speedup:.2f}x the PIL baseline (want >= {MIN_SPEEDUP}x)"


# --- decode="device": what is left to a worker, and the batched decode + crop on the device ------------------------


@pytest.fixture(scope="module")
def device_dataset(dataset: MPIIDataset) -> MPIIDataset:
    return MPIIDataset(dataset.root, "train", input_res=INPUT_RES, augment=True, decode="device")


def _bench_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.smoke
def test_pipeline_device_decode_worker_side(benchmark: BenchmarkFixture, device_dataset: MPIIDataset) -> None:
    """With decode="device" a worker only reads the bytes, draws the augmentation and the targets."""
    _measure(benchmark, "device-worker", device_dataset.__getitem__, len(device_dataset))
    if "hgbench" in _means:
        benchmark.extra_info["lighter_than_full_sample"] = round(_means["hgbench"] / _means["device-worker"], 1)


@pytest.mark.smoke
@pytest.mark.parametrize("batch_size", [6, 32])
def test_pipeline_device_decode_batch(
    benchmark: BenchmarkFixture, device_dataset: MPIIDataset, batch_size: int
) -> None:
    """One batch decoded, cropped and normalised on the device (CUDA when present; here the CPU, one thread)."""
    dev = _bench_device()
    samples = [device_dataset[i % len(device_dataset)] for i in range(batch_size)]
    batch = collate(samples)
    if dev.type == "cuda":
        batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
        batch["jpeg"] = [j.pin_memory() for j in batch["jpeg"]]
    prep = DeviceDecodeLoader([], device_dataset, dev, prefetch=False)

    def one_batch() -> None:
        out = prep.prepare(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        del out

    benchmark.pedantic(one_batch, rounds=rounds(ROUNDS * 2), iterations=1, warmup_rounds=1)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        {
            "device": str(dev),
            "batch_size": batch_size,
            "images_per_s": round(batch_size / mean, 1),
            "image_size": "720x1280",
            "input_res": INPUT_RES,
        }
    )
    print(f"\ndecode='device' on {dev}: {batch_size / mean:.1f} images/s at batch {batch_size}")


def test_baseline_matches_pipeline(dataset: MPIIDataset) -> None:
    """The baseline does the same work: same targets and weights, and nearly the same pixels."""
    for i in range(min(3, len(dataset))):
        aug = sample_augmentation(np.random.default_rng([dataset.seed, 0, dataset.position(i)]))
        ours, theirs = dataset[i], pil_sample(dataset, i, aug)
        assert torch.equal(ours["target_weight"], theirs["target_weight"])
        assert torch.allclose(ours["target"], theirs["target"], atol=1e-6)
        # Different resamplers and a rounded crop box: compare only the average, not pixel by pixel.
        assert (ours["image"] - theirs["image"]).abs().mean() < 0.08


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([str(Path(__file__)), "--benchmark-only", "-q"]))
