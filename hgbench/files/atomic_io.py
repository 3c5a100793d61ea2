"""Files a reader never sees half of: atomic replacement (temp file, fsync, rename) and numbered, claimed-once names.

A leaf (of hgbench it imports only `bounded_read`, for the words that name a kind of file): the results store (run
records), checkpoints, the bench records and the model cost cache all write through it.

Results, checkpoint and data folders may be shared, so whoever else can write there may plant a link (or a FIFO)
under a name hgbench is about to write. Nothing here writes through a link at the last component: a temp file is
created new (``O_CREAT | O_EXCL | O_NOFOLLOW``, never an existing name) and written through the descriptor that created
it, the rename replaces whatever the final name was without following it, numbered names are created with ``O_EXCL``,
and a file that is appended to (a run's log) is opened with ``O_NOFOLLOW`` and must be a regular file of one name
(`open_append`; anything else is `NotAPlainFile`).

`write_json_atomic` also makes values strict JSON (numpy / torch scalars become
Python numbers, NaN and infinity become null), as docs/record.md requires; `next_record_path` numbers files as
pytest-benchmark's ``storage/file.py`` does (``<root>/<machine_id>/NNNN_<stem>.json``, never overwritten).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO

from hgbench.files.bounded_read import file_kind

__all__ = [
    "NUMBERED_NAME",
    "NotAPlainFile",
    "atomic_file",
    "atomic_output",
    "jsonable",
    "next_record_path",
    "open_append",
    "open_plain",
    "remove_stale_temps",
    "write_bytes_atomic",
    "write_json_atomic",
]

NUMBERED_NAME = re.compile(r"^(\d{4,})_")  # a numbered file: NNNN_<stem>...
# Flags of every file this module creates: a new name only, never through a link, never inherited by a child.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_TEMP_TRIES = 100  # fresh random temp names tried before giving up (each is 32 random bits: a clash is a planted name)


class NotAPlainFile(OSError):
    """A name hgbench was about to write is a link, a FIFO, a device or a second name of another file: nothing was
    written through it. ``strerror`` is one line naming the file; ``problem`` says what it is (``is a FIFO, not a
    regular file``)."""

    def __init__(self, code: int, path: str | Path, problem: str) -> None:
        super().__init__(code, f"{path} {problem}; nothing was written through it: remove it")
        self.problem = problem


def jsonable(obj: Any) -> Any:
    """Make a value strict JSON: numpy scalars/arrays become Python, paths strings, NaN/inf null.

    NaN and infinity are not JSON (other tools reject them); docs/record.md says "not measured is null", and a NaN
    loss is reported through ``status_reason``, so null is the faithful spelling.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays, without importing either
        return jsonable(obj.tolist())
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def _fsync_dir(directory: Path) -> None:
    """Persist a rename: fsync the directory entry (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    """A hidden, unique temp name beside `path` (same filesystem, so `os.replace` is atomic; never matches *.json)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new temp file beside `path` (0o666 minus the umask): a name nobody had, so never a planted link.

    Raises:
        FileExistsError: every name tried was taken (someone is planting them).
    """
    for _ in range(_TEMP_TRIES):
        tmp = _temp_name(path)
        try:
            return os.open(tmp, _NEW_FILE, 0o666), tmp
        except FileExistsError:
            continue
    message = f"no free temp name beside {path} after {_TEMP_TRIES} tries"
    raise FileExistsError(errno.EEXIST, message, os.fspath(path.parent))


def _replace_own_temp(fd: int, tmp: Path, path: Path) -> None:
    """Rename the temp file open as `fd` over `path`, only while `tmp` still names that very file (a name swapped
    under us in a shared folder is never put in place)."""
    mine, now = os.fstat(fd), os.lstat(tmp)
    if (mine.st_dev, mine.st_ino) != (now.st_dev, now.st_ino):
        raise NotAPlainFile(errno.EBUSY, tmp, f"was replaced while {path} was written, which is unchanged")
    tmp.replace(path)


def open_plain(path: str | Path, flags: int) -> int:
    """Open `path` with `flags` (``os.O_CREAT`` included where wanted: 0o666 minus the umask) in a folder others may
    write: never through a link at its name, never waiting on a FIFO, and only a regular file of one name (a second
    name of another file, which a truncation or an append would change, is refused too).

    Returns:
        The descriptor, in blocking mode.

    Raises:
        NotAPlainFile: the name is a link, or not a regular file of one name; nothing was written.
        OSError: any other failure to open it.
    """
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW's answer to a link
            raise NotAPlainFile(exc.errno, path, "is a symbolic link") from None
        if exc.errno == errno.ENXIO:  # O_NONBLOCK's answer to opening a FIFO nobody reads for writing
            raise NotAPlainFile(exc.errno, path, "is a FIFO, not a regular file") from None
        raise
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = f"is a {file_kind(info.st_mode)}, not a regular file"
    elif info.st_nlink > 1:
        problem = f"has other names ({info.st_nlink} links to one file)"
    if problem is not None:
        os.close(fd)
        raise NotAPlainFile(errno.EINVAL, path, problem)
    os.set_blocking(fd, True)
    return fd


def open_append(path: str | Path) -> IO[bytes]:
    """Open `path` for appending in binary (created if missing), for a log in a folder others may write (`open_plain`).

    Raises:
        NotAPlainFile: the name is a link or not a regular file of one name (one line naming it); nothing written.
        OSError: any other failure to open it.
    """
    return os.fdopen(open_plain(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Remove the temp files that writes of `path` left behind when their process was killed mid-write.

    Only safe where no other process may be writing `path` now (a run's checkpoint, under the run's claim).

    Returns:
        The files removed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if re.fullmatch(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.tmp", tmp.name):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def write_bytes_atomic(path: str | Path, data: bytes, *, mode: int | None = None) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one.

    Args:
        path: destination; its directory is created if needed.
        data: the complete new content.
        mode: permission bits for the new file; default: the old file's bits, else 0o666 minus the umask.

    Raises:
        OSError: the write failed (full disk, permissions); the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    if mode is None:
        with contextlib.suppress(OSError):
            old = path.lstat()  # a link's own bits, never its target's: a link keeps the default
            mode = old.st_mode & 0o7777 if stat.S_ISREG(old.st_mode) else None
    with atomic_file(path, mode=mode) as fh:
        fh.write(data)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented, strict JSON to `path` atomically (temp file, flush + fsync, `os.replace`, dir fsync).

    The JSON is serialised before any file is touched, so an unserialisable value leaves nothing behind.

    Args:
        path: destination file (usually from `next_record_path`).
        obj: the record; numpy/torch scalars are converted and NaN/inf are written as null.

    Raises:
        TypeError: `obj` holds a value JSON cannot represent.
        OSError: the write failed (e.g. a full disk); the old file, if any, is intact and no temp file remains.
    """
    data = (json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n").encode("utf-8")
    write_bytes_atomic(path, data)


@contextlib.contextmanager
def atomic_file(path: str | Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """Yield a new temp file beside `path`, open for binary writing (e.g. for `torch.save`); it replaces `path` only
    if the block succeeds. The temp file is created new and written through its own descriptor, so no link planted
    in the folder is ever written through.

    Example::

        with atomic_file(run_dir / "last.pt") as fh:
            torch.save(state, fh)

    Args:
        path: destination; its directory is created if needed.
        mode: permission bits for the new file; default 0o666 minus the umask.

    Raises:
        OSError: the write, fsync or rename failed; the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            _replace_own_temp(fh.fileno(), tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield the path of a new, empty temp file for a writer that only takes a path; it replaces `path` only if the
    block succeeds. Prefer `atomic_file`: here the writer opens the temp file by name, so in a folder others may write
    a name swapped in the meantime is caught (the rename is refused), not prevented.

    Raises:
        OSError: the final fsync or rename failed, or the temp file was replaced; the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # the writer may not have fsynced
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotAPlainFile(errno.EINVAL, tmp, f"is no longer a regular file; {path} is unchanged")
            os.fsync(fd)
            _replace_own_temp(fd, tmp, path)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


# ------------------------------------------------------------------------------------------------------ numbering
def _safe_stem(stem: str) -> str:
    """A file-name-safe stem: no separators or spaces (``case3 seed/0`` -> ``case3_seed_0``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "_", stem).strip("._")
    if not cleaned:
        raise ValueError(f"record stem {stem!r} has no usable characters")
    return cleaned


def next_record_path(results_dir: str | Path, machine_id: str, stem: str) -> Path:
    """Claim the next numbered record file ``<results_dir>/<machine_id>/NNNN_<stem>.json``.

    NNNN is one more than the highest number already in that folder (any stem), zero-padded to 4 digits. Two runs
    started at the same moment never get the same number, even with different stems: the number itself is claimed
    first through a hidden ``.NNNN.claim`` file created with ``O_EXCL``, and the claim holder checks that no
    ``NNNN_*`` file exists before creating its own (also with ``O_EXCL``) and releasing the claim; the loser of a
    race moves on to the next number. The caller then fills the empty file with `write_json_atomic`.

    Args:
        results_dir: the results root (``results/``).
        machine_id: the sub-folder, from `machine_id`.
        stem: the name after the number, e.g. ``case3_seed0`` (unsafe characters become ``_``).

    Returns:
        The claimed (empty) file's path.
    """
    folder = Path(results_dir) / _safe_stem(machine_id)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _safe_stem(stem)
    number = max(_numbers(folder), default=0) + 1
    while True:
        claim = folder / f".{number:04d}.claim"
        try:
            os.close(os.open(claim, _NEW_FILE, 0o666))
        except FileExistsError:  # another run is claiming this number right now
            number += 1
            continue
        try:
            if number in _numbers(folder):  # taken (any stem) before our claim
                number += 1
                continue
            path = folder / f"{number:04d}_{stem}.json"
            os.close(os.open(path, _NEW_FILE, 0o666))
            return path
        finally:
            # Released only after our file exists, so a later claimer of this number sees it and moves on.
            with contextlib.suppress(OSError):
                claim.unlink()


def _numbers(folder: Path) -> set[int]:
    """The record numbers used in a folder (any stem)."""
    return {int(m.group(1)) for p in folder.iterdir() if (m := NUMBERED_NAME.match(p.name))}
