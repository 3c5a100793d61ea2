"""JPEG files to RGB pixels with `torchvision.io.decode_jpeg`, on the CPU or a GPU (nvjpeg), failures as one line;
and the cheap structural check the dataset runs on every image up front (`check_jpeg`).

Both input pipelines use it: the workers decode one image at a time on the CPU (`hgbench.data.mpii`), the device
path a whole batch at once (`hgbench.data.device_decode`). torchvision raises on truncated data, which
`cv2.imread` would hide behind a grey fill (environment.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from hgbench.errors import DataError, one_line

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_TAIL_BYTES = 1024  # where the end-of-image marker is looked for (a few encoders pad after it)


def read_image_bytes(path: Path) -> torch.Tensor:
    """A file's bytes as the 1-D uint8 tensor `decode_jpeg` takes.

    Raises:
        DataError: the file cannot be read; the message is the reason only (callers add the file).
    """
    try:
        return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    except OSError as exc:
        raise DataError(f"cannot read it ({exc.strerror or exc})") from exc


def decode_jpeg_bytes(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Decode one encoded JPEG to a [3, H, W] uint8 RGB tensor on `device`.

    Raises:
        DataError: the data is not a decodable JPEG; the message is the reason only (callers add the file).
    """
    try:
        return _decode([data], device)[0]
    except (RuntimeError, ValueError) as exc:
        reason = one_line(exc)
        if reason.startswith("decode_jpeg, "):  # "decode_jpeg, <C++ source>:<line>, <reason>": keep the reason
            reason = reason.split(", ", 2)[-1]
        raise DataError(f"the JPEG decoder says: {reason}") from exc


def decode_jpegs(jpegs: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | str]:
    """Decode encoded JPEGs to [3, H, W] uint8 RGB tensors on `device`, in one batched call.

    The batched decoder returns nothing when one image fails, so after a failure each image is decoded alone to tell
    the good from the bad.

    Returns:
        Per image, the decoded tensor, or a one-line reason (str) when it could not be decoded.
    """
    try:
        return _decode(list(jpegs), device)
    except (RuntimeError, ValueError):
        pass
    out: list[torch.Tensor | str] = []
    for data in jpegs:
        try:
            out.append(decode_jpeg_bytes(data, device))
        except DataError as exc:
            out.append(str(exc))
    return out


def _decode(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    if any(j.numel() == 0 for j in jpegs):
        raise ValueError("empty file")
    # torchvision 0.29 deprecates its codecs in favour of TorchCodec (not a dependency) and warns on every call;
    # decode_jpeg is still the decoder that detects truncated files (environment.md), so silence that notice.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        images = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
    # A grey JPEG may come back with one channel from decoders that ignore the RGB request.
    return [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in images]


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
