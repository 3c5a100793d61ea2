"""The trackers of one run behind one object that never lets a tracker stop the run.

A tracker's first failure (a full disk, a tracking server down or refusing) prints one warning line and turns that
tracker off for the rest of the run; the run, its checkpoint and its record go on as always. Everything the tracker
was then not given is listed in the record's ``tracking`` section (docs/record.md): by step, which figures, pictures,
final figures or artifacts, so a person knows what `hgbench export` must send later (it sends exactly what is
missing). Pictures that cannot be drawn cost the run its pictures, not its figures.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from hgbench.errors import one_line
from hgbench.tracking.figures import epoch_figures, epochs_of, final_figures, final_step
from hgbench.tracking.pictures import Picture, PictureSource

LABELS = {"tensorboard": "TensorBoard", "mlflow": "MLflow"}


class Tracker(Protocol):
    """What the run asks of a tracker; each call may raise (the fan-out catches it)."""

    name: str

    def open(self, record: Mapping[str, Any]) -> None: ...  # start or continue the run, with the record's epochs
    def log_epoch(self, entry: Mapping[str, Any], pictures: list[Picture]) -> None: ...
    def log_final(self, record: Mapping[str, Any]) -> None: ...
    def close(self, status: str) -> None: ...
    def describe(self) -> dict: ...  # where the run went, for the record


@dataclass
class _Slot:
    """One tracker and how it went."""

    tracker: Tracker
    error: str | None = None  # the first failure, one line; None while it works
    unsent: list[dict] = field(default_factory=list)  # what it was not given after that

    def state(self) -> dict:
        return {**self.tracker.describe(), "error": self.error, "unsent": list(self.unsent)}


class Tracking:
    """The run's trackers (none: everything is a no-op, as on ranks other than 0).

    Args:
        trackers: the trackers to feed, already constructed.
        pictures: draws the validation people each epoch (None: no pictures).
        export_hint: the command that sends later what a failed tracker missed, for the warning line.
    """

    def __init__(
        self,
        trackers: list[Tracker] | None = None,
        *,
        pictures: PictureSource | None = None,
        export_hint: Callable[[str], str] | None = None,
    ) -> None:
        self.slots = [_Slot(t) for t in trackers or []]
        self.pictures = pictures
        self.export_hint = export_hint
        self.picture_error: str | None = None

    @property
    def active(self) -> bool:
        return any(slot.error is None for slot in self.slots)

    def _call(self, slot: _Slot, unsent: list[dict], action: Callable[[], None]) -> None:
        """`action` on a working tracker; its failure said once and the tracker turned off; `unsent` listed if the
        tracker is (or just went) off."""
        if slot.error is None:
            try:
                action()
                return
            except Exception as exc:  # noqa: BLE001 - any failure of a tracker (network, disk, its own bugs) is its own
                slot.error = f"{type(exc).__name__}: {one_line(exc)}"[:500]
                self._warn(slot)
        slot.unsent.extend(unsent)

    def _warn(self, slot: _Slot) -> None:
        label = LABELS.get(slot.tracker.name, slot.tracker.name)
        hint = f"; {self.export_hint(slot.tracker.name)} sends it later" if self.export_hint else ""
        print(
            f"hgbench: warning: {label} logging stopped ({slot.error}); the run goes on, and what {label} did not get "
            f"is listed in the record (tracking.{slot.tracker.name}.unsent){hint}",
            file=sys.stderr,
            flush=True,
        )

    def open(self, record: Mapping[str, Any]) -> None:
        """Start (or continue) every tracker's run; a tracker that cannot start misses all of the record's epochs."""
        for slot in self.slots:
            missed = [_epoch_item(e) for e in epochs_of(record)]
            self._call(slot, missed, lambda s=slot: s.tracker.open(record))

    def log_epoch(self, entry: Mapping[str, Any], predictions: np.ndarray | None, index: np.ndarray | None) -> None:
        """One finished (and checkpointed) epoch's figures, and its pictures from the validation pass."""
        if not self.active:  # nobody to draw for: the pictures it would have drawn are listed all the same
            names = [f"val_{slot}" for slot in range(len(self.pictures.people))] if self._drawing else []
            for slot in self.slots:
                slot.unsent.extend(_epoch_items(entry, names))
            return
        pictures = self._draw(predictions, index)
        for slot in self.slots:
            missed = _epoch_items(entry, [p.name for p in pictures])
            self._call(slot, missed, lambda s=slot: s.tracker.log_epoch(entry, pictures))

    @property
    def _drawing(self) -> bool:
        return self.pictures is not None and self.picture_error is None

    def _draw(self, predictions: np.ndarray | None, index: np.ndarray | None) -> list[Picture]:
        if not self._drawing or predictions is None or index is None:
            return []
        try:
            return self.pictures.draw(predictions, index)
        except Exception as exc:  # noqa: BLE001 - an image gone or unreadable: no pictures, the figures still go
            self.picture_error = f"{type(exc).__name__}: {one_line(exc)}"[:500]
            print(f"hgbench: warning: no more pictures for the trackers ({self.picture_error})", file=sys.stderr)
            return []

    def log_final(self, record: Mapping[str, Any]) -> None:
        """The finished run's figures, settings and record."""
        missed = [
            {"step": final_step(record), "kind": "final", "names": sorted(final_figures(record))},
            {"step": None, "kind": "record", "names": [f"{record.get('run_id')}.json"]},
        ]
        for slot in self.slots:
            self._call(slot, missed, lambda s=slot: s.tracker.log_final(record))

    def close(self, status: str) -> None:
        for slot in self.slots:
            self._call(slot, [], lambda s=slot: s.tracker.close(status))

    def state(self) -> dict | None:
        """The record's ``tracking`` section: per tracker where it logs, its first error and what it missed."""
        if not self.slots:
            return None
        state: dict[str, Any] = {slot.tracker.name: slot.state() for slot in self.slots}
        if self.picture_error is not None:
            state["pictures_error"] = self.picture_error
        return state


def _epoch_item(entry: Mapping[str, Any]) -> dict:
    return {"step": entry["epoch"], "kind": "epoch", "names": sorted(epoch_figures(entry))}


def _epoch_items(entry: Mapping[str, Any], pictures: list[str]) -> list[dict]:
    """An epoch's figures and, when any, its pictures, as the record lists them unsent."""
    items = [_epoch_item(entry)]
    if pictures:
        items.append({"step": entry["epoch"], "kind": "pictures", "names": pictures})
    return items
