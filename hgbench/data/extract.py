"""Unpacking the MPII archive's ``images/``: never a half folder, never past the disk's room, never an unchecked file.

`extract_images` unpacks into a fresh hidden folder inside the data directory (``O_EXCL``-like `tempfile.mkdtemp`,
mode 0700, so nobody else can plant a link in it) and renames its ``images/`` to ``DIR/images`` only at the end, so
an interrupted or failed extraction leaves no ``images/`` that looks complete. Members are extracted with tarfile's
``data`` filter (no absolute paths, no links out of the folder), and only ``images/``'s files and folders.

A tar header gives each member's size before its data, so the sizes are added up as they come against the room the
disk had when extraction began (`hgbench.data.disk_room.RoomBudget`): a gzip bomb stops at the first member that
would not fit, with one line naming it, before a byte of it is written. The archive is read through Python's `gzip`
module, which checks each gzip member's trailer (CRC32 and length) when it reaches it; tarfile stops at the tar
end-of-archive blocks, so the rest of the stream is read too, and extraction counts as done only when the trailer
matched. `gzip_problem` runs the same check alone (a download whose length the server never gave).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

from hgbench.data.annotations import IMAGES_DIRNAME
from hgbench.data.dir_files import NotARegularFile, kind_of, lstat_or_none, open_regular_for_reading
from hgbench.data.disk_room import RoomBudget, check_room
from hgbench.data.download import MPII_ARCHIVE_NAME, byte_progress
from hgbench.errors import DataError, HGBenchError, one_line

EXTRACTING_PREFIX = f".{IMAGES_DIRNAME}.extracting"  # the hidden folders extraction works in (one per call)
_CHUNK = 1 << 20
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


class ArchiveDamaged(DataError):
    """The archive is truncated, corrupt or not a tar.gz; nothing was extracted. The caller adds what to do."""


class _CountingReader:
    """A file wrapper that reports how many bytes were read (the archive's compressed bytes, for the bar)."""

    def __init__(self, f: BinaryIO, step) -> None:
        self._f, self._step, self.count = f, step, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        self._step(self.count)
        return data


def images_folder_problem(data_dir: Path) -> str | None:
    """Why ``DIR/images`` cannot be where extraction puts the images (something else has its name); None if free or
    a folder."""
    images = data_dir / IMAGES_DIRNAME
    found = lstat_or_none(images)
    if found is None or images.is_dir():
        return None
    what = kind_of(found.st_mode)
    if stat.S_ISLNK(found.st_mode):
        what = "a symbolic link that does not lead to a folder"
    elif stat.S_ISREG(found.st_mode):
        what = "a file"
    return f"{images} is {what}, not a folder of images; move it away (hgbench puts the images there)"


def remove_stale_extractions(data_dir: Path) -> None:
    """Remove the working folders interrupted extractions left (only real folders; a link is left alone).

    Safe only under the data folder's claim: no other hgbench is extracting there now.
    """
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(data_dir):
            if entry.name.startswith(EXTRACTING_PREFIX) and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)


def extract_images(archive: Path, data_dir: Path, *, progress: bool | None = None) -> Path:
    """Unpack the archive's ``images/`` into ``data_dir/images``, atomically (see the module docstring).

    Returns:
        ``data_dir/images``.

    Raises:
        ArchiveDamaged: truncated, corrupt (its gzip trailer included) or not a tar.gz; nothing left behind.
        DataError: the archive is missing or not a regular file, holds no ``images/`` folder, or ``images/`` exists.
        NoRoom: a member would not fit in the room the disk had (nothing of that member written; nothing kept).
        HGBenchError: writing a member failed (the message names it).
    """
    final = data_dir / IMAGES_DIRNAME
    problem = images_folder_problem(data_dir)
    if problem is not None:
        raise DataError(problem)
    if final.exists():
        raise DataError(f"{final} exists already; check it with: hgbench data mpii {data_dir} --verify")
    try:
        fd = open_regular_for_reading(archive)
    except NotARegularFile as exc:
        raise DataError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"cannot read archive {archive}: {exc.strerror or one_line(exc)}") from None
    with os.fdopen(fd, "rb") as raw:
        data_dir.mkdir(parents=True, exist_ok=True)
        size = os.fstat(raw.fileno()).st_size
        check_room(data_dir, size, f"the images of {archive.name}")  # JPEGs do not compress: about the archive's size
        remove_stale_extractions(data_dir)
        work = Path(tempfile.mkdtemp(prefix=EXTRACTING_PREFIX + ".", dir=data_dir))
        try:
            with byte_progress(f"extracting {archive.name}", size, show=progress) as step:
                _unpack(_CountingReader(raw, step), archive, work, RoomBudget(data_dir))
            if not (work / IMAGES_DIRNAME).is_dir():
                raise DataError(f"archive {archive} holds no {IMAGES_DIRNAME}/ folder: is it {MPII_ARCHIVE_NAME}?")
            (work / IMAGES_DIRNAME).rename(final)
        except _ARCHIVE_ERRORS as exc:
            raise ArchiveDamaged(f"archive {archive} is damaged ({one_line(exc)}); nothing was extracted") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def _unpack(raw: _CountingReader, archive: Path, work: Path, budget: RoomBudget) -> None:
    """Extract the images of the tar.gz stream `raw` into `work`, each member counted against `budget` first, then
    read the stream to its end so the gzip trailer is checked."""
    what = f"the images of {archive.name}"
    with gzip.GzipFile(fileobj=raw, mode="rb") as gz:  # type: ignore[arg-type]
        with tarfile.open(fileobj=gz, mode="r|", bufsize=_CHUNK) as tar:
            for member in tar:
                top = member.name.lstrip("./").split("/", 1)[0]
                if top != IMAGES_DIRNAME or not (member.isfile() or member.isdir()):
                    continue  # only the images; the archive holds nothing else we need
                if member.isfile():
                    budget.take(member.size, member.name, what)
                try:
                    tar.extract(member, work, filter="data")
                except OSError as exc:  # a full disk, permissions: name the member, not just the errno
                    raise HGBenchError(
                        f"cannot extract {member.name} of {archive} into {budget.folder}: "
                        f"{exc.strerror or one_line(exc)}; nothing was kept"
                    ) from None
        while gz.read(_CHUNK):  # the rest of the stream (tar padding), up to each member's trailer
            pass


def gzip_problem(path: Path) -> str | None:
    """None when `path` is a whole gzip stream (every member's CRC32 and length match its trailer); else why not."""
    try:
        fd = open_regular_for_reading(path, follow=False)
        with os.fdopen(fd, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            while gz.read(_CHUNK):
                pass
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, NotARegularFile) as exc:
        return one_line(exc)
    return None
