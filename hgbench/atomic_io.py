"""Files a reader never sees half of: atomic replacement (temp file, fsync, rename) and numbered, claimed-once names.

A leaf that imports nothing of hgbench: the results store (run records), checkpoints, the bench records and the model
cost cache all write through it. `write_json_atomic` also makes values strict JSON (numpy / torch scalars become
Python numbers, NaN and infinity become null), as docs/record.md requires; `next_record_path` numbers files as
pytest-benchmark's ``storage/file.py`` does (``<root>/<machine_id>/NNNN_<stem>.json``, never overwritten).
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "NUMBERED_NAME",
    "atomic_output",
    "jsonable",
    "next_record_path",
    "remove_stale_temps",
    "write_bytes_atomic",
    "write_json_atomic",
]

NUMBERED_NAME = re.compile(r"^(\d{4,})_")  # a numbered file: NNNN_<stem>...


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
        fd = os.open(directory, os.O_RDONLY)
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
            mode = path.stat().st_mode & 0o7777
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
        if mode is not None:
            tmp.chmod(mode)


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
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write to (e.g. with `torch.save`); it replaces `path` only if the block succeeds.

    Example::

        with atomic_output(run_dir / "last.pt") as tmp:
            torch.save(state, tmp)

    Raises:
        OSError: the final fsync or rename failed; the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(2, "nothing was written to the temp file", os.fspath(tmp))
        with tmp.open("rb+") as fh:  # the writer may not have fsynced (torch.save does not)
            os.fsync(fh.fileno())
        tmp.replace(path)
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
            os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # another run is claiming this number right now
            number += 1
            continue
        try:
            if number in _numbers(folder):  # taken (any stem) before our claim
                number += 1
                continue
            path = folder / f"{number:04d}_{stem}.json"
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        finally:
            # Released only after our file exists, so a later claimer of this number sees it and moves on.
            with contextlib.suppress(OSError):
                claim.unlink()


def _numbers(folder: Path) -> set[int]:
    """The record numbers used in a folder (any stem)."""
    return {int(m.group(1)) for p in folder.iterdir() if (m := NUMBERED_NAME.match(p.name))}
