"""What a resumed download must know of the first try, and reading the headers that describe a reply.

An interrupted download leaves ``<dest>.part`` (the bytes so far) and ``<dest>.part.json`` (this module's note of the
first reply: its URL, the file's full length and its validators, ETag or Last-Modified). A resume asks for the rest
with ``Range`` and ``If-Range`` set to that validator, so a server whose file changed since sends the whole new file
instead of the tail of another; the reply's ``Content-Range`` total must be the first reply's length. A partial file
without its note is one nothing can vouch for, and is downloaded anew.

Every header is a stranger's text: lengths are digits only (``Content-Length: abc`` is no length, not a crash),
ranges are parsed whole or not at all, and a validator is sent back only when it is short, printable ASCII.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from hgbench.files.atomic_io import write_json_atomic
from hgbench.files.bounded_read import read_json

_NOTE_LIMIT = 64 << 10  # a note is a few hundred bytes; anything larger is not one hgbench wrote
_DIGITS = re.compile(r"[0-9]{1,20}")
_RANGE = re.compile(r"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20}|\*)")
_UNSATISFIED = re.compile(r"bytes \*/([0-9]{1,20})")
_VALIDATOR = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,510}")  # visible ASCII and spaces, no CR/LF: safe to send back


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def note_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


@dataclass(frozen=True)
class FirstReply:
    """The first reply of a download, as a resume needs it."""

    url: str
    total: int | None  # the whole file's length; None when the server did not say
    etag: str | None  # a strong ETag (a weak one, W/"...", cannot validate a range)
    last_modified: str | None

    def if_range(self) -> str | None:
        """The validator a resume sends in ``If-Range``: the ETag if strong, else Last-Modified, else None."""
        return self.etag or self.last_modified


def validator(value: str | None, *, etag: bool = False) -> str | None:
    """A header value fit to send back in ``If-Range``; None for a missing, odd or weak one."""
    if value is None:
        return None
    value = value.strip()
    if not _VALIDATOR.fullmatch(value) or (etag and not value.startswith('"')):
        return None  # W/"..." is weak; an unquoted ETag is malformed
    return value


def content_length(value: str | None) -> int | None:
    """``Content-Length`` as a number; None when missing or not plain digits (two values, a sign, ``abc``)."""
    if value is None or not _DIGITS.fullmatch(value.strip()):
        return None
    return int(value.strip())


@dataclass(frozen=True)
class ContentRange:
    """``Content-Range: bytes START-END/TOTAL`` (END inclusive); `total` None for ``*``."""

    start: int
    end: int
    total: int | None


def content_range(value: str | None) -> ContentRange | None:
    """The reply's range, or None when missing or malformed (END before START included)."""
    match = _RANGE.fullmatch((value or "").strip())
    if match is None:
        return None
    start, end = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if end < start or (total is not None and end >= total):
        return None
    return ContentRange(start, end, total)


def unsatisfied_total(value: str | None) -> int | None:
    """The length a 416 reply gives (``Content-Range: bytes */TOTAL``); None without one."""
    match = _UNSATISFIED.fullmatch((value or "").strip())
    return int(match[1]) if match else None


def read_note(dest: Path, url: str) -> FirstReply | None:
    """The note of the first reply for `dest`, when there is one hgbench wrote for this very URL."""
    try:
        data = read_json(note_path(dest), limit=_NOTE_LIMIT, follow_links=False)
    except (OSError, ValueError):  # missing, a link or FIFO, too large, not JSON
        return None
    if not isinstance(data, dict) or data.get("url") != url:
        return None
    total = data.get("total")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        return None
    etag, modified = data.get("etag"), data.get("last_modified")
    return FirstReply(
        url,
        total,
        validator(etag, etag=True) if isinstance(etag, str) else None,
        validator(modified) if isinstance(modified, str) else None,
    )


def write_note(dest: Path, first: FirstReply) -> None:
    write_json_atomic(note_path(dest), asdict(first))


def forget(dest: Path) -> None:
    """Remove the partial file and its note (a link at either name is removed, never followed)."""
    for path in (partial_path(dest), note_path(dest)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
