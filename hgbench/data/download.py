"""Getting the MPII image archive onto disk: a resumable download that checks every reply and gives up on a trickle.

`download` streams a URL into ``<dest>.part`` and renames it to `dest` only when every byte arrived. Run again, it
asks the server for the rest (``Range``, with ``If-Range`` set to the first reply's ETag or Last-Modified, as
`hgbench.data.partial_download` keeps them) and appends; a server whose file changed, or that ignores ``Range``,
sends the whole file, which replaces the partial one. A reply is believed only as far as it is consistent: the
``Content-Range`` must start where the partial file ends and give the first reply's length, a 416 means "complete"
only when the partial file has that very length, and a body that ends early is incomplete (one whose length the
server never gave must pass the caller's `check_complete`, for a ``.tar.gz`` its gzip trailer).

A network failure is a `DownloadError` (one line ending in "run the same command again to resume") and keeps the
partial file. So does a server that sends less than `Patience.min_rate` bytes a second over `Patience.window_s`, or
nothing at all for that long: a per-read timeout alone never ends a download fed one byte every few seconds.

The partial file is opened without following a link at its name (`hgbench.data.dir_files`), so a ``.part`` planted
in a shared folder cannot make hgbench write through it. Progress (bytes, rate, time left) is a rich bar on a
terminal; logs and pipes get one line at the start.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hgbench.data.dir_files import create_new, lstat_or_none, not_regular, open_existing_for_append, replaced
from hgbench.data.disk_room import check_room, human_bytes
from hgbench.data.partial_download import (
    FirstReply,
    content_length,
    content_range,
    forget,
    note_path,
    partial_path,
    read_note,
    unsatisfied_total,
    validator,
    write_note,
)
from hgbench.errors import HGBenchError, one_line

__all__ = ["MPII_ARCHIVE_BYTES", "MPII_ARCHIVE_NAME", "MPII_IMAGES_URL", "DownloadError", "Patience", "byte_progress"]
__all__ += ["download", "partial_path"]

# The MPII Human Pose site's image archive (http://human-pose.mpi-inf.mpg.de/#download, "Images (12.9 GB)").
MPII_IMAGES_URL = "https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/mpii_human_pose_v1.tar.gz"
MPII_ARCHIVE_NAME = "mpii_human_pose_v1.tar.gz"
MPII_ARCHIVE_BYTES = 12_900_000_000  # about; the disk check uses the server's size when it gives one
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Patience:
    """When to give up on a server: connecting, and then a body that comes too slowly or not at all."""

    min_rate: float = 10_000.0  # bytes per second, averaged over each window, below which the download gives up
    window_s: float = 60.0  # the window
    stall_s: float | None = None  # the longest wait for any one read of the body (None: `window_s`)
    connect_timeout_s: float = 60.0  # connecting and reading the reply's headers

    @property
    def read_timeout_s(self) -> float:
        return self.window_s if self.stall_s is None else self.stall_s


class DownloadError(HGBenchError):
    """The network failed mid-download; the partial file is kept so the same command resumes."""


class _StartAgain(Exception):
    """The partial file cannot be continued (the server's file is not the one it is part of): download anew."""


@contextlib.contextmanager
def byte_progress(label: str, total: int | None, done: int = 0, *, show: bool | None = None) -> Iterator:
    """A function to call with the bytes done so far: a rich bar (bytes, rate, time left) on a terminal, else a
    line at the start on stderr."""
    show = sys.stderr.isatty() if show is None else show
    if not show:
        print(f"hgbench: {label}" + (f" ({human_bytes(total)})" if total else ""), file=sys.stderr)
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


def _stopped(url: str, have: int, total: int | None, why: str) -> DownloadError:
    got = f"{human_bytes(have)} of {human_bytes(total)}" if total else human_bytes(have)
    return DownloadError(f"download of {url} stopped at {got} ({why}); run the same command again to resume")


def download(
    url: str,
    dest: Path,
    *,
    expected_bytes: int | None = None,
    room_to_extract: bool = False,
    check_complete: Callable[[Path], str | None] | None = None,
    patience: Patience | None = None,
    progress: bool | None = None,
) -> Path:
    """Download `url` to `dest`, resuming a ``<dest>.part`` left by an earlier try of the same URL.

    Args:
        expected_bytes: the file's size when the server does not say (for the disk check only).
        room_to_extract: also count, in the disk check, room for extracting the file (about its size: JPEGs do not
            compress).
        check_complete: for a body whose length the server did not give: None when the file is whole, else why not
            (a truncated ``.tar.gz`` fails its gzip trailer).
        patience: when to give up on a slow or silent server (default: `Patience()`).

    Returns:
        `dest`, complete.

    Raises:
        DownloadError: the network failed, the server went silent or too slow, or the body ended early (the partial
            file is kept).
        HGBenchError: the server refused (HTTP error), the disk lacks room (checked before any byte is written), or
            the partial file's name holds a link or anything but a regular file.
    """
    patience = patience or Patience()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    found = lstat_or_none(part)
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise not_regular(part, found.st_mode, "resume a download into")
    first = read_note(dest, url) if found is not None else None
    if found is not None and (first is None or (first.total is not None and found.st_size > first.total)):
        found = None  # bytes nothing vouches for (no note of this URL's first reply): start again
    if found is not None and found.st_size:
        try:
            return _fetch(url, dest, found, first, expected_bytes, room_to_extract, check_complete, patience, progress)
        except _StartAgain as why:
            print(f"hgbench: {why}; downloading {dest.name} anew", file=sys.stderr)
    return _fetch(url, dest, None, None, expected_bytes, room_to_extract, check_complete, patience, progress)


def _fetch(
    url: str,
    dest: Path,
    found: os.stat_result | None,
    first: FirstReply | None,
    expected_bytes: int | None,
    room_to_extract: bool,
    check_complete: Callable[[Path], str | None] | None,
    patience: Patience,
    progress: bool | None,
) -> Path:
    """One request: the rest of the partial file `found` (whose first reply was `first`), or the whole file."""
    part = partial_path(dest)
    have = found.st_size if found is not None else 0
    headers = {"User-Agent": "hgbench"}
    if found is not None and first is not None:
        headers["Range"] = f"bytes={have}-"
        if first.if_range() is not None:
            headers["If-Range"] = first.if_range()
    response = _request(url, headers, patience, found, first)
    if response is None:  # a 416 to a partial file that has every byte: an earlier try stopped before renaming
        return _finish(part, dest, found)
    with response:
        length = _body_length(url, response)
        if response.status == 206 and found is not None:
            total = _check_resumed(response, have, length, first)
            fd = open_existing_for_append(part, found)
        elif response.status == 200:  # a fresh download, or a server that ignores Range or whose file changed
            have, total = 0, length
            etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
            first = FirstReply(url, total, validator(etag, etag=True), validator(modified))
            fd = None
        else:
            raise HGBenchError(f"cannot download {url}: unexpected reply HTTP {response.status} to a plain request")
        size = total if total is not None else (expected_bytes or 0)
        needed = max(0, size - have) + (size if room_to_extract else 0)
        check_room(dest.parent, needed, dest.name + (" and its extraction" if room_to_extract else ""))
        if fd is None:  # a whole new file: replace whatever partial file was there, never write through a link
            forget(dest)
            fd = create_new(part)
            write_note(dest, first)
        written = os.fstat(fd)
        have = _stream(response, fd, url, have, total, patience, progress, dest.name)
    if total is not None and have < total:
        raise _stopped(url, have, total, "the server closed the connection early")
    if total is None and check_complete is not None:
        problem = check_complete(part)
        if problem is not None:
            raise _stopped(url, have, None, f"the server gave no length and the file is incomplete: {problem}")
    return _finish(part, dest, written)


def _request(
    url: str, headers: dict[str, str], patience: Patience, found: os.stat_result | None, first: FirstReply | None
) -> http.client.HTTPResponse | None:
    """The server's reply with its headers read; None for a 416 that says the partial file `found` is complete.

    Raises:
        _StartAgain: a 416 to a resume whose partial file is not the server's whole file.
    """
    have = found.st_size if found is not None else 0
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=patience.connect_timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and found is not None and first is not None:
            told = unsatisfied_total(exc.headers.get("Content-Range"))
            if first.total is not None and told == first.total == have:
                return None
            said = f"it gives the file's length as {told} bytes" if told is not None else "it gives no length"
            raise _StartAgain(
                f"the server refused the rest of the partial download (HTTP 416; {said}, the partial file holds {have})"
            ) from None
        reason = " ".join(str(exc.reason).split())[:200]
        raise HGBenchError(f"cannot download {url}: HTTP {exc.code} {reason}") from None
    except ValueError as exc:  # a malformed URL
        raise HGBenchError(f"cannot download {url}: {one_line(exc)}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _stopped(url, have, None, one_line(exc)) from None


def _body_length(url: str, response: http.client.HTTPResponse) -> int | None:
    """The reply's Content-Length; None when it gave none, or gave one that http.client ignores too (``abc``).

    Raises:
        HGBenchError: a value that http.client reads as a number though it is not plain digits (``1_000``, ``+5``):
            the body would be cut at a length nobody can vouch for.
    """
    raw = response.headers.get("Content-Length")
    length = content_length(raw)
    if length is None and raw is not None and getattr(response, "length", None) is not None:
        shown = " ".join(raw.split())[:40]
        raise HGBenchError(f"cannot download {url}: the server sent a malformed Content-Length {shown!r}")
    return length


def _check_resumed(response: http.client.HTTPResponse, have: int, length: int | None, first: FirstReply | None) -> int:
    """The whole file's length from a 206 reply to a resume; `_StartAgain` unless it continues the partial file."""
    told = content_range(response.headers.get("Content-Range"))
    expected = first.total if first is not None else None
    if told is None or told.total is None:
        raise _StartAgain("the server's reply to the resume gave no usable Content-Range")
    if told.start != have or told.end != told.total - 1:
        raise _StartAgain(f"the server resumed at byte {told.start}, not {have}")
    if expected is not None and told.total != expected:
        raise _StartAgain(f"the server's file is {told.total} bytes now, {expected} when the download began")
    if length is not None and length != told.end - told.start + 1:
        raise _StartAgain("the server's Content-Length and Content-Range disagree")
    return told.total


def _set_read_timeout(response: http.client.HTTPResponse, seconds: float) -> None:
    """Bound each read of the body by `seconds` (the connection's own timeout also bounded connecting)."""
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)  # http.client's socket file: SocketIO._sock
    if sock is not None:
        sock.settimeout(seconds)


def _stream(
    response: http.client.HTTPResponse,
    fd: int,
    url: str,
    have: int,
    total: int | None,
    patience: Patience,
    progress: bool | None,
    name: str,
) -> int:
    """Append the body to `fd` (closed at the end); the bytes the partial file holds then."""
    _set_read_timeout(response, patience.read_timeout_s)
    window_start, window_bytes = time.monotonic(), have
    with os.fdopen(fd, "ab") as f, byte_progress(f"downloading {name}", total, have, show=progress) as step:
        while True:
            try:
                chunk = response.read1(_CHUNK)
            except TimeoutError:
                f.flush()
                raise _stopped(url, have, total, f"nothing came for {patience.read_timeout_s:g} s") from None
            except (OSError, http.client.HTTPException) as exc:  # reset, incomplete chunked read
                f.flush()
                raise _stopped(url, have, total, one_line(exc)) from None
            if not chunk:
                break
            f.write(chunk)  # a full disk raises OSError, which the CLI prints as one line
            have += len(chunk)
            step(have)
            elapsed = time.monotonic() - window_start
            if elapsed >= patience.window_s:
                rate = (have - window_bytes) / elapsed
                if rate < patience.min_rate:
                    f.flush()
                    raise _stopped(
                        url,
                        have,
                        total,
                        f"{human_bytes(rate)}/s over the last {elapsed:.1f} s, under the minimum of "
                        f"{human_bytes(patience.min_rate)}/s",
                    )
                window_start, window_bytes = time.monotonic(), have
        f.flush()
        os.fsync(f.fileno())
    return have


def _finish(part: Path, dest: Path, written: os.stat_result | None) -> Path:
    """Rename the complete partial file to `dest` (still the file `written`, not a link swapped in) and drop its
    note."""
    now = lstat_or_none(part)
    if now is None or written is None or (now.st_dev, now.st_ino) != (written.st_dev, written.st_ino):
        raise replaced(part)
    part.replace(dest)
    with contextlib.suppress(FileNotFoundError):
        note_path(dest).unlink()
    return dest
