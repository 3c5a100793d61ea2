"""Room on the disk for a download or an extraction: measured, not assumed, and said plainly when it is short.

`free_bytes` asks the filesystem (``statvfs`` through `shutil.disk_usage`) each time: tests replace it to play a
small disk. `check_room` refuses when the bytes still to come plus `ROOM_MARGIN_BYTES` (left free for the
filesystem's own needs and everything else on the disk) exceed what is free, and its message names the margin, so
"0.1 GB needed, 0.2 GB free" never reads as a refusal without a reason. `RoomBudget` keeps a running total of what
an extraction has promised to write against the room it found when it started.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hgbench.errors import HGBenchError

ROOM_MARGIN_BYTES = 256 << 20  # left free beyond the estimate, for the file system's own needs


class NoRoom(HGBenchError):
    """The disk lacks room for what is to be written; nothing (or nothing more) was written."""


def free_bytes(folder: Path) -> int:
    """Bytes free to this user on `folder`'s filesystem, now."""
    return shutil.disk_usage(folder).free


def human_bytes(n: int | float) -> str:
    """``12.9 GB``, ``312 MB``, ``48 kB``, ``512 bytes``: decimal units, three figures at most."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} bytes"


def shortfall(needed: int, free: int) -> str:
    """The numbers of a refusal, the margin included: ``1.2 GB needed + 268 MB kept free, 900 MB free``."""
    return f"{human_bytes(needed)} needed + {human_bytes(ROOM_MARGIN_BYTES)} kept free, {human_bytes(free)} free"


def check_room(folder: Path, needed: int, what: str) -> None:
    """Raise one line when `folder`'s disk has less than `needed` bytes plus `ROOM_MARGIN_BYTES` free."""
    free = free_bytes(folder)
    if free < needed + ROOM_MARGIN_BYTES:
        raise NoRoom(
            f"not enough disk space in {folder} for {what}: {shortfall(needed, free)}; free some space or choose "
            "another folder"
        )


class RoomBudget:
    """The room an extraction may fill: what was free when it started, less the margin, less what it promised."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.free = free_bytes(folder)
        self.promised = 0  # bytes the members extracted so far declared

    def take(self, size: int, name: str, what: str) -> None:
        """Count `size` more bytes for member `name`; refuse, before it is written, when they would not fit."""
        if self.promised + size + ROOM_MARGIN_BYTES > self.free:
            raise NoRoom(
                f"not enough disk space in {self.folder} for {what}: through {name}, "
                f"{shortfall(self.promised + size, self.free)} when extraction began; stopped before writing {name}: "
                "free some space or choose another folder"
            )
        self.promised += size
