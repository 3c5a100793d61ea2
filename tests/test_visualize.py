"""Pose pictures: limbs coloured by side, ground truth drawn distinctly, PNGs written (and readable)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hgbench.errors import DataError
from hgbench.eval.visualize import GT_COLOUR, SIDE_COLOURS, draw_pose, render_pose, save_pose_pngs


def standing_pose() -> np.ndarray:
    """A person 160 px tall facing the camera (their right on the image's left), in a 200 x 200 image."""
    return np.array(
        [
            # right ankle, knee, hip; left hip, knee, ankle
            [80, 180],
            [80, 140],
            [85, 100],
            [115, 100],
            [120, 140],
            [120, 180],
            # pelvis, thorax, neck, head top
            [100, 100],
            [100, 50],
            [100, 40],
            [100, 15],
            # right wrist, elbow, shoulder; left shoulder, elbow, wrist
            [60, 100],
            [65, 75],
            [80, 50],
            [120, 50],
            [135, 75],
            [140, 100],
        ],
        dtype=np.float64,
    )


def test_limbs_are_coloured_by_side_and_input_is_untouched() -> None:
    img = np.zeros((200, 200, 3), dtype=np.uint8)
    out = draw_pose(img, standing_pose(), thickness=3)
    assert not img.any()  # the input is not drawn on
    assert tuple(out[160, 80]) == SIDE_COLOURS["right"]  # middle of the right shin
    assert tuple(out[160, 120]) == SIDE_COLOURS["left"]  # middle of the left shin
    assert tuple(out[75, 100]) == SIDE_COLOURS["centre"]  # middle of the spine


def test_ground_truth_is_white_and_missing_joints_are_skipped() -> None:
    img = np.zeros((200, 200, 3), dtype=np.uint8)
    missing = np.zeros(16, dtype=bool)
    missing[5] = True  # left ankle not annotated: no left shin
    out = draw_pose(img, standing_pose(), missing=missing, style="gt", thickness=4)
    assert tuple(out[160, 80]) == GT_COLOUR
    assert not out[160, 120].any()


def test_non_finite_joints_are_skipped() -> None:
    pose = standing_pose()
    pose[0] = np.nan
    out = draw_pose(np.zeros((200, 200, 3), dtype=np.uint8), pose, thickness=3)
    assert not out[165, 80].any()


def test_far_off_prediction_does_not_zoom_the_picture_out() -> None:
    pred = standing_pose()
    pred[6] = (-500.0, -500.0)  # a placeholder pelvis far off, as pos_pred_src has
    img = np.full((200, 200, 3), 128, dtype=np.uint8)
    with_far = render_pose(img, pred, standing_pose(), None, "t")
    without = render_pose(img, standing_pose(), standing_pose(), None, "t")
    assert with_far.shape == without.shape
    assert with_far.dtype == np.uint8
    assert min(with_far.shape[:2]) >= 480


def test_save_pose_pngs_writes_n_readable_files(tmp_path: Path) -> None:
    img = np.full((120, 160, 3), 90, dtype=np.uint8)
    items = [(img, standing_pose() * 0.6, standing_pose() * 0.6 + 2, None, f"person {i}") for i in range(3)]
    paths = save_pose_pngs(tmp_path / "pics", items, n=2)
    assert [p.name for p in paths] == ["0000_image.png", "0001_image.png"]
    assert all(cv2.imread(str(p)) is not None for p in paths)


def test_missing_image_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image not found"):
        save_pose_pngs(tmp_path, [(tmp_path / "nope.jpg", standing_pose(), None, None, "")], n=1)


def test_real_sample_images(mpii_sample: Path, shared_mpii: Path, tmp_path: Path) -> None:
    """The published predictions and ground truth of val #0, #1 on their real images."""
    from scipy.io import loadmat

    from hgbench.data.groundtruth import load_ground_truth

    mat = loadmat(str(shared_mpii / "detections_our_format.mat"))
    pred = np.transpose(mat["pos_pred_src"], (2, 0, 1))
    gt = load_ground_truth(shared_mpii / "detections_our_format.mat")
    entries = [e for e in json.loads((mpii_sample / "mpii_annotations.json").read_text()) if e["isValidation"] == 1]
    items = [
        (mpii_sample / "images" / e["img_paths"], pred[i], gt.joints[i], gt.missing[i], f"val #{i}")
        for i, e in enumerate(entries[:2])
    ]
    paths = save_pose_pngs(tmp_path, items, n=2)
    assert len(paths) == 2
    assert all(cv2.imread(str(p)).shape[0] > 400 for p in paths)
