"""Claims on a run: one process trains a run at a time, and every other process can see which one.

A run's claim is an OS lock on ``claim.lock`` in its checkpoint folder, taken by the process that trains it (rank 0
under DDP) before its record is written and held until the run ends, with the owner's host, PID and start time
written inside for the one line another process prints. The lock is POSIX's (`fcntl.lockf`): NFS passes it to its
lock manager and Lustre to its own, so processes on different nodes of a shared filesystem see each other's claims,
where `flock` is local to one client on some NFS mounts. The kernel (or the NFS server) drops the lock when its
process ends, however it ends (`kill -9` included), so the claim of a process that is gone is simply taken over.

The lock file lives in a folder others may write (a shared ``--checkpoint-dir``), and run folders have predictable
names, so it is opened without following a link at its name (``O_NOFOLLOW``) and without waiting on a FIFO
(``O_NONBLOCK``), and it must be a regular file with no other name before it is truncated: anything else is refused
in one line (`UnsafeClaimFile`), its target untouched.

POSIX locks belong to a process, not to a file descriptor: a second claim from the same process would succeed, and
closing any other descriptor of the lock file would silently drop the claim. So this process's own claims are kept
in `_HELD`, and neither `claim_run` nor `holder` opens a lock file this process holds.

A leaf: it imports nothing of hgbench but the error type and the leaf that opens files others may write.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from hgbench.errors import HGBenchError
from hgbench.files.atomic_io import NotAPlainFile, open_plain

LOCK_NAME = "claim.lock"
# A process that only looks (`holder`) holds the lock for microseconds; a claim that finds it taken tries again for
# this long before it believes another run owns it.
CONTENTION_S = 1.0
# Errors of a filesystem that has no locks at all (an NFS mount without its lock manager, some FUSE filesystems).
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
_TAKEN = {errno.EACCES, errno.EAGAIN}
# Opening the lock file: never through a link at its name, never waiting for a FIFO's writer.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_OWNER_BYTES = 4096  # an owner line is ~100 bytes: a lock file holding more is not read further


class RunBusy(HGBenchError):
    """The run is being trained by another process (its claim is held): nothing was started."""

    exit_code = 4


class UnsafeClaimFile(HGBenchError):
    """The run's ``claim.lock`` is a link, a FIFO or another non-regular file, or a second name of some other file:
    nothing was written through it and nothing was started."""


@dataclass(frozen=True)
class Owner:
    """Who holds a claim, as written in the lock file."""

    host: str
    pid: int
    started: str  # UTC, ISO 8601, seconds

    def describe(self) -> str:
        return f"host {self.host} pid {self.pid} since {self.started}"


@dataclass(eq=False)
class Claim:
    """A claim this process holds; `release` (or the end of a ``with`` block) gives it up."""

    folder: Path
    owner: Owner
    _fd: int | None

    def release(self) -> None:
        _HELD.pop(_key(self.folder), None)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor drops the lock

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD: dict[str, Claim] = {}  # this process's claims, by folder


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def claim_run(folder: str | Path, *, label: str) -> Claim:
    """Claim the run whose checkpoint folder is `folder` (created if needed) for this process.

    Args:
        folder: the run's checkpoint folder (`hgbench.run.plan.RunPlan.run_dir`).
        label: the run in words, for the message (``hg1 seed 0``).

    Raises:
        RunBusy: another process holds the claim (or this one does already); the message names it.
    """
    folder = Path(folder)
    mine = _HELD.get(_key(folder))
    if mine is not None:
        raise RunBusy(_busy(label, folder, mine.owner))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = _open_lock_file(path, label, folder)
    try:
        locked = _lock(fd, path)
    except BaseException:
        os.close(fd)
        raise
    if locked is False:
        owner = _read_owner(fd)
        os.close(fd)
        raise RunBusy(_busy(label, folder, owner))
    owner = Owner(socket.gethostname(), os.getpid(), datetime.now(UTC).isoformat(timespec="seconds"))
    data = (json.dumps({"host": owner.host, "pid": owner.pid, "started": owner.started}) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    with contextlib.suppress(OSError):
        os.fsync(fd)
    held = Claim(folder, owner, fd)
    _HELD[_key(folder)] = held
    return held


def holder(folder: str | Path) -> Owner | None:
    """Who holds the claim on the run in `folder` right now; None when nobody does (never claimed, or its process
    ended). Takes nothing: the lock is tested for a moment, shared, and given back."""
    folder = Path(folder)
    mine = _HELD.get(_key(folder))
    if mine is not None:
        return mine.owner
    path = folder / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError:  # no lock file (the run was never claimed, or its folder is gone), or a link: not a claim
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None  # a FIFO or a device is nobody's claim
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in _TAKEN:
                return _read_owner(fd) or Owner("unknown", 0, "unknown")
            return None  # a filesystem without locks: no claim can be seen
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _open_lock_file(path: Path, label: str, folder: Path) -> int:
    """Open (creating) the lock file for reading and writing (`hgbench.files.atomic_io.open_plain`: never a link, a FIFO
    or a second name of another file, which the claim's truncation would empty).

    Raises:
        UnsafeClaimFile: one line naming the file and what it is; nothing was written.
    """
    try:
        return open_plain(path, os.O_RDWR | os.O_CREAT)
    except NotAPlainFile as exc:
        raise UnsafeClaimFile(_unsafe(label, folder, path, exc.problem)) from None


def _unsafe(label: str, folder: Path, path: Path, problem: str) -> str:
    return (
        f"{label} ({folder}): its claim file {path} {problem}; nothing was written through it and nothing was "
        "started: remove it (in a shared --checkpoint-dir, someone else may have put it there)"
    )


def _lock(fd: int, path: Path) -> bool | None:
    """Lock `fd` exclusively: True, False when another process holds it, None on a filesystem without locks."""
    deadline = time.monotonic() + CONTENTION_S
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                print(
                    f"hgbench: warning: cannot lock {path} ({exc.strerror}); this filesystem has no file locks, so "
                    "another process starting this run now would not be stopped",
                    file=sys.stderr,
                    flush=True,
                )
                return None
            if exc.errno not in _TAKEN:
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _read_owner(fd: int) -> Owner | None:
    """The owner written in the lock file open as `fd` (None when it cannot be read: written a moment from now, or
    damaged); read from the descriptor already checked, never by name again."""
    try:
        data = json.loads(os.pread(fd, _OWNER_BYTES, 0).decode("utf-8"))
        return Owner(str(data["host"]), int(data["pid"]), str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def _busy(label: str, folder: Path, owner: Owner | None) -> str:
    who = owner.describe() if owner is not None else "another process"
    return f"{label} ({folder}) is being trained by {who}; nothing was started: wait for it to end, or stop it first"
