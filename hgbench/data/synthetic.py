"""A synthetic dataset in MPII's on-disk format: the embedded default, so every run works without the 12 GB download.

`generate` writes exactly what a real data directory holds (`images/*.jpg`, `mpii_annotations.json` with an
`isValidation` split, and the val people's `detections_our_format.mat` with head boxes) plus a `dataset.json` marker,
so the same loader, augmentation, metrics and runner run on it unchanged; `default_dataset` caches one under
`hgbench.spec.config.cache_root`. The pictures themselves (articulated figures, clutter, occluders, and their
annotation) are drawn by `hgbench.data.figures`; this module lays them out in images and splits, writes and publishes
them.

1-3 figures per image (each an annotated person, the others recorded in `*_other` / `numOtherPeople` like the real
file); MPII splits by image, and so does `generate`.

Deterministic: the same (people, seed, image size, fraction) gives the same bytes (every image draws from its own
seed sequence; the `.mat` header's timestamp is replaced by a fixed text). Output is written to a temporary sibling
directory and renamed into place, so an interrupted generation never leaves half a dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hgbench.data.annotations import ANNOTATION_FILENAMES, IMAGES_DIRNAME, MARKER_FILENAME
from hgbench.data.groundtruth import GT_FILENAME, GroundTruth, save_ground_truth
from hgbench.errors import DataError
from hgbench.files.atomic_io import NotAPlainFile, open_append
from hgbench.spec.config import DEFAULT_SYNTHETIC_PEOPLE, cache_root

GENERATOR_VERSION = 1  # bump whenever the output for a given seed changes (it names the cache directory)
DEFAULT_PEOPLE = DEFAULT_SYNTHETIC_PEOPLE
DEFAULT_IMAGE_SIZE: tuple[int, int] = (320, 240)  # (width, height): small, so a run's first epoch starts at once
# MPII's most common frame (1280x720): JPEGs as costly to decode as the real ones, to judge a decode path on.
MPII_IMAGE_SIZE: tuple[int, int] = (1280, 720)
DEFAULT_VAL_FRACTION = 0.15  # MPII: 2,958 / 25,204 = 0.117; a little more keeps small datasets' val meaningful
ANNOTATION_FILENAME = ANNOTATION_FILENAMES[0]  # written plain, not gzipped

_MATLAB_EMPTY = {"_ArrayType_": "double", "_ArraySize_": [0, 0], "_ArrayData_": None}
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by the hgbench synthetic MPII generator"


def _layout(rng: np.random.Generator, people: int) -> list[int]:
    """Figures per image (1-3, MPII-like) so that the total is exactly `people`."""
    sizes: list[int] = []
    total = 0  # kept as it grows: summing the list each time made this quadratic in `people`
    while total < people:
        sizes.append(min(int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])), people - total))
        total += sizes[-1]
    if len(sizes) == 1:  # two images at least, one per split
        sizes = [people - 1, 1]
    return sizes


def _val_images(rng: np.random.Generator, sizes: list[int], val_fraction: float) -> set[int]:
    """Images whose people form the val split (MPII splits by image), about `val_fraction` of the people."""
    total = sum(sizes)
    want = min(max(1, round(val_fraction * total)), total - 1)
    chosen: set[int] = set()
    got = 0
    for i in rng.permutation(len(sizes)):
        if got + sizes[i] <= want:
            chosen.add(int(i))
            got += sizes[i]
        if got == want:
            break
    if not chosen:  # no image fits the target exactly: take the smallest (there are at least two images)
        chosen.add(int(np.argmin(sizes)))
    return chosen


def _other(values: list, one: bool) -> object:
    """MPII's `*_other` layout: MATLAB's empty array for none, the value itself for one, a list for several."""
    if not values:
        return _MATLAB_EMPTY
    return values[0] if one else values


def _matlab_list(a: np.ndarray) -> list:
    return [[round(float(v), 3) for v in row] for row in a]


def generate(
    out_dir: str | Path,
    *,
    people: int,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic MPII-format dataset.

    Args:
        out_dir: directory to create (`images/`, `mpii_annotations.json`, `detections_our_format.mat`,
            `dataset.json`). It must not exist or be empty, unless `overwrite`.
        people: annotated people (entries); at least 2, so both splits have one.
        seed: the dataset is a function of (people, seed, image_size, val_fraction).
        image_size: (width, height) of every image.
        val_fraction: share of people in the val split (whole images go to one split, as in MPII).
        overwrite: replace an existing non-empty `out_dir`.

    Returns:
        `out_dir`.

    Raises:
        ValueError: invalid arguments.
        DataError: `out_dir` cannot be written or is not empty.
    """
    out_dir = Path(out_dir).expanduser()
    w, h = (int(v) for v in image_size)
    if people < 2:
        raise ValueError(f"a synthetic dataset needs at least 2 people (one per split), got {people}")
    if w < 32 or h < 32:
        raise ValueError(f"image size {w}x{h} is too small (32x32 at least)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if out_dir.exists() and not overwrite and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"output directory {out_dir} exists and is not empty (choose another or pass --force)")
    _check_disk(out_dir, people, (w, h))
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as exc:
        raise DataError(f"cannot write to {out_dir}: {_why_unwritable(out_dir, exc)}") from exc
    try:
        _write(tmp, people=people, seed=seed, size=(w, h), val_fraction=val_fraction)
        _publish(tmp, out_dir, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# At least this many bytes per person on disk: their share of a JPEG (measured about 0.2 bytes per pixel per image,
# 1.7 people per image) and their annotation entry; a low estimate, so that a dataset that fits is never refused.
_BYTES_PER_PIXEL_PER_PERSON = 0.05
_ANNOTATION_BYTES = 500


def _check_disk(out_dir: Path, people: int, size: tuple[int, int]) -> None:
    """Refuse, before drawing anything, a dataset that cannot fit on the disk that would hold it.

    Raises:
        DataError: one line: what it needs, what is free, and how many people fit.
    """
    per_person = size[0] * size[1] * _BYTES_PER_PIXEL_PER_PERSON + _ANNOTATION_BYTES
    folder = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if folder is None:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write reports what is wrong
    if people * per_person > free:
        raise DataError(
            f"a synthetic dataset of {people:,} people at {size[0]}x{size[1]} needs at least "
            f"{people * per_person / 2**30:.3g} GiB, more than the {free / 2**30:.1f} GiB free on the disk holding "
            f"{out_dir}; about {int(free // per_person):,} people fit"
        )


def _why_unwritable(path: Path, exc: OSError) -> str:
    """The reason `path` cannot be created, naming the ancestor that is a file when that is the cause."""
    for parent in path.parents:
        if parent.exists():
            return f"{parent} is not a directory" if not parent.is_dir() else str(exc.strerror or exc)
    return str(exc.strerror or exc)


def _publish(tmp: Path, out_dir: Path, *, overwrite: bool) -> None:
    """Rename the finished `tmp` to `out_dir` (atomic when `out_dir` is absent or an empty directory)."""
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
    old = None
    if overwrite and out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except OSError as exc:  # someone else published first
        raise DataError(f"output directory {out_dir} appeared while generating; not overwritten") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write(root: Path, *, people: int, seed: int, size: tuple[int, int], val_fraction: float) -> None:
    from hgbench.data.figures import render_image  # OpenCV draws: needed to generate a dataset, not to find one

    rng = np.random.default_rng([seed, GENERATOR_VERSION])
    sizes = _layout(rng, people)
    val = _val_images(rng, sizes, val_fraction)
    (root / IMAGES_DIRNAME).mkdir()
    entries: list[dict] = []
    gt_joints, gt_boxes = [], []
    for i, n in enumerate(sizes):
        name = f"{i + 1:09d}.jpg"
        jpeg, figs = render_image(np.random.default_rng([seed, i, GENERATOR_VERSION]), n, size)
        (root / IMAGES_DIRNAME / name).write_bytes(jpeg)
        for k, p in enumerate(figs):
            others = [q for q_i, q in enumerate(figs) if q_i != k]
            one = len(others) == 1
            entries.append(
                {
                    "dataset": "synthetic",
                    "isValidation": 1.0 if i in val else 0.0,
                    "img_paths": name,
                    "img_width": float(size[0]),
                    "img_height": float(size[1]),
                    "objpos": p["objpos"],
                    "joint_self": _matlab_list(p["joints"]),
                    "scale_provided": p["scale"],
                    "joint_others": _other([_matlab_list(q["joints"]) for q in others], one),
                    "scale_provided_other": _other([q["scale"] for q in others], one),
                    "objpos_other": _other([q["objpos"] for q in others], one),
                    "annolist_index": float(i + 1),
                    "people_index": float(k + 1),
                    "numOtherPeople": float(len(others)),
                }
            )
            if i in val:
                gt_joints.append(np.array(entries[-1]["joint_self"])[:, :2])
                gt_boxes.append(p["headbox"])
    (root / ANNOTATION_FILENAME).write_text(json.dumps(entries, separators=(",", ": ")) + "\n")
    joints = np.stack(gt_joints)
    gt = GroundTruth(joints=joints, missing=(joints[..., 0] == 0) & (joints[..., 1] == 0), headboxes=np.stack(gt_boxes))
    save_ground_truth(root / GT_FILENAME, gt)
    _fix_mat_header(root / GT_FILENAME)
    n_val = sum(n for i, n in enumerate(sizes) if i in val)
    marker = {
        "name": "synthetic",
        "generator_version": GENERATOR_VERSION,
        "people": people,
        "train": people - n_val,
        "val": n_val,
        "images": len(sizes),
        "seed": seed,
        "image_size": list(size),
        "val_fraction": val_fraction,
    }
    (root / MARKER_FILENAME).write_text(json.dumps(marker, indent=1) + "\n")


def _fix_mat_header(path: Path) -> None:
    """Replace the creation timestamp in a MAT-5 file's 116-byte text header, so equal data gives equal bytes."""
    with path.open("r+b") as f:
        f.write(_MAT_HEADER.ljust(116, b" "))


def default_dataset(
    *,
    people: int = DEFAULT_PEOPLE,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    cache_dir: str | Path | None = None,
) -> Path:
    """The cached synthetic dataset a run uses without `--data-dir`, generated on first use.

    Lives in ``<cache>/synthetic-<people>-<seed>-<w>x<h>-v<version>/``. Two processes asking at once are safe: a
    lock file serialises generation where the platform has one, and the finished dataset is renamed into place in
    one step either way, so a reader never sees half of it.
    """
    w, h = (int(v) for v in image_size)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    path = root / f"synthetic-{people}-{seed}-{w}x{h}-v{GENERATOR_VERSION}"
    if (path / MARKER_FILENAME).is_file():
        return path
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the cache directory {root}: {exc.strerror or exc}") from exc
    with _lock(root / f".{path.name}.lock"):
        if (path / MARKER_FILENAME).is_file():
            return path
        if path.exists():  # a leftover from an interrupted older layout: never trusted
            shutil.rmtree(path, ignore_errors=True)
        try:
            generate(path, people=people, seed=seed, image_size=(w, h))
        except DataError:
            if (path / MARKER_FILENAME).is_file():  # lost a race with a process that had no lock
                return path
            raise
    return path


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (a no-op where fcntl is missing; the atomic rename still protects)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:  # a cache folder may be shared: never opened through a link planted at the lock's name
        f = open_append(path)
    except NotAPlainFile as exc:
        raise DataError(f"cannot lock the synthetic dataset's cache: {exc.strerror}") from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
