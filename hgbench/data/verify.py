"""Checking a real MPII folder: every image the annotation file names exists, decodes and has its annotated size.

`verify_images` checks them in parallel threads (the JPEG decoder releases the GIL) with a progress bar on a terminal.
A clean result writes a small marker (`MARKER_NAME`) that pins what was verified: the annotation file's SHA-256, the
image count, and a digest of every annotated image's name, size and modification time (`images_digest`, a
``stat`` per image: a fraction of a second for MPII's 25,000). `hgbench data mpii DIR` later trusts the marker
only when all three still match, so a folder emptied, an image replaced or touched since, or another annotation file
makes the images decoded again; the marker never says more than "these very files decoded once". It is read
without following a link or blocking on a FIFO, and bounded in size (`hgbench.data.dir_files`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hgbench.data.annotations import IMAGES_DIRNAME, find_annotation_file, load_annotations
from hgbench.data.jpeg import check_jpeg, decode_jpeg_file
from hgbench.errors import DataError
from hgbench.files.atomic_io import write_json_atomic
from hgbench.files.bounded_read import read_json

MARKER_NAME = ".hgbench-verified.json"
_MARKER_LIMIT = 64 << 10  # the marker is a few hundred bytes; a larger file is not one hgbench wrote
_SHOWN = 10  # problems listed by name; the rest are counted


@dataclass
class VerifyReport:
    """What a verification found; `ok` when nothing is missing or corrupt."""

    data_dir: Path
    annotation_file: Path
    images: int  # distinct images the annotation file names
    missing: list[str] = field(default_factory=list)  # names relative to images/
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    from_marker: bool = False  # True: a valid marker said so; nothing was decoded

    @property
    def ok(self) -> bool:
        return not self.missing and not self.corrupt

    def summary(self) -> str:
        """One line: ``24,984 images, 0 missing, 0 corrupt``."""
        return f"{self.images:,} images, {len(self.missing):,} missing, {len(self.corrupt):,} corrupt"

    def lines(self, fix: str) -> list[str]:
        """The summary, then what is wrong (the first few of each kind by name) and `fix`, the command that fixes it."""
        out = [self.summary() + (" (verified before; marker " + MARKER_NAME + ")" if self.from_marker else "")]
        images = self.data_dir / IMAGES_DIRNAME
        for name in self.missing[:_SHOWN]:
            out.append(f"  missing: {images / name}")
        if len(self.missing) > _SHOWN:
            out.append(f"  ... and {len(self.missing) - _SHOWN:,} more missing")
        for name, reason in self.corrupt[:_SHOWN]:
            out.append(f"  corrupt: {images / name}: {reason}")
        if len(self.corrupt) > _SHOWN:
            out.append(f"  ... and {len(self.corrupt) - _SHOWN:,} more corrupt")
        if not self.ok:
            out.append(f"to fix: {fix}")
        return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_sizes(annotation_file: Path) -> dict[str, tuple[int, int]]:
    """Each distinct image the annotation file names, with its annotated (width, height), in file order."""
    sizes: dict[str, tuple[int, int]] = {}
    for rec in load_annotations(annotation_file):
        sizes.setdefault(rec.image, (rec.width, rec.height))
    return sizes


def check_image(path: Path, size: tuple[int, int]) -> str | None:
    """None when the image exists, decodes in full and has the annotated size; else why not (``missing`` if absent)."""
    if not path.is_file():
        return "missing"
    reason = check_jpeg(path)
    if reason is not None:
        return reason
    try:
        pixels = decode_jpeg_file(path)
    except DataError as exc:
        return str(exc)
    height, width = pixels.shape[:2]
    if (width, height) != size:
        return f"{width}x{height} pixels, the annotation says {size[0]}x{size[1]}"
    return None


def images_digest(images_dir: Path, names: list[str]) -> str | None:
    """SHA-256 over each image's name, size and modification time (ns), in `names`' order; None when one is missing
    or unreadable (a marker then counts for nothing)."""
    digest = hashlib.sha256()
    for name in names:
        try:
            st = (images_dir / name).stat()
        except (OSError, ValueError):  # gone, a name the filesystem refuses
            return None
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def read_marker(data_dir: Path, annotation_file: Path, names: list[str]) -> int | None:
    """The image count of a marker that still describes this folder (the same annotation file, image count and image
    names, sizes and times); None without one."""
    try:
        marker = read_json(data_dir / MARKER_NAME, limit=_MARKER_LIMIT, follow_links=False)
    except (OSError, ValueError):  # missing, a link or FIFO, too large, not JSON
        return None
    if not isinstance(marker, dict) or marker.get("annotation_sha256") != file_sha256(annotation_file):
        return None
    if marker.get("images") != len(names) or isinstance(marker.get("images"), bool):
        return None
    if marker.get("images_digest") != images_digest(data_dir / IMAGES_DIRNAME, names):
        return None
    return len(names)


def write_marker(report: VerifyReport, names: list[str], digest: str | None) -> Path | None:
    """Write the marker of a clean report; `digest` is `images_digest` taken before the images were decoded, so a
    file changed during the check leaves no marker. None when nothing was written."""
    if digest is None or digest != images_digest(report.data_dir / IMAGES_DIRNAME, names):
        return None
    path = report.data_dir / MARKER_NAME
    body = {
        "annotation_file": str(report.annotation_file),
        "annotation_sha256": file_sha256(report.annotation_file),
        "images": report.images,
        "images_digest": digest,
        "missing": 0,
        "corrupt": 0,
    }
    write_json_atomic(path, body)
    return path


def verify_images(
    data_dir: str | Path,
    *,
    use_marker: bool = False,
    workers: int | None = None,
    progress: bool | None = None,
    on_step: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check every image the data directory's annotation file names (its own, or the bundled copy).

    Args:
        use_marker: trust a marker that still describes the folder (`read_marker`) instead of decoding again.
        workers: threads (default: the CPU count).
        progress: show a progress bar (default: when stderr is a terminal).
        on_step: called with the number of images checked so far (tests, other front ends).

    Returns:
        The report; a clean one has written the marker.

    Raises:
        DataError: no such directory, no annotation file and no images/ folder, or an unreadable annotation file.
    """
    root = Path(data_dir).expanduser()
    annotation_file = find_annotation_file(root)
    sizes = image_sizes(annotation_file)
    names = list(sizes)
    if use_marker:
        count = read_marker(root, annotation_file, names)
        if count is not None:
            return VerifyReport(root, annotation_file, count, from_marker=True)
    images_dir = root / IMAGES_DIRNAME
    before = images_digest(images_dir, names)
    results: list[str | None] = [None] * len(names)
    show = sys.stderr.isatty() if progress is None else progress
    bar, task = None, None
    if show:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        bar.start()
        task = bar.add_task("verify", total=len(names))
    try:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for i, reason in enumerate(pool.map(lambda n: check_image(images_dir / n, sizes[n]), names)):
                results[i] = reason
                if bar is not None and (i % 64 == 0 or i == len(names) - 1):
                    bar.update(task, completed=i + 1)
                if on_step is not None:
                    on_step(i + 1)
    finally:
        if bar is not None:
            bar.stop()
    report = VerifyReport(root, annotation_file, len(names))
    for name, reason in zip(names, results, strict=True):
        if reason == "missing":
            report.missing.append(name)
        elif reason is not None:
            report.corrupt.append((name, reason))
    if report.ok:
        write_marker(report, names, before)
    return report
