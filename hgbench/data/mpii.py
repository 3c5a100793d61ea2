"""The `MPIIDataset`: one split of an MPII-format data directory as training samples (protocol.md, exactly).

The annotations are read by `hgbench.data.annotations` (which also knows the directory's layout); the synthetic
generator (`hgbench.data.synthetic`) writes the same layout, so one dataset serves both.

Bad input never passes silently: a missing directory or image, or a corrupt JPEG raises `DataError` with one line
naming it. Images are checked up front for what is cheap to detect (`hgbench.data.jpeg.check_jpeg`: the file exists,
starts with a JPEG start-of-image marker and ends with an end-of-image marker; a truncated file, the common
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

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from hgbench.data.annotations import (
    IMAGES_DIRNAME,
    PersonRecord,
    dataset_name,
    find_annotation_file,
    load_annotations,
    match_ground_truth,
)
from hgbench.data.device_decode import DECODE_MODES
from hgbench.data.groundtruth import GT_FILENAME, GroundTruth, bundled_ground_truth_path, load_ground_truth
from hgbench.data.jpeg import check_jpeg, decode_jpeg_file, read_image_bytes
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
from hgbench.errors import DataError
from hgbench.spec.geometry import HEATMAP_STRIDE, heatmap_res
from hgbench.spec.skeleton import FLIP_INDEX

_FLIP = np.array(FLIP_INDEX, dtype=np.int64)


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
            input_res: side of the square input; heatmaps are `heatmap_res(input_res)` (a quarter of it).
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
        if input_res <= 0 or input_res % HEATMAP_STRIDE:
            raise ValueError(f"input_res must be a positive multiple of {HEATMAP_STRIDE}, got {input_res}")
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
        self.heatmap_res = heatmap_res(self.input_res)
        self.augment = split == "train" if augment is None else bool(augment)
        self.limit = limit
        self.skip_bad_images = skip_bad_images
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.decode = decode
        self.bad_images: list[str] = []
        # Shared memory, so `set_epoch` in the main process reaches persistent DataLoader workers.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

        self._index_people()

    def _index_people(self) -> None:
        """The split's people from the annotation file: the first `limit`, their images checked (the bad ones left out
        with `skip_bad_images`), and each one's position in the split."""
        want_val = self.split == "val"
        self._split_people = [r for r in load_annotations(self.annotation_file) if r.is_val == want_val]
        limit = self.limit
        n = len(self._split_people) if limit is None else max(0, min(int(limit), len(self._split_people)))
        people, positions = self._split_people[:n], list(range(n))
        if people:
            people, positions = self._check_images(people, positions)
        if not people:
            why = f" (limit {limit})" if limit is not None else ""
            why += f" ({len(self.bad_images)} bad images skipped)" if self.bad_images else ""
            raise DataError(f"no {self.split} people in {self.annotation_file}{why}")
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
