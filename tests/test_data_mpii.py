"""The MPII loader on the real files (skipped when ../shared/data/mpii is absent) and the DataLoader wrapper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from hgbench.data.annotations import (
    bundled_annotations_path,
    find_annotation_file,
    load_annotations,
    match_ground_truth,
)
from hgbench.data.groundtruth import bundled_ground_truth_path, load_ground_truth
from hgbench.data.loader import EpochShuffleSampler, make_loader, unwrap_worker_message
from hgbench.data.mpii import MPIIDataset
from hgbench.data.transforms import adjust_center_scale, apply_affine, heatmap_matrix, invert
from hgbench.errors import DataError
from hgbench.spec.geometry import heatmap_res
from hgbench.spec.skeleton import FLIP_INDEX, HEAD_TOP

# --- the full annotation file -----------------------------------------------------------------------------------


def test_bundled_annotations_have_the_tompson_split() -> None:
    people = load_annotations(bundled_annotations_path())
    assert len(people) == 25_204
    assert sum(not p.is_val for p in people) == 22_246
    assert sum(p.is_val for p in people) == 2_958
    joints = np.stack([p.joints for p in people])
    missing = (joints[..., 0] == 0) & (joints[..., 1] == 0)
    # The counts shared/data/mpii/README.md states.
    assert missing.sum() == 27_001
    assert ((joints[..., 2] == 0) & ~missing).sum() == 86_703
    assert (((joints[..., 0] < 0) | (joints[..., 1] < 0)) & ~missing).sum() == 366


@pytest.mark.mpii
def test_val_order_matches_the_ground_truth_file(shared_mpii: Path) -> None:
    assert (shared_mpii / "mpii_annotations.json.gz").read_bytes() == bundled_annotations_path().read_bytes()
    val = [p for p in load_annotations(bundled_annotations_path()) if p.is_val]
    mat = loadmat(str(shared_mpii / "detections_our_format.mat"))
    pos = np.transpose(mat["pos_gt_src"], (2, 0, 1))  # [2958, 16, 2]
    jnt_missing = np.transpose(mat["jnt_missing"], (1, 0)).astype(bool)
    joints = np.stack([p.joints[:, :2] for p in val])
    missing = np.stack([~p.annotated for p in val])
    assert joints.shape == pos.shape == (2_958, 16, 2)
    assert np.array_equal(missing, jnt_missing)  # missing (x = y = 0) <=> jnt_missing
    # Same numbers (no 0/1-based shift) except 13 annotated joints whose ground truth has a coordinate zeroed.
    differ = (np.abs(joints - pos).max(axis=-1) > 0.01) & ~missing
    assert differ.sum() == 13
    assert np.all(np.any(pos[differ] == 0, axis=-1))
    assert np.abs(joints - pos)[~missing & ~differ].max() < 0.001
    # The loader's matcher accepts that file as it is, and notices people out of order.
    gt = load_ground_truth(shared_mpii / "detections_our_format.mat")
    assert np.array_equal(match_ground_truth(val, gt, gt_path=Path("gt"), ann_path=Path("ann")), np.arange(2_958))
    with pytest.raises(DataError, match="val person 0 .* does not match"):
        match_ground_truth(val[1:] + val[:1], gt, gt_path=Path("gt"), ann_path=Path("ann"))
    assert match_ground_truth(val[10:20:3], gt, gt_path=Path("gt"), ann_path=Path("ann")).tolist() == [10, 13, 16, 19]


def test_find_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data directory not found"):
        find_annotation_file(tmp_path / "nope")
    with pytest.raises(DataError, match="not an MPII data directory"):
        find_annotation_file(tmp_path)
    (tmp_path / "images").mkdir()
    assert find_annotation_file(tmp_path) == bundled_annotations_path()  # images only: the bundled annotations
    (tmp_path / "mpii_annotations.json.gz").write_bytes(b"")
    assert find_annotation_file(tmp_path) == tmp_path / "mpii_annotations.json.gz"


# --- the 7-image sample -----------------------------------------------------------------------------------------


@pytest.mark.mpii
def test_sample_directory_loads_both_splits(mpii_sample: Path) -> None:
    val = MPIIDataset(mpii_sample, "val")
    train = MPIIDataset(mpii_sample, "train")
    assert val.name == "mpii"
    assert [p.image for p in val.people] == [
        "005808361.jpg",
        "052475643.jpg",
        "051423444.jpg",
        "004645041.jpg",
        "060754485.jpg",
    ]
    assert [p.image for p in train.people] == ["000033016.jpg", "000316731.jpg"]
    assert not val.augment
    assert train.augment
    batch = torch.utils.data.default_collate([val[i] for i in range(len(val))])  # includes the 854x480 image
    assert batch["image"].shape == (5, 3, 256, 256)
    assert batch["target"].shape == (5, 16, 64, 64)
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]
    assert val.fingerprint() != train.fingerprint()


@pytest.mark.mpii
def test_sample_ground_truth_is_the_first_five_val_people(mpii_sample: Path) -> None:
    val = MPIIDataset(mpii_sample, "val")
    gt = val.ground_truth()
    full = load_ground_truth(bundled_ground_truth_path())
    assert len(gt) == 5
    assert np.array_equal(gt.joints, full.joints[:5])
    assert np.array_equal(gt.headboxes, full.headboxes[:5])
    limited = MPIIDataset(mpii_sample, "val", limit=2).ground_truth()
    assert np.array_equal(limited.joints, full.joints[:2])


def _expected_heatmap_points(sample: dict, joints: np.ndarray, input_res: int = 256) -> np.ndarray:
    """Where the protocol puts each target channel's peak, from the sample's own metadata."""
    flip = bool(sample["flip"])
    center, scale, rotation = sample["center"].double().numpy(), float(sample["scale"]), float(sample["rotation"])
    m = heatmap_matrix(center, scale, rotation, input_res, heatmap_res(input_res), flip=flip)
    src = joints[list(FLIP_INDEX)] if flip else joints
    return apply_affine(src[:, :2], m)


@pytest.mark.mpii
@pytest.mark.parametrize("augment", [False, True])
def test_heatmap_peaks_sit_on_the_transformed_joints(mpii_sample: Path, augment: bool) -> None:
    for split in ("train", "val"):
        ds = MPIIDataset(mpii_sample, split, augment=augment)
        for i in range(len(ds)):
            s = ds[i]
            rec = ds.people[i]
            if not augment:
                c, sc = adjust_center_scale(rec.center, rec.scale)
                assert np.allclose(s["center"].numpy(), c)
                assert float(s["scale"]) == pytest.approx(sc)
            expect = _expected_heatmap_points(s, rec.joints)
            annotated = rec.annotated[list(FLIP_INDEX)] if bool(s["flip"]) else rec.annotated
            for j in range(16):
                heat = s["target"][j].numpy()
                if heat.max() == 0:
                    assert s["target_weight"][j] == 0
                    continue
                assert annotated[j]
                y, x = np.unravel_index(np.argmax(heat), heat.shape)
                assert (x, y) == tuple(int(v) for v in np.floor(expect[j] + 0.5))
                assert heat.max() == pytest.approx(1.0)


@pytest.mark.mpii
def test_missing_occluded_and_negative_joints_of_the_sample(mpii_sample: Path) -> None:
    train = MPIIDataset(mpii_sample, "train", augment=False)
    s = train[1]  # 000316731: ankles missing, joints 7 and 13 occluded, head-top at y = -0.381
    assert train.people[1].image == "000316731.jpg"
    assert train.people[1].joints[HEAD_TOP, 1] == pytest.approx(-0.381)
    assert s["target"][HEAD_TOP].max() == pytest.approx(1.0)  # drawn, unlike the reference code
    assert s["target_weight"][HEAD_TOP] == 1
    for j in (0, 5):  # missing: not drawn, no weight
        assert s["target"][j].max() == 0
        assert s["target_weight"][j] == 0
    for j in (7, 13):  # occluded: drawn (heatmap accuracy counts them) but no loss weight
        assert s["target"][j].max() == pytest.approx(1.0)
        assert s["target_weight"][j] == 0


@pytest.mark.mpii
def test_target_argmax_maps_back_to_the_joints(mpii_sample: Path) -> None:
    """The evaluator's inverse (`invert(heatmap_matrix)`) takes target peaks back to the annotated joints."""
    ds = MPIIDataset(mpii_sample, "val", augment=True)  # augmented, to cover rotation and flip
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds[i]
            flip = bool(s["flip"])
            c, sc, rot = s["center"].double().numpy(), float(s["scale"]), float(s["rotation"])
            m = heatmap_matrix(c, sc, rot, 256, 64, flip=flip)
            joints = ds.people[i].joints[list(FLIP_INDEX)] if flip else ds.people[i].joints
            # Exact round trip of the coordinates (float32 metadata as the evaluator receives it).
            back = apply_affine(apply_affine(joints[:, :2], m), invert(m))
            assert np.abs(back - joints[:, :2]).max() < 0.5
            # Target argmax -> image pixels: off by at most half a heatmap pixel in x and y.
            px_per_cell = 200 * sc / 64
            for j in np.flatnonzero(s["target"].flatten(1).amax(1).numpy() > 0):
                y, x = np.unravel_index(int(s["target"][j].argmax()), (64, 64))
                err = np.abs(apply_affine(np.array([x, y], dtype=np.float64), invert(m)) - joints[j, :2])
                assert err.max() <= 0.5 * np.sqrt(2) * px_per_cell + 1e-6


@pytest.mark.mpii
def test_flip_swaps_left_and_right_targets(mpii_sample: Path) -> None:
    plain = MPIIDataset(mpii_sample, "val", augment=False)[0]
    ds = MPIIDataset(mpii_sample, "val", augment=True)
    for epoch in range(50):  # find an epoch whose draw flips person 0
        ds.set_epoch(epoch)
        s = ds[0]
        if bool(s["flip"]):
            break
    else:
        pytest.fail("no flip in 50 epochs")
    rec = ds.people[0]
    expect = _expected_heatmap_points(s, rec.joints)
    # Channel 0 (right ankle) of the mirror holds the original's left ankle, mirrored.
    y, x = np.unravel_index(int(s["target"][0].argmax()), (64, 64))
    assert (x, y) == tuple(int(v) for v in np.floor(expect[0] + 0.5))
    assert torch.equal(s["target_weight"], plain["target_weight"][list(FLIP_INDEX)])


# --- determinism and the DataLoader -----------------------------------------------------------------------------


def test_samples_depend_on_seed_epoch_and_index_only(synthetic_root: Path) -> None:
    a = MPIIDataset(synthetic_root, "train", input_res=64, seed=3)
    b = MPIIDataset(synthetic_root, "train", input_res=64, seed=3)
    b.set_epoch(0)
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in (0, 5))
    b.set_epoch(1)
    assert not torch.equal(a[5]["image"], b[5]["image"])
    c = MPIIDataset(synthetic_root, "train", input_res=64, seed=3, limit=6)  # limit keeps each person's draws
    assert torch.equal(c[5]["image"], a[5]["image"])


def test_loader_batches_are_reproducible_and_worker_independent(synthetic_root: Path) -> None:
    ds = MPIIDataset(synthetic_root, "train", input_res=64)

    def epoch_batches(workers: int, epoch: int) -> list[dict]:
        loader = make_loader(ds, 4, shuffle=True, workers=workers, pin_memory=True, drop_last=True, seed=7)
        loader.set_epoch(epoch)
        return list(loader)

    first = epoch_batches(0, 2)
    again = epoch_batches(0, 2)
    other = epoch_batches(0, 3)
    in_worker = epoch_batches(1, 2)
    assert len(first) == len(ds) // 4
    for x, y, z in zip(first, again, in_worker, strict=True):
        for key in x:
            assert torch.equal(x[key], y[key])
            assert torch.equal(x[key], z[key])
    assert [b["index"].tolist() for b in first] != [b["index"].tolist() for b in other]
    assert isinstance(
        make_loader(ds, 4, shuffle=True, workers=0, pin_memory=False, drop_last=False).sampler, EpochShuffleSampler
    )


def test_persistent_workers_see_set_epoch(synthetic_root: Path) -> None:
    ds = MPIIDataset(synthetic_root, "train", input_res=64, limit=4)
    loader = make_loader(ds, 4, shuffle=False, workers=1, pin_memory=False, drop_last=False)
    loader.set_epoch(0)
    e0 = next(iter(loader))["image"]
    loader.set_epoch(1)
    e1 = next(iter(loader))["image"]
    ds.set_epoch(1)
    assert torch.equal(e1, torch.stack([ds[i]["image"] for i in range(4)]))
    assert not torch.equal(e0, e1)


def test_worker_errors_are_unwrapped_to_one_line() -> None:
    wrapped = (
        "Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    raise DataError(msg)\nhgbench.errors.DataError: corrupt image a.jpg: bad\n'
    )
    assert unwrap_worker_message(wrapped) == "corrupt image a.jpg: bad"
    assert unwrap_worker_message("plain message") == "plain message"
