"""Predictions files (`preds` / `pos_pred_src` layouts, errors) and the table, CSV and JSON presentations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from hgbench.errors import DataError, HGBenchError
from hgbench.eval.metrics import PCKhResult
from hgbench.eval.predictions import format_csv, format_json, format_table, load_predictions, save_predictions

PARTS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")


def make_result(**over: object) -> PCKhResult:
    """A hand-made result with distinct, easy-to-spot values."""
    per_joint = np.linspace(50.0, 99.0, 16)
    fields: dict = dict(
        per_joint=per_joint,
        counts=np.full(16, 10, dtype=np.int64),
        parts={
            "Head": 97.456,
            "Shoulder": 95.5,
            "Elbow": 89.004,
            "Wrist": 84.995,
            "Hip": 88.0,
            "Knee": 84.1,
            "Ankle": 80.0,
        },
        mean=88.765,
        mean_weighted=89.123,
        mean_at_0_1=33.333,
        count=10,
    )
    fields.update(over)
    return PCKhResult(**fields)


def preds_array(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 500, size=(n, 16, 2))


# ------------------------------------------------------------------------------------------- files


def test_save_and_load_preds_layout(tmp_path: Path) -> None:
    preds = preds_array()
    path = save_predictions(tmp_path / "out" / "p.mat", preds)
    from scipy.io import loadmat

    assert loadmat(str(path))["preds"].shape == (4, 16, 2)  # the layout other tools read
    np.testing.assert_array_equal(load_predictions(path), preds)
    assert [p.name for p in path.parent.iterdir()] == ["p.mat"]  # no temporary file left behind


def test_load_pos_pred_src_layout(tmp_path: Path) -> None:
    preds = preds_array()
    savemat(str(tmp_path / "d.mat"), {"pos_pred_src": np.transpose(preds, (1, 2, 0))})
    np.testing.assert_array_equal(load_predictions(tmp_path / "d.mat"), preds)


def test_npy_round_trip(tmp_path: Path) -> None:
    preds = preds_array()
    np.testing.assert_array_equal(load_predictions(save_predictions(tmp_path / "p.npy", preds)), preds)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_predictions(tmp_path / "nope.mat")


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bad.mat").write_text("not a mat file")
    with pytest.raises(DataError, match="cannot read"):
        load_predictions(tmp_path / "bad.mat")


def test_no_known_field_lists_the_fields(tmp_path: Path) -> None:
    savemat(str(tmp_path / "x.mat"), {"joints": np.zeros((2, 16, 2))})
    with pytest.raises(DataError, match=r"neither 'preds'.*its fields: joints"):
        load_predictions(tmp_path / "x.mat")


@pytest.mark.parametrize(
    ("field", "arr"),
    [("preds", np.zeros((3, 14, 2))), ("preds", np.zeros((16, 2, 3))), ("pos_pred_src", np.zeros((3, 16, 2)))],
)
def test_wrong_shape(tmp_path: Path, field: str, arr: np.ndarray) -> None:
    savemat(str(tmp_path / "x.mat"), {field: arr})
    with pytest.raises(DataError, match="shape"):
        load_predictions(tmp_path / "x.mat")


def test_nan_predictions(tmp_path: Path) -> None:
    preds = preds_array()
    preds[1, 2, 0] = np.nan
    savemat(str(tmp_path / "x.mat"), {"preds": preds})
    with pytest.raises(DataError, match=r"NaN/inf at 1 joints of 1 of 4 people \(first: person 1, joint 2 r_hip\)"):
        load_predictions(tmp_path / "x.mat")


def test_save_rejects_wrong_shape(tmp_path: Path) -> None:
    with pytest.raises(HGBenchError, match="shape"):
        save_predictions(tmp_path / "p.mat", np.zeros((3, 2, 16)))


# ------------------------------------------------------------------------------------------- formats


def test_csv_is_exactly_two_lines() -> None:
    assert format_csv(make_result()) == (
        "Head,Shoulder,Elbow,Wrist,Hip,Knee,Ankle,Mean\n97.46,95.50,89.00,85.00,88.00,84.10,80.00,88.77\n"
    )


def test_table_layout() -> None:
    lines = format_table(make_result()).splitlines()
    assert lines[0] == "Final validation PCKh scores:"
    assert lines[1].split() == [*PARTS, "Mean"]
    assert lines[2].split() == ["97.46", "95.50", "89.00", "85.00", "88.00", "84.10", "80.00", "88.77"]
    # Columns are right-aligned: every value ends where its column name ends.
    ends_h = [lines[1].index(name) + len(name) for name in [*PARTS, "Mean"]]
    ends_v = [i + 1 for i, (a, b) in enumerate(zip(lines[2], lines[2][1:] + " ", strict=True)) if a != " " and b == " "]
    assert ends_h == ends_v
    weighted = next(line for line in lines if "count-weighted" in line)
    low = next(line for line in lines if "PCKh@0.1" in line)
    assert weighted.endswith("89.12")
    assert low.endswith("33.33")


def test_nan_is_printed_as_nan() -> None:
    r = make_result(parts={p: (float("nan") if p == "Ankle" else 90.0) for p in PARTS})
    assert format_csv(r).splitlines()[1] == "90.00,90.00,90.00,90.00,90.00,90.00,nan,88.77"


def test_json_holds_everything() -> None:
    r = make_result(per_joint=np.r_[np.nan, np.linspace(50.0, 99.0, 15)])
    doc = json.loads(format_json(r, {"predictions": Path("p.mat"), "timing": {"wall_s": np.float64(1.5)}}))
    assert doc["pckh"]["Mean"] == 88.765
    assert doc["pckh"]["mean_at_0.1"] == 33.333
    assert doc["pckh"]["per_joint"][0] is None
    assert doc["per_joint_counts"] == [10] * 16
    assert len(doc["joint_names"]) == 16
    assert doc["predictions"] == "p.mat"
    assert doc["timing"] == {"wall_s": 1.5}
    assert "upper neck included" in doc["mean_convention"]
