"""Predictions files and the presentation of PCKh results (the study's table, CSV and JSON).

A predictions file holds one (x, y) per joint per validation person, in original-image pixels and split order:
`.mat` with `preds` N x 16 x 2 (bearpaw/pytorch-pose's `preds_valid.mat`, what `save_predictions` writes) or
`pos_pred_src` 16 x 2 x N (the layout of `detections_our_format.mat`), or `.npy` holding an N x 16 x 2 array.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from hgbench.errors import DataError, HGBenchError
from hgbench.eval.metrics import PCKH_LOW_THRESHOLD, PCKH_THRESHOLD, PCKhResult, describe_non_finite
from hgbench.files.atomic_io import jsonable
from hgbench.spec.skeleton import JOINT_NAMES, MAX_PEOPLE, NUM_JOINTS, PCKH_PARTS

# Column order of the study's table and of the CSV.
COLUMNS: tuple[str, ...] = (*PCKH_PARTS, "Mean")

MEAN_CONVENTION = "unweighted mean of the 14 joints except pelvis and thorax (upper neck included)"


def _as_preds(arr: np.ndarray, *, field: str, source: str) -> np.ndarray:
    """Validate an [N, 16, 2] array read from `source` (named in errors) and return it as float64."""
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"predictions file {source}: field {field!r} is not numeric (dtype {arr.dtype})")
    if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 2) or arr.shape[0] == 0:
        raise DataError(
            f"predictions file {source}: {field!r} has shape {arr.shape} once read as people x joints x "
            f"xy; expected N x {NUM_JOINTS} x 2 with N > 0"
        )
    out = arr.astype(np.float64)
    msg = describe_non_finite(f"predictions file {source}: the predictions", out)
    if msg:
        raise DataError(msg)
    return out


def load_predictions(path: str | Path) -> np.ndarray:
    """Read a predictions file.

    Args:
        path: `.mat` with `preds` (N x 16 x 2) or `pos_pred_src` (16 x 2 x N; `preds` wins when both are present),
            or `.npy` with an N x 16 x 2 array.

    Returns:
        [N, 16, 2] float64 (x, y) in original-image pixels.

    Raises:
        DataError: missing or unreadable file, no known field, wrong shape, non-numeric or NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"predictions file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:  # mapped, not read: the header's shape is checked before any data is
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise DataError(f"cannot read predictions file {path}: {exc}") from exc
        _check_declared(path, "array", arr.shape, people_axis=0)
        return _as_preds(np.asarray(arr), field="array", source=str(path))
    return _load_mat_predictions(path)


# The two .mat layouts: the field, its axis of people, and its shape with N for that axis.
_MAT_FIELDS: dict[str, tuple[int, str]] = {"preds": (0, "N x 16 x 2"), "pos_pred_src": (2, "16 x 2 x N")}


def _check_declared(path: Path, field: str, shape: tuple[int, ...], *, people_axis: int) -> None:
    """Refuse a declared shape that cannot be predictions (wrong rank or joint axes, or over `MAX_PEOPLE` people)."""
    expected = list(shape)
    if len(shape) == 3:
        expected[people_axis] = -1
    fits = len(shape) == 3 and [d for d in expected if d != -1] == [NUM_JOINTS, 2]
    if not fits or not 0 < shape[people_axis] <= MAX_PEOPLE:
        layout = _MAT_FIELDS.get(field, (0, "N x 16 x 2"))[1]
        raise DataError(
            f"predictions file {path}: {field!r} is declared with shape {tuple(shape)}, which cannot be predictions "
            f"(expected {layout} with 0 < N <= {MAX_PEOPLE:,}); not read"
        )


def _load_mat_predictions(path: Path) -> np.ndarray:
    """`preds` or `pos_pred_src` of a .mat file, its declared shape checked (`scipy.io.whosmat`, headers only) before
    that one variable is read."""
    from scipy.io import loadmat, whosmat

    try:
        declared = {name: tuple(shape) for name, shape, _ in whosmat(str(path))}
    except Exception as exc:  # scipy raises several unrelated types for a damaged or non-.mat file
        raise DataError(f"cannot read predictions file {path} as a .mat file: {exc}") from exc
    field = next((f for f in _MAT_FIELDS if f in declared), None)
    if field is None:
        fields = ", ".join(sorted(k for k in declared if not k.startswith("__"))) or "none"
        raise DataError(
            f"predictions file {path} has neither 'preds' (N x 16 x 2) nor 'pos_pred_src' (16 x 2 x N); "
            f"its fields: {fields}"
        )
    _check_declared(path, field, declared[field], people_axis=_MAT_FIELDS[field][0])
    try:
        arr = np.asarray(loadmat(str(path), variable_names=[field])[field])
    except Exception as exc:  # as above: damaged data after a sound header
        raise DataError(f"cannot read predictions file {path} as a .mat file: {exc}") from exc
    if field == "pos_pred_src":
        arr = np.transpose(arr, (2, 0, 1))
    return _as_preds(arr, field=field, source=str(path))


def save_predictions(path: str | Path, preds: np.ndarray) -> Path:
    """Write predictions as `preds` (N x 16 x 2, float64) in a `.mat` file, or as an array in a `.npy` file.

    Written to a temporary file in the same folder and renamed, so a crash never leaves half a file.

    Args:
        path: destination; `.npy` writes numpy's format, anything else a MATLAB 5 `.mat`.
        preds: [N, 16, 2] (x, y) in original-image pixels.

    Returns:
        The path written.
    """
    path = Path(path)
    arr = np.asarray(preds, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 2):
        raise HGBenchError(f"cannot save predictions of shape {arr.shape} to {path}: expected N x {NUM_JOINTS} x 2")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if path.suffix.lower() == ".npy":
                np.save(f, arr)
            else:
                from scipy.io import savemat

                savemat(f, {"preds": arr})
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fmt(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else "nan"


def _row(result: PCKhResult) -> list[str]:
    return [*(_fmt(result.parts[p]) for p in PCKH_PARTS), _fmt(result.mean)]


def format_table(result: PCKhResult) -> str:
    """The study's layout: a title line, the column names and the values (two decimals), then the other means.

    Returns:
        Text ending with a newline.
    """
    values = _row(result)
    widths = [max(len(c), len(v)) for c, v in zip(COLUMNS, values, strict=True)]
    labels = [
        (f"Mean, count-weighted (mmpose's convention), PCKh@{PCKH_THRESHOLD:g}:", _fmt(result.mean_weighted)),
        (f"Mean, PCKh@{PCKH_LOW_THRESHOLD:g}:", _fmt(result.mean_at_0_1)),
    ]
    lw = max(len(label) for label, _ in labels)
    lines = [
        "Final validation PCKh scores:",
        "  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths, strict=True)),
        "  ".join(v.rjust(w) for v, w in zip(values, widths, strict=True)),
        *(f"{label.ljust(lw)} {value}" for label, value in labels),
        f"({result.count} people; PCKh@{PCKH_THRESHOLD:g}; Mean = {MEAN_CONVENTION})",
    ]
    return "\n".join(lines) + "\n"


def format_csv(result: PCKhResult) -> str:
    """Exactly two lines: ``Head,Shoulder,Elbow,Wrist,Hip,Knee,Ankle,Mean`` and the values with two decimals."""
    return ",".join(COLUMNS) + "\n" + ",".join(_row(result)) + "\n"


def format_json(result: PCKhResult, extra: dict | None = None) -> str:
    """Everything as one JSON document: the `PCKhResult.to_dict()` figures under "pckh", per-joint counts and
    PCKh@0.1, the conventions, and `extra` (e.g. the predictions file, timing) merged at the top level.

    Returns:
        Indented JSON text ending with a newline; nan is written as null.
    """
    doc: dict = {
        "pckh": result.to_dict(),
        "joint_names": list(JOINT_NAMES),
        "per_joint_counts": result.counts,
        "per_joint_at_0.1": result.per_joint_at_0_1,
        "threshold": PCKH_THRESHOLD,
        "low_threshold": PCKH_LOW_THRESHOLD,
        "mean_convention": MEAN_CONVENTION,
        "mean_weighted_convention": "the same 14 joints weighted by annotated count (mmpose)",
    }
    doc.update(extra or {})
    return json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n"
