"""Reading a file someone else may have put there: a regular file only, never waiting, never more than a bound.

Results folders, checkpoint folders and caches may be shared, and their readers (`hgbench table`, `run --resume`,
`run --case all`, `compare`, a sweep's progress, the caches) open every name they find. A FIFO named ``*.json`` would
make a plain ``open`` wait for a writer for ever, a link to ``/dev/zero`` would be read until memory runs out, and
``[[[[...`` nested a hundred thousand deep makes `json.loads` raise RecursionError. So a name is checked before it is
opened (`os.stat`: a device is never opened, opening one can have effects), opened without blocking, checked again on
the descriptor (the name may have changed in between), read up to a bound, and JSON is parsed with its nesting
bounded. Every refusal is an `OSError` (`UnreadableFile`) or a `ValueError` with a one-line reason, which the readers
already turn into "skipped, <reason>" naming the file.

A leaf: it imports nothing of hgbench.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

__all__ = ["JSON_BYTES", "MAX_JSON_DEPTH", "UnreadableFile", "file_kind", "parse_json", "read_json", "read_limited"]

# The most a JSON file hgbench reads back may hold (run records, bench records, caches): its own are kilobytes (a long
# run's record tens of them); a larger file is not one of ours and is never read into memory.
JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64  # hgbench's own JSON nests under 10 levels; deeper is not ours (and not parseable past ~1000)
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 20


class UnreadableFile(OSError):
    """A file that is not read: not a regular file, or larger than the bound. ``strerror`` says which, in words."""


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words (``FIFO``, ``character device``...), from its `st_mode`."""
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"))
    kinds += ((stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symbolic link"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _check(info: os.stat_result, path: Path, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile(errno.EINVAL, f"a {file_kind(info.st_mode)}, not a regular file", os.fspath(path))
    if info.st_size > limit:
        raise UnreadableFile(errno.EFBIG, f"{_size(info.st_size)}, more than the {_size(limit)} read", os.fspath(path))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def read_limited(path: str | Path, *, limit: int, follow_links: bool = True) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes.

    Args:
        path: the file; a link to a regular file is followed unless `follow_links` is False.
        limit: the most bytes read; a file that is (or grows) larger is refused.
        follow_links: False: a link at the last component is refused (``O_NOFOLLOW``).

    Raises:
        UnreadableFile: not a regular file (a FIFO, a device, a folder...), or larger than `limit`.
        OSError: missing, unreadable, a link loop, or a link when `follow_links` is False.
    """
    path = Path(path)
    _check(path.stat(follow_symlinks=follow_links), path, limit)  # a device is refused before it is opened
    fd = os.open(path, _OPEN_FLAGS | (0 if follow_links else os.O_NOFOLLOW))
    try:
        _check(os.fstat(fd), path, limit)  # what was opened, in case the name changed since the stat
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(_CHUNK, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise UnreadableFile(errno.EFBIG, f"more than the {_size(limit)} read (it grew)", os.fspath(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_json(
    path: str | Path, *, limit: int = JSON_BYTES, max_depth: int = MAX_JSON_DEPTH, follow_links: bool = True
) -> Any:
    """The JSON document in `path`, read with `read_limited` and parsed with `parse_json`.

    Raises:
        UnreadableFile, OSError: as `read_limited`.
        ValueError: as `parse_json`.
    """
    return parse_json(read_limited(path, limit=limit, follow_links=follow_links), max_depth=max_depth)


def parse_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON document (bytes as UTF-8) nested at most `max_depth` deep.

    Raises:
        ValueError: not UTF-8 (UnicodeDecodeError), not JSON, or nested deeper than `max_depth` (one line, e.g.
            ``nested deeper than 64 levels``), however deep: never a RecursionError.
    """
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        document = json.loads(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    if _deeper_than(document, max_depth):
        raise ValueError(f"nested deeper than {max_depth} levels")
    return document


def _deeper_than(document: Any, max_depth: int) -> bool:
    """Whether a parsed document nests containers more than `max_depth` deep (walked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
