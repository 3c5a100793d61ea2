"""The synthetic MPII-format dataset: format, determinism, the cache, `hgbench synth`, and every bad-input case."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.damage import garble_jpeg, truncate_jpeg

from hgbench.cli import main
from hgbench.data.annotations import load_annotations
from hgbench.data.jpeg import decode_jpeg_file
from hgbench.data.loader import make_loader
from hgbench.data.mpii import MPIIDataset
from hgbench.data.synthetic import DEFAULT_IMAGE_SIZE, GENERATOR_VERSION, default_dataset, generate
from hgbench.errors import DataError

MPII_FIELDS = [
    "dataset",
    "isValidation",
    "img_paths",
    "img_width",
    "img_height",
    "objpos",
    "joint_self",
    "scale_provided",
    "joint_others",
    "scale_provided_other",
    "objpos_other",
    "annolist_index",
    "people_index",
    "numOtherPeople",
]
MATLAB_EMPTY = {"_ArrayType_": "double", "_ArraySize_": [0, 0], "_ArrayData_": None}


def _entries(root: Path) -> list[dict]:
    return json.loads((root / "mpii_annotations.json").read_text())


@pytest.fixture
def damaged(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the shared synthetic dataset that a test may break."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "copy"))


# --- format ----------------------------------------------------------------------------------------------------


def test_annotation_file_has_the_real_fields_and_layout(synthetic_root: Path) -> None:
    entries = _entries(synthetic_root)
    assert len(entries) == 24
    for e in entries:
        assert list(e) == MPII_FIELDS
        assert e["isValidation"] in (0.0, 1.0)
        assert np.asarray(e["joint_self"]).shape == (16, 3)
        n = int(e["numOtherPeople"])
        if n == 0:
            assert e["joint_others"] == e["scale_provided_other"] == e["objpos_other"] == MATLAB_EMPTY
        elif n == 1:
            assert np.asarray(e["joint_others"]).shape == (16, 3)
            assert isinstance(e["scale_provided_other"], float)
        else:
            assert np.asarray(e["joint_others"]).shape == (n, 16, 3)
            assert len(e["scale_provided_other"]) == n
    joints = np.array([e["joint_self"] for e in entries])
    missing = (joints[..., 0] == 0) & (joints[..., 1] == 0)
    assert missing.any()  # joints outside the image / unannotated
    assert ((joints[..., 2] == 0) & ~missing).any()  # occluded: coordinates present, visible 0
    assert (joints[missing, 2] == 0).all()
    assert any(e["numOtherPeople"] > 0 for e in entries)  # distractor figures recorded as other people
    marker = json.loads((synthetic_root / "dataset.json").read_text())
    assert marker["name"] == "synthetic"
    assert marker["generator_version"] == GENERATOR_VERSION
    assert (marker["people"], marker["train"], marker["val"]) == (24, 16, 8)


def test_ground_truth_holds_the_val_people_in_order(synthetic_root: Path) -> None:
    val = MPIIDataset(synthetic_root, "val")
    assert val.name == "synthetic"
    assert len(val) == 8
    gt = val.ground_truth()
    assert len(gt) == 8
    joints = np.stack([p.joints[:, :2] for p in val.people])
    assert np.array_equal(gt.missing, (joints[..., 0] == 0) & (joints[..., 1] == 0))
    assert np.allclose(gt.joints[~gt.missing], joints[~gt.missing])
    # Head boxes surround the head: the head-top and upper neck lie in (or on the edge of) the box.
    for k in range(8):
        (x0, y0), (x1, y1) = gt.headboxes[k]
        assert x1 > x0
        assert y1 > y0
        for j in (8, 9):
            if not gt.missing[k, j]:
                x, y = gt.joints[k, j]
                assert x0 - 1 <= x <= x1 + 1
                assert y0 - 1 <= y <= y1 + 1
    assert (gt.head_size > 0).all()
    assert len(val.ground_truth().subset([1, 2])) == 2
    limited = MPIIDataset(synthetic_root, "val", limit=3)
    assert np.array_equal(limited.ground_truth().joints, gt.joints[:3])


def test_scale_and_objpos_follow_mpii(synthetic_root: Path) -> None:
    for p in MPIIDataset(synthetic_root, "train").people:
        ann = p.joints[p.annotated, :2]
        extent = np.ptp(ann, axis=0).max()
        assert extent <= 200 * p.scale * 1.1  # scale = standing height / 200
        assert 0 <= p.center[0] < p.width
        assert 0 <= p.center[1] < p.height


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", people=6, seed=5, image_size=(96, 80))
    b = generate(tmp_path / "b", people=6, seed=5, image_size=(96, 80))
    c = generate(tmp_path / "c", people=6, seed=6, image_size=(96, 80))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "mpii_annotations.json").read_bytes() != (c / "mpii_annotations.json").read_bytes()
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary directory left behind


def test_generate_refuses_a_non_empty_directory(synthetic_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not empty"):
        generate(synthetic_root, people=4)
    (tmp_path / "empty").mkdir()
    assert (generate(tmp_path / "empty", people=4, image_size=(64, 64)) / "dataset.json").is_file()
    with pytest.raises(ValueError, match="at least 2 people"):
        generate(tmp_path / "one", people=1)


def test_default_dataset_is_cached_and_safe_under_a_race(tmp_path: Path) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            results.append(default_dataset(people=4, seed=1, image_size=(64, 64), cache_dir=tmp_path))
        except BaseException as exc:  # collected and re-raised by the test body
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0] == results[1] == tmp_path / f"synthetic-4-1-64x64-v{GENERATOR_VERSION}"
    stamp = (results[0] / "images").stat().st_mtime_ns
    assert default_dataset(people=4, seed=1, image_size=(64, 64), cache_dir=tmp_path) == results[0]
    assert (results[0] / "images").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert len(MPIIDataset(results[0], "train")) + len(MPIIDataset(results[0], "val")) == 4


def test_default_dataset_uses_the_cache_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HGBENCH_CACHE_DIR", str(tmp_path))
    assert default_dataset(people=3, image_size=(48, 48)).parent == tmp_path


# --- hgbench synth ---------------------------------------------------------------------------------------------


def test_synth_command_writes_a_readable_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--people", "20", "--seed", "1"]) == 0
    assert "20 people" in capsys.readouterr().out
    train, val = MPIIDataset(out, "train"), MPIIDataset(out, "val")
    assert len(train) + len(val) == 20
    assert train[0]["image"].shape == (3, 256, 256)


def test_synth_writes_frames_of_mpiis_size_to_judge_a_decode_path_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--image-size mpii`: 1280x720 JPEGs, about as many bytes as MPII's (tens of KB at 320x240 would flatter a
    decoder), which both decode paths read; the default stays small."""
    out = tmp_path / "hd"
    assert main(["synth", "--out", str(out), "--people", "3", "--image-size", "mpii"]) == 0
    assert "of 1280x720" in capsys.readouterr().out
    jpegs = sorted((out / "images").glob("*.jpg"))
    for path in jpegs:
        assert decode_jpeg_file(path).shape == (720, 1280, 3)
    assert sum(p.stat().st_size for p in jpegs) / len(jpegs) > 100_000  # MPII's frames average some 150-250 KB
    assert MPIIDataset(out, "train")[0]["image"].shape == (3, 256, 256)  # the worker path crops it
    assert MPIIDataset(out, "train", decode="device")[0]["jpeg"].numel() > 100_000  # the device path gets the bytes
    assert json.loads((out / "dataset.json").read_text())["image_size"] == [1280, 720]
    assert DEFAULT_IMAGE_SIZE == (320, 240)


def test_synth_command_fails_in_one_line_on_an_unwritable_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["synth", "--out", str(blocker / "sub"), "--people", "20"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "a-file" in err


# --- bad input -------------------------------------------------------------------------------------------------


def test_missing_data_and_images_directories(tmp_path: Path, damaged: Path) -> None:
    with pytest.raises(DataError, match=f"data directory not found: {tmp_path / 'nowhere'}"):
        MPIIDataset(tmp_path / "nowhere", "train")
    shutil.rmtree(damaged / "images")
    with pytest.raises(DataError, match="images directory not found"):
        MPIIDataset(damaged, "train")


def test_missing_image_is_named(damaged: Path) -> None:
    name = _entries(damaged)[0]["img_paths"]
    (damaged / "images" / name).unlink()
    split = "val" if _entries(damaged)[0]["isValidation"] else "train"
    with pytest.raises(DataError, match=f"image not found: .*{name}"):
        MPIIDataset(damaged, split)


def _train_image(root: Path) -> tuple[str, int]:
    """A train image and how many train people it holds."""
    names = [e["img_paths"] for e in _entries(root) if not e["isValidation"]]
    return names[0], names.count(names[0])


def test_truncated_jpeg_is_named_or_skipped_and_counted(damaged: Path) -> None:
    name, people_in_it = _train_image(damaged)
    truncate_jpeg(damaged / "images" / name)
    with pytest.raises(DataError, match=f"corrupt image .*{name}: .*--skip-bad-images") as info:
        MPIIDataset(damaged, "train")
    assert "\n" not in str(info.value)
    ds = MPIIDataset(damaged, "train", skip_bad_images=True)
    assert ds.bad_images == [f"images/{name}"]
    assert len(ds) == 16 - people_in_it
    assert all(p.image != name for p in ds.people)


def test_corruption_found_only_when_decoding(damaged: Path) -> None:
    """A file with intact JPEG markers but garbage inside passes the cheap check and fails at decode time."""
    name, _ = _train_image(damaged)
    garble_jpeg(damaged / "images" / name)
    ds = MPIIDataset(damaged, "train")
    i = next(k for k, p in enumerate(ds.people) if p.image == name)
    with pytest.raises(DataError, match=f"corrupt image .*{name}"):
        ds[i]
    # In a worker: still one line.
    loader = make_loader(ds, 16, shuffle=False, workers=1, pin_memory=False, drop_last=False)
    with pytest.raises(DataError, match=f"^corrupt image .*{name}") as info:
        list(loader)
    assert "\n" not in str(info.value)
    # Skipping: the sample comes back blank with no loss weight, and the main process records the file.
    skipping = MPIIDataset(damaged, "train", skip_bad_images=True)
    assert skipping.bad_images == []
    batch = next(iter(make_loader(skipping, 16, shuffle=False, workers=1, pin_memory=False, drop_last=False)))
    assert batch["bad"][i]
    assert batch["target_weight"][i].sum() == 0
    assert batch["bad"].sum() == sum(p.image == name for p in skipping.people)
    assert skipping.collect_bad(batch) == [f"images/{name}"]
    assert skipping.bad_images == [f"images/{name}"]


def test_annotation_file_that_is_not_json(damaged: Path) -> None:
    (damaged / "mpii_annotations.json").write_text("{not json")
    with pytest.raises(DataError, match="mpii_annotations.json is not valid"):
        MPIIDataset(damaged, "train")
    (damaged / "mpii_annotations.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a JSON list"):
        MPIIDataset(damaged, "train")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("joint_self", "oops", "field 'joint_self' must be 16"),
        ("joint_self", [[1, 2, 1]] * 15, "field 'joint_self' must be 16"),
        ("scale_provided", "2.0", "field 'scale_provided' must be a finite number"),
        ("scale_provided", -1.0, "field 'scale_provided' must be positive"),
        ("objpos", None, "field 'objpos' must be"),
        ("isValidation", 0.5, "field 'isValidation' must be 0 or 1"),
        ("img_paths", 7, "field 'img_paths'"),
    ],
)
def test_wrong_field_names_entry_and_field(damaged: Path, field: str, value: object, message: str) -> None:
    entries = _entries(damaged)
    entries[3][field] = value
    (damaged / "mpii_annotations.json").write_text(json.dumps(entries))
    with pytest.raises(DataError, match=rf"entry 3 \(img_paths=.*\): {message}") as info:
        MPIIDataset(damaged, "train")
    assert "\n" not in str(info.value)


def test_missing_field_is_named(damaged: Path) -> None:
    entries = _entries(damaged)
    del entries[5]["objpos"]
    (damaged / "mpii_annotations.json").write_text(json.dumps(entries))
    with pytest.raises(DataError, match=r"entry 5 .*field 'objpos' is missing"):
        load_annotations(damaged / "mpii_annotations.json")


def test_zero_people(damaged: Path) -> None:
    with pytest.raises(DataError, match="no train people"):
        MPIIDataset(damaged, "train", limit=0)
    entries = [dict(e, isValidation=1.0) for e in _entries(damaged)]
    (damaged / "mpii_annotations.json").write_text(json.dumps(entries))
    with pytest.raises(DataError, match="no train people"):
        MPIIDataset(damaged, "train")


def test_gzipped_annotation_file_is_read(damaged: Path) -> None:
    plain = damaged / "mpii_annotations.json"
    (damaged / "mpii_annotations.json.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    assert len(MPIIDataset(damaged, "train")) == 16


# --- learnability ----------------------------------------------------------------------------------------------


STEPS = 150


def _masked_mse(outputs: list[torch.Tensor], batch: dict) -> torch.Tensor:
    """protocol.md's loss: per-sample, per-joint masked MSE summed over stacks."""
    return sum((((o - batch["target"]) ** 2).mean(dim=(2, 3)) * batch["target_weight"]).mean() for o in outputs)


def _hit_rate(heatmaps: torch.Tensor, batch: dict) -> float:
    """Share of weighted joints whose predicted argmax lies within 1.5 heatmap pixels of the target's."""
    res = heatmaps.shape[-1]
    pred, true = heatmaps.flatten(2).argmax(-1), batch["target"].flatten(2).argmax(-1)
    dist = ((pred % res - true % res) ** 2 + (pred // res - true // res) ** 2).float().sqrt()
    weighted = batch["target_weight"] > 0
    return float(((dist <= 1.5) & weighted).sum() / weighted.sum())


@pytest.mark.slow
def test_a_tiny_hourglass_learns_the_synthetic_data(tmp_path: Path) -> None:
    """hg1 with 32 features at 64x64 on the CPU, 150 steps of batch 8 (20-60 s depending on the machine's load).

    The masked MSE must fall well below its start, and on held-out people the network must beat predicting all
    zeros and put several times more joints near their true place than before training (chance is ~4%).
    """
    from hgbench.models import build_model
    from hgbench.spec.cases import get_spec

    torch.manual_seed(0)
    root = generate(tmp_path / "learn", people=120, seed=3, val_fraction=0.2)
    train = MPIIDataset(root, "train", input_res=64)
    val_ds = MPIIDataset(root, "val", input_res=64)
    val_batch = next(iter(make_loader(val_ds, 64, shuffle=False, workers=0, pin_memory=False, drop_last=False)))
    model = build_model(dataclasses.replace(get_spec("hg1"), num_feats=32))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(val_batch["image"])
        model.train()
        return _masked_mse(out, val_batch).item(), _hit_rate(out[-1], val_batch)

    _, hits_before = evaluate()
    loader = make_loader(train, 8, shuffle=True, workers=0, pin_memory=False, drop_last=True, seed=0)
    losses: list[float] = []
    epoch = 0
    while len(losses) < STEPS:
        loader.set_epoch(epoch)
        for batch in loader:
            loss = _masked_mse(model(batch["image"]), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == STEPS:
                break
        epoch += 1
    val_loss, hits_after = evaluate()
    zero_loss = _masked_mse([torch.zeros_like(val_batch["target"])], val_batch).item()
    assert np.mean(losses[-20:]) < 0.35 * np.mean(losses[:5])
    assert val_loss < zero_loss
    assert hits_after > max(0.12, 3 * hits_before)
