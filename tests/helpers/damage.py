"""Ways to break a JPEG on disk, as the bad-input tests need them."""

from __future__ import annotations

from pathlib import Path


def truncate_jpeg(path: Path) -> None:
    """Keep the first half: no end-of-image marker, so the cheap up-front check catches it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble_jpeg(path: Path) -> None:
    """Zero everything between the start- and end-of-image markers: passes the cheap check, fails to decode."""
    data = bytearray(path.read_bytes())
    data[2:-2] = bytes(len(data) - 4)
    path.write_bytes(bytes(data))
