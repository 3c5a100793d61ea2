"""Files in a data folder other people may write to: never follow a link at the last component, never block on one.

A shared data folder (``/shared/mpii``) is writable by whoever shares it, so a name hgbench uses there may be a
symbolic link planted to make hgbench write somewhere else, or a FIFO that hangs a reader. Every file hgbench
writes there is opened with ``O_NOFOLLOW`` (a new one with ``O_EXCL`` as well), every file it reads is opened
without blocking and checked to be a regular file first; a small one (a marker, a note) is read with
`hgbench.files.bounded_read.read_json` and ``follow_links=False``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hgbench.errors import HGBenchError
from hgbench.files.bounded_read import file_kind

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class NotARegularFile(HGBenchError):
    """A name hgbench reads or writes in a data folder is a link, a folder, a FIFO or a device."""


def kind_of(mode: int) -> str:
    """A file type in words, for the one-line message (``a FIFO``, ``a symbolic link``)."""
    return "not a regular file" if stat.S_ISREG(mode) else f"a {file_kind(mode)}"


def not_regular(path: Path, mode: int, doing: str) -> NotARegularFile:
    kind = kind_of(mode)
    what = kind if kind == "not a regular file" else f"{kind}, not a regular file"
    return NotARegularFile(
        f"{path} is {what}, so hgbench will not {doing} it; move it away and run the same command again"
    )


def replaced(path: Path) -> NotARegularFile:
    return NotARegularFile(
        f"{path} was replaced by another file while hgbench used it (another process writes this folder); run the "
        "same command again"
    )


def lstat_or_none(path: Path) -> os.stat_result | None:
    """The file's own status (a link's, not its target's); None when nothing has that name."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def create_new(path: Path, mode: int = 0o666) -> int:
    """Create `path` for writing; it must not exist (``O_EXCL``: a link or file planted there is an error).

    Returns:
        The open file descriptor.

    Raises:
        NotARegularFile: something already has that name (a link planted between a check and this call, say).
    """
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode)
    except FileExistsError:
        found = lstat_or_none(path)
        raise not_regular(path, found.st_mode if found else 0, "write to") from None


def open_existing_for_append(path: Path, expected: os.stat_result) -> int:
    """Open a regular file that `expected` (an earlier ``lstat``) describes, to append to it.

    Raises:
        NotARegularFile: it is a link now, or not a regular file, or another file than the one `expected` describes.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    except OSError as exc:  # ELOOP: a link at the last component; ENXIO: a FIFO with no reader
        found = lstat_or_none(path)
        if found is None:
            raise
        raise not_regular(path, found.st_mode, "append to") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise not_regular(path, st.st_mode, "append to")
    if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
        os.close(fd)
        raise replaced(path)
    return fd


def open_regular_for_reading(path: Path, *, follow: bool = True) -> int:
    """Open `path` read-only without blocking (a FIFO would hang a plain open), refusing anything but a regular file.

    Args:
        follow: follow a link at the last component (a file the user named, or an archive they linked into the
            folder); False for hgbench's own files there.

    Raises:
        NotARegularFile: a FIFO, device, folder (or, without `follow`, a link).
        OSError: it does not exist or cannot be read.
    """
    flags = os.O_RDONLY | _NONBLOCK | _CLOEXEC | (0 if follow else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        found = lstat_or_none(path)
        if found is not None and not follow and stat.S_ISLNK(found.st_mode):
            raise not_regular(path, found.st_mode, "read") from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise not_regular(path, st.st_mode, "read")
    os.set_blocking(fd, True)
    return fd
