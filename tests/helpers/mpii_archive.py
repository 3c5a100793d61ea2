"""Archives laid out as MPII's image archive, for the `hgbench data mpii` tests: a good one, a gzip bomb, a broken one.

A gzip bomb here is honest about its sizes: each member's tar header declares the bytes it inflates to (zeros, so
a few megabytes compress to a few kilobytes), which is what extraction must add up before writing.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

ARCHIVE_NAME = "mpii_human_pose_v1.tar.gz"


def sha(path: Path) -> str:
    """A file's SHA-256, hex: what a download or an extraction must leave unchanged."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_archive(images_from: Path, out: Path) -> Path:
    """A tar.gz laid out as MPII's: ``images/<name>.jpg`` (plus a file outside images/ that is not extracted)."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(images_from / "images", arcname="images")
        readme = b"not an image"
        info = tarfile.TarInfo("README.txt")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return out


class _Zeros(io.RawIOBase):
    """`n` zero bytes, read without holding them all."""

    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


def make_bomb(out: Path, sizes: list[int]) -> Path:
    """A tar.gz whose ``images/`` holds members of `sizes` zero bytes each (``images/bomb00.jpg``, ...)."""
    with tarfile.open(out, "w:gz", compresslevel=9) as tar:
        folder = tarfile.TarInfo("images")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for i, size in enumerate(sizes):
            info = tarfile.TarInfo(f"images/bomb{i:02d}.jpg")
            info.size = size
            tar.addfile(info, io.BufferedReader(_Zeros(size)))
    return out


def data_folder(root: Path, synthetic_root: Path) -> Path:
    """An empty data folder holding only the synthetic dataset's annotation file."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(synthetic_root / "mpii_annotations.json", root)
    return root


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of the file (negative `offset`: from the end)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
