"""`decode="device"`: batched decode and `grid_sample` crops give the worker path's samples (on the CPU here)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.damage import garble_jpeg

from hgbench.cli import main
from hgbench.data.device_decode import DeviceDecodeLoader, collate, normalise_batch, warp_batch
from hgbench.data.jpeg import decode_jpegs, read_image_bytes
from hgbench.data.loader import make_loader
from hgbench.data.mpii import MPIIDataset
from hgbench.data.transforms import MPII_MEAN, crop_matrix, warp_image
from hgbench.errors import DataError
from hgbench.run.plan import resolve_config
from hgbench.run.results import read_record
from hgbench.run.runner import run
from hgbench.spec.config import RunConfig


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like test image: smooth gradients, a few hard-edged blocks and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([127 + 100 * np.sin(xx / 23 + c) * np.cos(yy / 31 - c) for c in range(3)], axis=-1)
    for _ in range(6):
        y0, x0 = rng.integers(0, h - 10), rng.integers(0, w - 10)
        img[y0 : y0 + rng.integers(5, h // 3), x0 : x0 + rng.integers(5, w // 3)] = rng.integers(0, 256, 3)
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def test_warp_batch_matches_cv2_warp_for_images_of_different_sizes() -> None:
    sizes = [(240, 320), (360, 640), (97, 131)]
    pictures = [_picture(h, w, i) for i, (h, w) in enumerate(sizes)]
    # Rotated, flipped, scaled; the last crop runs well past the image's edge (zero fill).
    params = [((160.0, 120.0), 0.9, 25.0, False), ((300.0, 200.0), 1.4, -40.0, True), ((120.0, 10.0), 0.7, 0.0, False)]
    res = 64
    matrices = torch.from_numpy(np.stack([crop_matrix(c, s, r, res, flip=f) for c, s, r, f in params]))
    images = [torch.from_numpy(p).permute(2, 0, 1) for p in pictures]
    got = warp_batch(images, matrices, res)
    assert got.shape == (3, 3, res, res)
    assert got.dtype == torch.float32
    for i, p in enumerate(pictures):
        want = warp_image(p, matrices[i].numpy(), res).astype(np.float32)
        diff = np.abs(got[i].permute(1, 2, 0).numpy() - want)
        # OpenCV rounds sample positions to 1/32 px and its output to integers; nothing else may differ.
        assert diff.mean() < 0.6, f"crop {i}: mean |diff| {diff.mean():.3f}"
        assert np.percentile(diff, 99.5) < 6, f"crop {i}: 99.5th percentile {np.percentile(diff, 99.5):.2f}"
    assert (got[2, :, :4] == 0).all()  # rows above the image's top edge are zero, as OpenCV's constant border


def test_normalise_batch_is_to_input_tensor() -> None:
    from hgbench.data.transforms import to_input_tensor

    crop = _picture(32, 32, 3)
    gain = (1.2, 0.8, 1.0)
    want = to_input_tensor(crop, gain)
    got = normalise_batch(torch.from_numpy(crop).permute(2, 0, 1)[None].float(), torch.tensor([gain]))[0]
    torch.testing.assert_close(got, want)
    assert torch.allclose(
        normalise_batch(torch.zeros(1, 3, 2, 2), torch.ones(1, 3))[0, :, 0, 0], -torch.tensor(MPII_MEAN)
    )


def test_collate_keeps_encoded_bytes_and_names_as_lists() -> None:
    samples = [
        {"jpeg": torch.zeros(n, dtype=torch.uint8), "image_name": f"{n}.jpg", "x": torch.ones(2)} for n in (3, 5)
    ]
    batch = collate(samples)
    assert [j.numel() for j in batch["jpeg"]] == [3, 5]
    assert batch["image_name"] == ["3.jpg", "5.jpg"]
    assert batch["x"].shape == (2, 2)


@pytest.mark.parametrize("augment", [True, False])
def test_device_batches_equal_worker_batches(synthetic_root: Path, augment: bool) -> None:
    common = {"input_res": 128, "augment": augment, "seed": 3}
    workers = MPIIDataset(synthetic_root, "train", **common)
    device = MPIIDataset(synthetic_root, "train", decode="device", **common)
    la = make_loader(workers, 8, shuffle=True, workers=0, pin_memory=False, drop_last=True, seed=1)
    lb = make_loader(device, 8, shuffle=True, workers=0, pin_memory=False, drop_last=True, seed=1, device="cpu")
    assert isinstance(lb, DeviceDecodeLoader)
    assert len(lb) == len(la)
    for epoch in (1, 2):
        la.set_epoch(epoch)
        lb.set_epoch(epoch)
        for a, b in zip(la, lb, strict=True):
            assert set(b) == set(a) | {"matrix", "image_name"}
            for key in a:
                if key != "image":
                    torch.testing.assert_close(b[key], a[key], msg=key)
            levels = (b["image"] - a["image"]).abs() * 255  # the worker path rounds its crop to integers
            assert levels.max() < 1.0
            assert levels.mean() < 0.4


def test_device_decoding_on_real_mpii_images(mpii_sample: Path) -> None:
    a = MPIIDataset(mpii_sample, "val", input_res=256)
    b = MPIIDataset(mpii_sample, "val", input_res=256, decode="device")
    batch = next(
        iter(make_loader(b, len(b), shuffle=False, workers=0, pin_memory=False, drop_last=False, device="cpu"))
    )
    want = torch.stack([a[i]["image"] for i in range(len(a))])
    levels = (batch["image"] - want).abs() * 255
    assert levels.max() < 1.0


def test_decode_jpegs_names_the_bad_one(synthetic_root: Path) -> None:
    names = sorted(p.name for p in (synthetic_root / "images").iterdir())[:3]
    data = [read_image_bytes(synthetic_root / "images" / n) for n in names]
    broken = data[1].clone()
    broken[2:-2] = 0  # intact markers, garbage inside
    out = decode_jpegs([data[0], broken, data[2], torch.zeros(0, dtype=torch.uint8)], torch.device("cpu"))
    assert isinstance(out[0], torch.Tensor)
    assert out[0].shape[0] == 3
    assert isinstance(out[1], str)
    assert out[1].startswith("the JPEG decoder says:")
    assert isinstance(out[2], torch.Tensor)
    assert isinstance(out[3], str)
    assert "\n" not in out[3]


@pytest.fixture
def garbled(synthetic_root: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the synthetic data with one train image whose inside is zeroed (passes the cheap check)."""
    root = Path(shutil.copytree(synthetic_root, tmp_path / "copy"))
    entries = json.loads((root / "mpii_annotations.json").read_text())
    name = next(e["img_paths"] for e in entries if not e["isValidation"])
    garble_jpeg(root / "images" / name)
    return root, name


def test_corrupt_image_on_the_device_path_is_one_line_or_blanked(garbled: tuple[Path, str]) -> None:
    root, name = garbled
    strict = MPIIDataset(root, "train", input_res=64, decode="device")
    loader = make_loader(strict, 16, shuffle=False, workers=1, pin_memory=False, drop_last=False, device="cpu")
    with pytest.raises(DataError, match=f"^corrupt image .*{name}: .*--skip-bad-images") as info:
        list(loader)
    assert "\n" not in str(info.value)

    skipping = MPIIDataset(root, "train", input_res=64, decode="device", skip_bad_images=True)
    batch = next(
        iter(make_loader(skipping, 16, shuffle=False, workers=0, pin_memory=False, drop_last=False, device="cpu"))
    )
    hit = torch.tensor([p.image == name for p in skipping.people])
    assert hit.any()
    assert torch.equal(batch["bad"], hit)
    assert batch["target_weight"][hit].sum() == 0
    assert batch["target_weight"][~hit].sum() > 0
    blank = -torch.tensor(MPII_MEAN).view(3, 1, 1).expand(3, 64, 64)
    for i in torch.nonzero(hit).flatten().tolist():
        torch.testing.assert_close(batch["image"][i], blank)
    assert skipping.collect_bad(batch) == [f"images/{name}"]


def test_a_run_with_device_decoding(tiny: RunConfig) -> None:
    outcome = run(replace(tiny, workers=1, decode="device"), progress=False)
    assert outcome.status == "finished"
    record = json.loads(outcome.record_path.read_text())
    assert record["config"]["decode"] == "device"
    epoch = record["results"]["epochs"][0]
    assert epoch["images"] == 8
    assert 0 <= epoch["data_wait_s"] <= epoch["wall_s"]
    assert epoch["device_idle_s"] is None  # no device clock on a CPU: null, not zero
    assert 0 <= record["results"]["pckh"]["Mean"] <= 100


def test_resolve_config_decode() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_config(RunConfig(), cpu).decode == "workers"
    assert resolve_config(RunConfig(fast=True), cpu).decode == "workers"  # main-process decode only slows a CPU
    assert resolve_config(RunConfig(decode="device"), cpu).decode == "device"  # explicit wins
    assert resolve_config(RunConfig(fast=True, decode="workers"), cuda).decode == "workers"
    assert resolve_config(RunConfig(), cuda).decode == "workers"  # the study's pipeline unless asked


def test_fast_on_cuda_decodes_on_the_device(cuda_device: torch.device) -> None:
    assert resolve_config(RunConfig(fast=True), cuda_device).decode == "device"


def test_records_written_before_decode_existed_read_as_workers(tiny: RunConfig) -> None:
    path = run(replace(tiny, limit_train=4, limit_val=4, flip_test=False), progress=False).record_path
    record = json.loads(path.read_text())
    del record["config"]["decode"]
    path.write_text(json.dumps(record))
    loaded, reason = read_record(path)
    assert reason is None
    assert loaded["config"]["decode"] == "workers"


def test_decode_flag_on_the_command_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--case", "hg1", "--decode", "gpu"])
    assert info.value.code == 2
    assert "argument --decode: invalid choice: 'gpu'" in capsys.readouterr().err


def test_device_loader_on_cuda_matches_the_cpu(cuda_device: torch.device, synthetic_root: Path) -> None:
    """nvjpeg and the side-stream prefetch give the CPU path's batches."""
    ds = MPIIDataset(synthetic_root, "train", input_res=128, decode="device")
    on_cpu = make_loader(ds, 4, shuffle=False, workers=1, pin_memory=False, drop_last=True, device="cpu")
    on_gpu = make_loader(ds, 4, shuffle=False, workers=1, pin_memory=True, drop_last=True, device=cuda_device)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert b["image"].device.type == "cuda"
        assert b["target"].device.type == "cuda"
        levels = (b["image"].cpu() - a["image"]).abs() * 255
        # nvjpeg and libjpeg differ in IDCT and chroma upsampling by a level or two; a wrong crop costs tens.
        assert levels.mean() < 3.0
        torch.testing.assert_close(b["target"].cpu(), a["target"])
