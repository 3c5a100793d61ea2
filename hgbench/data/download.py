"""Getting the MPII images onto disk: a resumable download and an extraction that never leaves a half folder behind.

- `download` streams a URL into ``<dest>.part`` and renames it to `dest` only when every byte arrived. Run again, it
  asks the server for the rest (an HTTP ``Range`` request) and appends; a server that ignores ``Range`` sends the
  whole file, which then replaces the partial one. A network failure is a `DownloadError` (one line ending in "run
  the same command again to resume"); the partial file stays for that.
- `extract_images` unpacks the archive's ``images/`` into a hidden temporary folder inside the data directory and
  renames it to ``images/`` at the end, so an interrupted or failed extraction leaves no ``images/`` that looks
  complete. Members are extracted with tarfile's ``data`` filter (no absolute paths, no links out of the folder).
- `check_room` refuses, before anything is written, when the disk lacks room for what is still to come.

Progress (bytes, rate, time left) is a rich bar on a terminal; logs and pipes get one line at the start and the end.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from hgbench.data.annotations import IMAGES_DIRNAME
from hgbench.errors import DataError, HGBenchError, one_line

# The MPII Human Pose site's image archive (http://human-pose.mpi-inf.mpg.de/#download, "Images (12.9 GB)").
MPII_IMAGES_URL = "https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz"
MPII_ARCHIVE_NAME = "mpii_human_pose_v1.tar.gz"
MPII_ARCHIVE_BYTES = 12_900_000_000  # about; the disk check uses the server's size when it gives one
ROOM_MARGIN_BYTES = 256 << 20  # left free beyond the estimate, for the file system's own needs
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


class DownloadError(HGBenchError):
    """The network failed mid-download; the partial file is kept so the same command resumes."""


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def check_room(folder: Path, needed: int, what: str) -> None:
    """Raise one line when `folder`'s disk has less than `needed` bytes (plus a margin) free."""
    free = shutil.disk_usage(folder).free
    if free < needed + ROOM_MARGIN_BYTES:
        raise HGBenchError(
            f"not enough disk space in {folder} for {what}: {_gb(needed)} needed, {_gb(free)} free; free some "
            "space or choose another folder"
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


@contextlib.contextmanager
def byte_progress(label: str, total: int | None, done: int = 0, *, show: bool | None = None) -> Iterator:
    """A function to call with the bytes done so far: a rich bar (bytes, rate, time left) on a terminal, else a
    line at the start and the end on stderr."""
    show = sys.stderr.isatty() if show is None else show
    if not show:
        print(f"hgbench: {label}" + (f" ({_gb(total)})" if total else ""), file=sys.stderr)
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n: bar.update(task, completed=n)


def _network_error(url: str, have: int, total: int | None, exc: BaseException) -> DownloadError:
    got = f"{_gb(have)} of {_gb(total)}" if total else _gb(have)
    return DownloadError(f"download of {url} stopped at {got} ({one_line(exc)}); run the same command again to resume")


def download(
    url: str,
    dest: Path,
    *,
    expected_bytes: int | None = None,
    room_to_extract: bool = False,
    progress: bool | None = None,
) -> Path:
    """Download `url` to `dest`, resuming a ``<dest>.part`` left by an earlier try.

    Args:
        expected_bytes: the file's size when the server does not say (for the disk check only).
        room_to_extract: also count, in the disk check, room for extracting the file (about its size: JPEGs do not
            compress).

    Returns:
        `dest`, complete.

    Raises:
        DownloadError: the network failed or the server sent fewer bytes than it announced (partial file kept).
        HGBenchError: the server refused (HTTP error), or the disk lacks room (checked before any byte is written).
    """
    part = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "hgbench"}
    if have:
        headers["Range"] = f"bytes={have}-"
    total: int | None = None
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: an earlier try got every byte but stopped before renaming
            part.replace(dest)
            return dest
        raise HGBenchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _network_error(url, have, None, exc) from None
    with response:
        length = response.headers.get("Content-Length")
        if have and response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != have:
                raise HGBenchError(f"{url}: the server resumed at byte {start}, not {have}; delete {part} and retry")
            mode = "ab"
        else:  # a fresh download, or a server that ignores Range and sends everything again
            have, mode = 0, "wb"
        total = have + int(length) if length is not None else expected_bytes
        needed = max(0, (total or 0) - have) + ((total or 0) if room_to_extract else 0)
        check_room(dest.parent, needed, f"{dest.name}" + (" and its extraction" if room_to_extract else ""))
        # Disk errors (a full disk) propagate as OSError, which the CLI prints as one line; only reading from the
        # network is a network error.
        with part.open(mode) as f, byte_progress(f"downloading {dest.name}", total, have, show=progress) as step:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # reset, timeout, incomplete read
                    raise _network_error(url, have, total, exc) from None
                if not chunk:
                    break
                f.write(chunk)
                have += len(chunk)
                step(have)
    if length is not None and total is not None and have < total:
        raise _network_error(url, have, total, ConnectionError("the server closed the connection early"))
    part.replace(dest)
    return dest


def _range_start(content_range: str | None) -> int | None:
    """The first byte of ``Content-Range: bytes START-END/TOTAL``."""
    try:
        return int(str(content_range).split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


class _CountingReader:
    """A file wrapper that reports how many bytes were read (the archive's compressed bytes, for the bar)."""

    def __init__(self, f: BinaryIO, step) -> None:
        self._f, self._step, self.count = f, step, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        self._step(self.count)
        return data


def extracting_dir(data_dir: Path) -> Path:
    return data_dir / f".{IMAGES_DIRNAME}.extracting"


def extract_images(archive: Path, data_dir: Path, *, progress: bool | None = None) -> Path:
    """Unpack the archive's ``images/`` into ``data_dir/images``, atomically (see the module docstring).

    Returns:
        ``data_dir/images``.

    Raises:
        DataError: the archive is missing, damaged or holds no ``images/`` folder (one line; nothing left behind);
            ``images/`` exists already.
    """
    final = data_dir / IMAGES_DIRNAME
    if final.exists():
        raise DataError(f"{final} exists already; check it with: hgbench data mpii {data_dir} --verify")
    if not archive.is_file():
        raise DataError(f"archive not found: {archive}")
    data_dir.mkdir(parents=True, exist_ok=True)
    size = archive.stat().st_size
    check_room(data_dir, size, f"the images of {archive.name}")  # JPEGs do not compress: about the archive's size
    tmp = extracting_dir(data_dir)
    shutil.rmtree(tmp, ignore_errors=True)  # what an interrupted extraction left
    tmp.mkdir()
    try:
        with archive.open("rb") as raw, byte_progress(f"extracting {archive.name}", size, show=progress) as step:
            with tarfile.open(fileobj=_CountingReader(raw, step), mode="r|gz") as tar:  # type: ignore[arg-type]
                for member in tar:
                    top = member.name.lstrip("./").split("/", 1)[0]
                    if top != IMAGES_DIRNAME or not (member.isfile() or member.isdir()):
                        continue  # only the images; the archive holds nothing else we need
                    tar.extract(member, tmp, filter="data")
        if not (tmp / IMAGES_DIRNAME).is_dir():
            raise DataError(f"archive {archive} holds no {IMAGES_DIRNAME}/ folder: is it {MPII_ARCHIVE_NAME}?")
        (tmp / IMAGES_DIRNAME).replace(final)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:  # the archive; any other OSError is
        shutil.rmtree(tmp, ignore_errors=True)  # the disk (full, permissions), printed by the CLI as one line
        raise DataError(
            f"archive {archive} is damaged ({one_line(exc)}); delete it and run the command again to download it anew"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return final
