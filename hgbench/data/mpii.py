"""MPII annotations and the `MPIIDataset` that turns them into training samples (protocol.md, exactly).

A data directory holds `images/*.jpg` and `mpii_annotations.json` (or `.json.gz`): the annotation file of the PyTorch
hourglass code, one entry per person, split by `isValidation` (22,246 train / 2,958 val). When only the images are
there, the copy bundled in `hgbench/assets` is used. The synthetic generator (`hgbench.data.synthetic`) writes the same
layout plus a `dataset.json` marker, so one loader serves both.

Bad input never passes silently: a missing directory, image or field, a file that is not JSON, or a corrupt JPEG
raises `DataError` with one line naming it. Images are checked up front for what is cheap to detect (the file
exists, starts with a JPEG start-of-image marker and ends with an end-of-image marker; a truncated file, the common
corruption, fails the last check and is then confirmed by a full decode). With ``skip_bad_images=True`` those images
are left out and listed in `bad_images`. A corruption the cheap check cannot see surfaces when the sample is decoded:
then the sample comes back blank with zero loss weight and ``"bad": True``, keeping the batch shape and the order the
evaluator relies on; `collect_bad(batch)` records its file in the main process (DataLoader workers hold copies of the
dataset, so a list kept in a worker would never reach the run record).

Augmentation randomness comes from a generator seeded by (seed, epoch, position in the split), never from a
process-global RNG: a sample is the same whichever worker makes it and in whichever order, so a resumed run sees the
same data. `set_epoch` writes the epoch into a shared-memory tensor that persistent workers see too.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from hgbench.data.device_decode import DECODE_MODES
from hgbench.data.jpeg import decode_jpeg_bytes, read_image_bytes
from hgbench.data.transforms import (
    NO_AUGMENTATION,
    adjust_center_scale,
    apply_affine,
    crop_matrix,
    draw_gaussians,
    heatmap_matrix,
    sample_augmentation,
    to_input_tensor,
    warp_image,
)
from hgbench.errors import DataError, one_line
from hgbench.groundtruth import GT_FILENAME, GroundTruth, bundled_ground_truth_path, load_ground_truth
from hgbench.skeleton import FLIP_INDEX, NUM_JOINTS

ANNOTATION_FILENAMES: tuple[str, ...] = ("mpii_annotations.json", "mpii_annotations.json.gz")
IMAGES_DIRNAME = "images"
MARKER_FILENAME = "dataset.json"  # written beside the annotations by the synthetic generator
GT_TOLERANCE_PX = 0.01  # annotation vs ground-truth joints (they agree to 0.0005 px in the real files)

_FLIP = np.array(FLIP_INDEX, dtype=np.int64)
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_TAIL_BYTES = 1024  # where the end-of-image marker is looked for (a few encoders pad after it)


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


def check_jpeg(path: Path) -> str | None:
    """Cheap structural check of one JPEG: None if it looks whole, else the reason (one line).

    Reads two bytes at the start and the last kilobyte. A file without an end-of-image marker is only condemned
    after a full decode fails, so a valid file with padding after its marker is never rejected.
    """
    try:
        with path.open("rb") as f:
            head = f.read(2)
            size = f.seek(0, 2)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if size == 0:
        return "empty file"
    if head != _JPEG_SOI:
        return "not a JPEG file (no start-of-image marker)"
    if _JPEG_EOI not in tail:
        try:
            decode_jpeg_file(path)
        except DataError as exc:
            return str(exc)
    return None


def decode_jpeg_file(path: Path) -> np.ndarray:
    """Decode a JPEG file to an [H, W, 3] uint8 RGB array on the CPU.

    Raises:
        DataError: the file cannot be read or decoded; the message is the reason only (callers add the file).
    """
    img = decode_jpeg_bytes(read_image_bytes(path), torch.device("cpu"))
    # decode_jpeg returns a CHW view of HWC memory, so this permute is free and already C-contiguous.
    return np.ascontiguousarray(img.permute(1, 2, 0).numpy())


def dataset_name(annotation_file: Path) -> str:
    """The dataset's name: "synthetic" when a synthetic-dataset marker sits beside the annotation file, else "mpii"."""
    marker = annotation_file.parent / MARKER_FILENAME
    try:
        return "synthetic" if json.loads(marker.read_text()).get("name") == "synthetic" else "mpii"
    except (OSError, ValueError, AttributeError):
        return "mpii"


class MPIIDataset(Dataset):
    """One split of an MPII-format data directory as training / validation samples.

    Attributes:
        name: "mpii" or "synthetic".
        root: the data directory.
        split: "train" or "val".
        people: the split's people in file order (val order = `detections_our_format.mat` order), first `limit`
            only, without those whose image was found bad (with ``skip_bad_images``).
        bad_images: images left out or blanked as corrupt, as "images/<name>" (only with ``skip_bad_images``).
    """

    def __init__(
        self,
        root: str | Path,
        split: Literal["train", "val"],
        *,
        input_res: int = 256,
        augment: bool | None = None,
        limit: int | None = None,
        skip_bad_images: bool = False,
        annotation_file: str | Path | None = None,
        sigma: float = 1.0,
        seed: int = 0,
        decode: Literal["workers", "device"] = "workers",
    ) -> None:
        """Index a split and check its images.

        Args:
            root: data directory holding `images/` and (optionally) the annotation file.
            split: "train" or "val".
            input_res: side of the square input; heatmaps are ``input_res // 4``.
            augment: apply the training augmentation; default: ``split == "train"``.
            limit: keep only the first `limit` people of the split.
            skip_bad_images: leave corrupt images out (listed in `bad_images`) instead of raising. A missing image
                always raises: it usually means the wrong directory, not a damaged file.
            annotation_file: use this file instead of the one `find_annotation_file` picks.
            sigma: Gaussian sigma of the targets, in heatmap pixels.
            seed: seeds the augmentation (with the epoch and the sample's position).
            decode: "workers" decodes and crops in `__getitem__`; "device" leaves both to
                `hgbench.data.device_decode.DeviceDecodeLoader` (samples then carry the encoded JPEG and the crop
                matrix instead of the image).

        Raises:
            DataError: missing directory, annotation file or image; invalid annotations; a corrupt image (unless
                `skip_bad_images`); no people left.
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        if input_res <= 0 or input_res % 4:
            raise ValueError(f"input_res must be a positive multiple of 4, got {input_res}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"data directory not found: {self.root}")
        self.images_dir = self.root / IMAGES_DIRNAME
        if not self.images_dir.is_dir():
            raise DataError(f"images directory not found: {self.images_dir} (a data directory holds images/*.jpg)")
        self.annotation_file = Path(annotation_file) if annotation_file else find_annotation_file(self.root)
        self.name = dataset_name(self.annotation_file)
        self.split = split
        self.input_res = int(input_res)
        self.heatmap_res = self.input_res // 4
        self.augment = split == "train" if augment is None else bool(augment)
        self.limit = limit
        self.skip_bad_images = skip_bad_images
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.decode = decode
        self.bad_images: list[str] = []
        # Shared memory, so `set_epoch` in the main process reaches persistent DataLoader workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

        want_val = split == "val"
        self._split_people = [r for r in load_annotations(self.annotation_file) if r.is_val == want_val]
        n = len(self._split_people) if limit is None else max(0, min(int(limit), len(self._split_people)))
        people, positions = self._split_people[:n], list(range(n))
        if people:
            people, positions = self._check_images(people, positions)
        if not people:
            why = f" (limit {limit})" if limit is not None else ""
            why += f" ({len(self.bad_images)} bad images skipped)" if self.bad_images else ""
            raise DataError(f"no {split} people in {self.annotation_file}{why}")
        self.people: list[PersonRecord] = people
        self._positions = np.asarray(positions, dtype=np.int64)
        self._fingerprint: str | None = None

    # --- checks ------------------------------------------------------------------------------------------------
    def _check_images(self, people: list[PersonRecord], positions: list[int]) -> tuple[list[PersonRecord], list[int]]:
        """Stat every image once; drop or reject the corrupt ones (see the module docstring)."""
        names = list(dict.fromkeys(p.image for p in people))
        missing = [n for n in names if not (self.images_dir / n).is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more of the {self.split} split's images)" if len(missing) > 1 else ""
            raise DataError(f"image not found: {self.images_dir / missing[0]}{more}")
        bad = {}
        for n in names:
            reason = check_jpeg(self.images_dir / n)
            if reason is not None:
                if not self.skip_bad_images:
                    raise DataError(self.corrupt_message(n, reason))
                bad[n] = reason
        if not bad:
            return people, positions
        self.bad_images.extend(f"{IMAGES_DIRNAME}/{n}" for n in bad)
        kept = [(p, i) for p, i in zip(people, positions, strict=True) if p.image not in bad]
        return [p for p, _ in kept], [i for _, i in kept]

    def corrupt_message(self, image: str, reason: str) -> str:
        """The one-line error for a corrupt image of this dataset (also raised by the device decoder)."""
        return f"corrupt image {self.images_dir / image}: {reason}; pass --skip-bad-images to skip it"

    # --- Dataset protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.people)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of `epoch` (call before iterating, as `DistributedSampler.set_epoch`)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def position(self, i: int) -> int:
        """Position in the split (before `limit` and skipping) of the i-th person of `people`."""
        return int(self._positions[i])

    def indices_of(self, positions: np.ndarray | list[int]) -> np.ndarray:
        """Indices into `people` of split positions (a sample's "index"); they differ once images were skipped.

        Raises:
            ValueError: a position that is not one of this dataset's people.
        """
        pos = np.asarray(positions, dtype=np.int64)
        idx = np.searchsorted(self._positions, pos)
        if pos.size and (idx.max() >= len(self._positions) or not np.array_equal(self._positions[idx], pos)):
            raise ValueError("positions that are not among this dataset's people")
        return idx

    def image_path(self, i: int) -> Path:
        return self.images_dir / self.people[i].image

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """One sample.

        Keys: image [3, R, R] float32 (RGB in [0, 1] after colour gain, minus the mean); gain [3] (the colour gain,
        already applied to image); target [16, R/4, R/4] float32; target_weight [16] float32 (visible x drawn);
        center [2] (adjusted, before augmentation); scale [] (adjusted and augmented: the crop's); rotation []
        degrees; flip [] bool; index [] int64 (position in the split); joints [16, 3] (original-image x, y,
        visible); bad [] bool (image undecodable: blank, weight 0).
        With decode="device", image is replaced by jpeg (the file's bytes, 1-D uint8), matrix [2, 3] float64 (image
        to crop) and image_name (str); collate those with `hgbench.data.device_decode.collate`.
        """
        rec = self.people[i]
        pos = int(self._positions[i])
        center, scale = adjust_center_scale(rec.center, rec.scale)
        if self.augment:
            aug = sample_augmentation(np.random.default_rng([self.seed, int(self._epoch), pos]))
        else:
            aug = NO_AUGMENTATION
        crop_scale = scale * aug.scale_factor
        r = self.input_res
        to_crop = crop_matrix(center, crop_scale, aug.rotation, r, flip=aug.flip)
        pixels, bad = self._pixels(rec.image, to_crop, aug.gain)

        joints = rec.joints
        order = _FLIP if aug.flip else slice(None)  # joint j of the mirror is joint FLIP_INDEX[j] of the original
        pts = joints[order, :2]
        visible = joints[order, 2] > 0
        annotated = rec.annotated[order]
        hm = apply_affine(pts, heatmap_matrix(center, crop_scale, aug.rotation, r, self.heatmap_res, flip=aug.flip))
        target, drawn = draw_gaussians(hm, annotated, self.heatmap_res, self.sigma)
        weight = (visible & drawn).astype(np.float32)
        if bad:
            weight[:] = 0.0
        return {
            **pixels,
            "gain": torch.tensor(aug.gain, dtype=torch.float32),
            "target": torch.from_numpy(target),
            "target_weight": torch.from_numpy(weight),
            "center": torch.tensor(center, dtype=torch.float32),
            "scale": torch.tensor(crop_scale, dtype=torch.float32),
            "rotation": torch.tensor(aug.rotation, dtype=torch.float32),
            "flip": torch.tensor(aug.flip),
            "index": torch.tensor(pos, dtype=torch.int64),
            "joints": torch.tensor(joints, dtype=torch.float32),
            "bad": torch.tensor(bad),
        }

    def _pixels(
        self, image: str, to_crop: np.ndarray, gain: tuple[float, float, float]
    ) -> tuple[dict[str, object], bool]:
        """The sample's picture: the finished crop (decode="workers") or what the device needs to make it.

        Returns:
            The sample keys ({"image"}, or {"jpeg", "matrix", "image_name"}) and whether the image was found bad
            (only with `skip_bad_images`; the crop is then black).
        """
        on_device = self.decode == "device"
        path = self.images_dir / image
        try:
            data = read_image_bytes(path) if on_device else decode_jpeg_file(path)
            bad = False
        except DataError as exc:
            if not self.skip_bad_images:
                raise DataError(self.corrupt_message(image, str(exc))) from None
            data, bad = None, True
        if on_device:
            jpeg = torch.zeros(0, dtype=torch.uint8) if data is None else data  # empty: the decoder reports it bad
            return {"jpeg": jpeg, "matrix": torch.from_numpy(to_crop), "image_name": image}, bad
        r = self.input_res
        crop = np.zeros((r, r, 3), dtype=np.uint8) if data is None else warp_image(data, to_crop, r)
        return {"image": to_input_tensor(crop, gain)}, bad

    def collect_bad(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """Record in `bad_images` the images a batch had to blank (call in the main process); returns the new ones."""
        if "bad" not in batch or not bool(batch["bad"].any()):
            return []
        by_pos = {int(p): rec for p, rec in zip(self._positions, self.people, strict=True)}
        new = []
        for pos in batch["index"][batch["bad"]].tolist():
            name = f"{IMAGES_DIRNAME}/{by_pos[int(pos)].image}"
            if name not in self.bad_images:
                self.bad_images.append(name)
                new.append(name)
        return new

    # --- evaluation metadata --------------------------------------------------------------------------------
    def ground_truth(self) -> GroundTruth:
        """The validation ground truth of `people`, in order.

        Synthetic data reads `root/detections_our_format.mat`; real MPII reads it from `root` if present, else the
        bundled copy. Every val person is matched to its ground-truth entry (missing joints the same, others within
        0.01 px, except where the ground truth zeroed a coordinate, as the real file does for 13 joints; the values
        returned are the ground truth's, as the common evaluators use them). An annotation file holding a subset of
        the val people in order (such as the 7-image sample, which holds the first five) is matched to that
        subsequence.

        Raises:
            DataError: the ground truth is missing, or does not hold the same people in the same order.
        """
        if self.split != "val":
            raise ValueError("ground truth is defined for the val split only")
        path = self.root / GT_FILENAME
        if not path.is_file():
            if self.name == "synthetic":
                raise DataError(f"ground-truth file not found: {path} (regenerate the synthetic dataset)")
            path = bundled_ground_truth_path()
        gt = load_ground_truth(path)
        needed = int(self._positions.max()) + 1
        match = match_ground_truth(self._split_people[:needed], gt, gt_path=path, ann_path=self.annotation_file)
        return gt.subset(match[self._positions])

    def fingerprint(self) -> str:
        """sha256[:16] of the annotation file's bytes, the split and the limit."""
        if self._fingerprint is None:
            h = hashlib.sha256(self.annotation_file.read_bytes())
            h.update(f"|split={self.split}|limit={self.limit}".encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


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
