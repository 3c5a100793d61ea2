"""A sweep's progress, read from the records its workers write: one mechanism for every engine.

Every worker writes its run's record atomically into the shared results folder after each epoch (status, epochs
done, PCKh), so the driver learns how far each run got by re-reading the records that changed since it last looked,
matched to its runs by run identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hgbench.run.results import expand_sources, read_record, record_identity


@dataclass(frozen=True)
class Seen:
    """The newest record of one run identity."""

    path: Path
    mtime: float  # when it was last written (seconds since the epoch)
    status: str  # finished | interrupted | failed
    epochs_done: int
    pckh: float | None  # the last epoch's PCKh, if any


class RecordWatch:
    """The newest record of each run identity under some results folders, re-reading only files that changed."""

    def __init__(self) -> None:
        self._files: dict[Path, tuple[float, str | None, Seen | None]] = {}

    def scan(self, folders: set[str]) -> dict[str, Seen]:
        """Identity -> its newest record (by write time) under `folders`."""
        files, _ = expand_sources(sorted(f for f in folders if Path(f).is_dir()))
        newest: dict[str, Seen] = {}
        for path in files:
            try:
                mtime = path.stat().st_mtime
            except OSError:  # replaced or removed meanwhile: the next scan sees it
                continue
            cached = self._files.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, *_read(path, mtime))
                self._files[path] = cached
            _, identity, seen = cached
            if identity is not None and seen is not None and (identity not in newest or mtime > newest[identity].mtime):
                newest[identity] = seen
        return newest


def _read(path: Path, mtime: float) -> tuple[str | None, Seen | None]:
    record, _ = read_record(path)
    if record is None:
        return None, None
    epochs = record["results"]["epochs"]
    pckh = epochs[-1].get("pckh") if epochs else None
    return record_identity(record), Seen(path, mtime, record["status"], len(epochs), pckh)
