"""MPII annotations: the data directory's file layout, reading and validating the annotation file, and matching its
val people to the evaluation ground truth.

A data directory holds `images/*.jpg` and `mpii_annotations.json` (or `.json.gz`): the annotation file of the PyTorch
hourglass code, one entry per person, split by `isValidation` (22,246 train / 2,958 val). When only the images are
there, the copy bundled in `hgbench/assets` is used. The synthetic generator (`hgbench.data.synthetic`) writes the same
layout plus a `dataset.json` marker. A missing file or field, a file that is not JSON, or a field of the wrong type
raises `DataError` with one line naming the file, the entry and the field.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from hgbench.data.groundtruth import GroundTruth
from hgbench.errors import DataError, one_line
from hgbench.spec.skeleton import NUM_JOINTS

ANNOTATION_FILENAMES: tuple[str, ...] = ("mpii_annotations.json", "mpii_annotations.json.gz")
IMAGES_DIRNAME = "images"
MARKER_FILENAME = "dataset.json"  # written beside the annotations by the synthetic generator
GT_TOLERANCE_PX = 0.01  # annotation vs ground-truth joints (they agree to 0.0005 px in the real files)


def bundled_annotations_path() -> Path:
    """The copy of the real MPII annotation file shipped inside the package."""
    return Path(str(resources.files("hgbench") / "assets" / "mpii_annotations.json.gz"))


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy fields with == is ambiguous
class PersonRecord:
    """One annotated person, as the annotation file gives it (no adjustment applied)."""

    image: str  # file name relative to images/
    width: int  # image width in pixels (img_width)
    height: int  # image height in pixels (img_height)
    center: tuple[float, float]  # objpos (x, y)
    scale: float  # scale_provided: person height / 200 px
    joints: np.ndarray  # [16, 3] float64 read-only: x, y, visible (1 visible, 0 occluded or missing)
    is_val: bool  # isValidation == 1
    index_in_file: int  # position of the entry in the annotation file

    @property
    def annotated(self) -> np.ndarray:
        """[16] bool: False for missing joints (exactly x = y = 0)."""
        return ~((self.joints[:, 0] == 0) & (self.joints[:, 1] == 0))


def find_annotation_file(data_dir: str | Path) -> Path:
    """The annotation file of a data directory.

    Args:
        data_dir: directory holding `images/` and `mpii_annotations.json` (or `.json.gz`).

    Returns:
        The file in `data_dir`; else the bundled copy when `data_dir` has an `images/` folder (real MPII images only).

    Raises:
        DataError: the directory does not exist, or has neither an annotation file nor `images/`.
    """
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    for name in ANNOTATION_FILENAMES:
        if (data_dir / name).is_file():
            return data_dir / name
    if (data_dir / IMAGES_DIRNAME).is_dir():
        return bundled_annotations_path()
    raise DataError(f"{data_dir} is not an MPII data directory: it has neither {ANNOTATION_FILENAMES[0]} nor images/")


def load_annotations(path: str | Path) -> list[PersonRecord]:
    """Read and validate every entry of an MPII annotation file (plain or gzipped JSON).

    Parsed files are cached per (path, mtime, size): the real file takes about two seconds to parse.

    Raises:
        DataError: the file is missing or not JSON, or an entry lacks a field or has one of the wrong type; the
            message names the file, the entry (its position and `img_paths`) and the field.
    """
    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise DataError(f"annotation file not found: {path}") from exc
    return list(_load_cached(str(path.resolve()), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=4)
def _load_cached(path_str: str, _mtime_ns: int, _size: int) -> tuple[PersonRecord, ...]:
    path = Path(path_str)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: accept a .json.gz whatever its name
            raw = gzip.decompress(raw)
        entries = json.loads(raw)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"annotation file {path} is not valid (gzipped) JSON: {one_line(exc)}") from exc
    if not isinstance(entries, list):
        raise DataError(f"annotation file {path}: expected a JSON list of person entries, got {type(entries).__name__}")
    return tuple(_parse_entry(path, i, e) for i, e in enumerate(entries))


def _parse_entry(path: Path, i: int, e: object) -> PersonRecord:
    """Validate one entry; every failure names the entry and the field."""
    if not isinstance(e, dict):
        raise DataError(f"{path}: entry {i}: expected an object with the MPII fields, got {type(e).__name__}")
    name = e.get("img_paths")

    def fail(field: str, what: str) -> DataError:
        return DataError(f"{path}: entry {i} (img_paths={name!r}): field {field!r} {what}")

    def number(field: str, *, positive: bool = False) -> float:
        if field not in e:
            raise fail(field, "is missing")
        v = e[field]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise fail(field, f"must be a finite number, got {v!r:.60}")
        if positive and v <= 0:
            raise fail(field, f"must be positive, got {v!r}")
        return float(v)

    def array(field: str, shape: tuple[int, ...], what: str) -> np.ndarray:
        if field not in e:
            raise fail(field, "is missing")
        try:
            a = np.asarray(e[field])
        except ValueError:  # ragged nested lists
            a = np.asarray(None)
        if a.shape != shape or a.dtype.kind not in "iuf" or not np.all(np.isfinite(a)):
            got = f"shape {a.shape} of {a.dtype}" if a.dtype.kind != "O" else f"{str(e[field])[:60]}"
            raise fail(field, f"must be {what}, got {got}")
        return a.astype(np.float64)

    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise fail("img_paths", "must be an image file name relative to images/")
    width = number("img_width", positive=True)
    height = number("img_height", positive=True)
    center = array("objpos", (2,), "[x, y]")
    scale = number("scale_provided", positive=True)
    joints = array("joint_self", (NUM_JOINTS, 3), f"{NUM_JOINTS} [x, y, visible] triples of numbers")
    is_val = number("isValidation")
    if is_val not in (0.0, 1.0):
        raise fail("isValidation", f"must be 0 or 1, got {is_val!r}")
    joints.flags.writeable = False  # records are shared by every dataset built from the cached file
    return PersonRecord(
        image=name,
        width=int(width),
        height=int(height),
        center=(float(center[0]), float(center[1])),
        scale=scale,
        joints=joints,
        is_val=is_val == 1.0,
        index_in_file=i,
    )


def dataset_name(annotation_file: Path) -> str:
    """The dataset's name: "synthetic" when a synthetic-dataset marker sits beside the annotation file, else "mpii"."""
    marker = annotation_file.parent / MARKER_FILENAME
    try:
        return "synthetic" if json.loads(marker.read_text()).get("name") == "synthetic" else "mpii"
    except (OSError, ValueError, AttributeError):
        return "mpii"


def match_ground_truth(people: list[PersonRecord], gt: GroundTruth, *, gt_path: Path, ann_path: Path) -> np.ndarray:
    """Position in `gt` of each val person: the identity when counts agree, else an in-order subsequence."""
    joints = np.stack([p.joints[:, :2] for p in people])
    missing = np.stack([~p.annotated for p in people])

    def agree(gt_joints: np.ndarray, gt_missing: np.ndarray, j: np.ndarray, miss: np.ndarray) -> np.ndarray:
        # A joint agrees when within tolerance, or when the ground truth zeroed a coordinate: the real file does that
        # to 13 annotated joints (e.g. val person 2763's legs) without marking them missing.
        close = (np.abs(gt_joints - j).max(axis=-1) <= GT_TOLERANCE_PX) | np.any(gt_joints == 0, axis=-1)
        return np.all(gt_missing == miss, axis=-1) & np.all(close | miss, axis=-1)

    def mismatch(k: int, what: str) -> DataError:
        return DataError(
            f"{ann_path}: val person {k} (entry {people[k].index_in_file}, img_paths={people[k].image!r}) {what} in "
            f"{gt_path}: the annotations and the ground truth are not the same people in the same order"
        )

    n, m = len(people), len(gt)
    if n > m:
        raise DataError(f"{ann_path} has {n} val people but {gt_path} only {m}: they do not belong together")
    if n == m:
        ok = agree(gt.joints, gt.missing, joints, missing)
        if not ok.all():
            k = int(np.argmin(ok))
            raise mismatch(k, f"does not match entry {k}")
        return np.arange(n)
    out = np.empty(n, dtype=np.int64)
    j = 0
    for k in range(n):
        hits = np.flatnonzero(agree(gt.joints[j:], gt.missing[j:], joints[k], missing[k]))
        if hits.size == 0:
            raise mismatch(k, f"matches no entry from {j} on")
        out[k] = j + hits[0]
        j = out[k] + 1
    return out
