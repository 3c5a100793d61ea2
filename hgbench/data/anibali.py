"""anibali/pytorch-stacked-hourglass's validation crop, for ``--convention anibali`` (reproducing its published table).

hgbench crops with one exact affine warp (`hgbench.data.transforms.crop_matrix`). anibali's `utils/transforms.py`
``crop`` does it in whole pixels, and its figures are measured that way, so reproducing them needs its crop:

1. when a 256 crop would shrink the picture 2x or more (``sf = 200 s / 256 >= 2``), the whole image is first resized
   to ``floor(size / sf)`` and the centre and scale divided by ``sf``;
2. the window's corners are its ``transform(..., invert=1)`` of the crop's corners: inverse crop transform of
   ``(-1, -1)`` and ``(res - 1, res - 1)``, truncated toward zero, plus 1 (`crop_window`); the window, padded with
   black where it leaves the image, is resized to ``res x res``;
3. every resize goes through its copy of scipy's ``imresize``: PIL bilinear on uint8, after ``bytescale``, which
   stretches the array's min..max to 0..255 (`bytescale`).

This module restates those rules (no code of theirs) with Pillow for the resizes, as they do. Validation only: no
augmentation. `AnibaliValSet` gives the samples the publisher's evaluation sees: image, adjusted centre and scale
(float32, as its dataset keeps them), split position.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hgbench.data.mpii import MPIIDataset
from hgbench.data.transforms import adjust_center_scale, to_input_tensor
from hgbench.errors import DataError


def bytescale(data: np.ndarray) -> np.ndarray:
    """scipy's old ``bytescale`` as the publisher's ``imresize`` applies it to a float array: min..max to 0..255."""
    data = np.asarray(data, dtype=np.float64)
    lo, hi = float(data.min()), float(data.max())
    span = hi - lo if hi > lo else 1.0
    return (((data - lo) * (255.0 / span)).clip(0, 255) + 0.5).astype(np.uint8)


def imresize(data: np.ndarray, height: int, width: int) -> np.ndarray:
    """The publisher's ``imresize(arr, (height, width))`` of a float [H, W, 3] array in [0, 1]: bytescale, then PIL
    bilinear; uint8 out."""
    from PIL import Image

    img = Image.fromarray(bytescale(data))
    return np.array(img.resize((width, height), resample=Image.Resampling.BILINEAR))  # writable, for torch


def inverse_corner(pt: tuple[float, float], center: np.ndarray, scale: float, res: int) -> np.ndarray:
    """Its ``transform(pt, center, scale, (res, res), invert=1)``: ``trunc(T^-1 (pt - 1)) + 1`` (int64 [2])."""
    side = 200.0 * scale
    p = np.asarray(pt, dtype=np.float64) - 1.0
    x = (p - res / 2.0) * side / res + np.asarray(center, dtype=np.float64)
    return (np.trunc(x) + 1).astype(np.int64)


def crop_window(center: np.ndarray, scale: float, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper-left (inclusive) and bottom-right (exclusive) pixel corners, (x, y), of the window it resizes to
    `res` (in the possibly pre-resized image: see `downscale_factor`)."""
    return inverse_corner((0.0, 0.0), center, scale, res), inverse_corner((res, res), center, scale, res)


def downscale_factor(scale: float, res: int) -> float:
    """Its ``sf``: how much the whole image is shrunk before cropping (1 when under 2)."""
    sf = scale * 200.0 / res
    return 1.0 if sf < 2 else sf


def anibali_crop(image: np.ndarray, center: np.ndarray, scale: float, res: int) -> np.ndarray:
    """The publisher's validation crop (no rotation) of a uint8 [H, W, 3] RGB image: uint8 [res, res, 3]."""
    img = image.astype(np.float64) / 255.0  # its load_image: float in [0, 1]
    center = np.asarray(center, dtype=np.float32).astype(np.float64)  # a float32 tensor there
    ht, wd = img.shape[:2]
    sf = downscale_factor(scale, res)
    if sf != 1.0:
        new_size = math.floor(max(ht, wd) / sf)
        new_ht, new_wd = math.floor(ht / sf), math.floor(wd / sf)
        if new_size < 2:
            return np.zeros((res, res, 3), dtype=np.uint8)
        img = imresize(img, new_ht, new_wd).astype(np.float64)  # uint8 values from here on, as there
        center, scale = center / sf, scale / sf
    ul, br = crop_window(center, scale, res)
    window = np.zeros((br[1] - ul[1], br[0] - ul[0], 3), dtype=np.float64)
    new_x = max(0, -ul[0]), min(br[0], img.shape[1]) - ul[0]
    new_y = max(0, -ul[1]), min(br[1], img.shape[0]) - ul[1]
    old_x = max(0, ul[0]), min(img.shape[1], br[0])
    old_y = max(0, ul[1]), min(img.shape[0], br[1])
    if new_x[1] > new_x[0] and new_y[1] > new_y[0]:
        window[new_y[0] : new_y[1], new_x[0] : new_x[1]] = img[old_y[0] : old_y[1], old_x[0] : old_x[1]]
    return imresize(window, res, res)


def load_rgb(path: Path) -> np.ndarray:
    """Decode with Pillow, as the publisher does (its ``imread(..., mode='RGB')``)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from None


class AnibaliValSet(Dataset):
    """The val people of an `MPIIDataset` as the publisher's evaluation crops them (see the module docstring)."""

    def __init__(self, val: MPIIDataset) -> None:
        if val.split != "val":
            raise ValueError("AnibaliValSet wraps a val split")
        self.val = val

    def __len__(self) -> int:
        return len(self.val)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rec = self.val.people[i]
        c, s = adjust_center_scale(rec.center, rec.scale)
        center = np.asarray(c, dtype=np.float32)
        crop = anibali_crop(load_rgb(self.val.image_path(i)), center, s, self.val.input_res)
        return {
            "image": to_input_tensor(crop),
            "center": torch.from_numpy(center),
            "scale": torch.tensor(s, dtype=torch.float64),
            "index": torch.tensor(self.val.position(i), dtype=torch.int64),
        }
