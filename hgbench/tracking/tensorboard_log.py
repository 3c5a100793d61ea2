"""A run's TensorBoard event folder, written through `torch.utils.tensorboard`: one folder per run, one curve each.

The folder is ``<root>/<machine id>/<run id>`` (as the record's path under results/), marked by a small
``hgbench-run.json`` naming the run, so a resumed run, a second `hgbench export tensorboard` or the export of a run
that logged live all find it again, and two runs of one number from two results folders never share one (the second
gets ``<run id>-2``). Opening reads what the folder already holds: the epochs already logged are kept, the first
epoch missing (and anything logged after it, say by a killed process whose record rolled back) is purged
(TensorBoard's ``purge_step``), and the record's epochs from there are written again, so TensorBoard shows one curve
with every step once. The final figures and the HParams entry (spec, config and model as hyperparameters, the final
figures as their metrics, so a sweep's runs compare in one table) are written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hgbench.files.atomic_io import write_json_atomic
from hgbench.files.bounded_read import read_json
from hgbench.tracking.figures import (
    EPOCH_FIGURES,
    FINAL_FIGURES,
    FINAL_SENTINEL,
    epoch_figures,
    epochs_of,
    final_figures,
    final_step,
    hparams,
    machine_of,
    run_key,
    safe_name,
)
from hgbench.tracking.pictures import Picture

MARKER = "hgbench-run.json"  # beside the event files: which run the folder belongs to
MARKER_BYTES = 64 << 10  # a marker is a hundred bytes; a larger file is not one hgbench wrote
HPARAMS_TAG = "_hparams_/session_start_info"  # written by the HParams summary: present once it was logged
LAST_EPOCH_TAG = list(EPOCH_FIGURES)[-1]  # written last of an epoch's scalars (train/lr): present, the epoch is whole


def available() -> str | None:
    """None when TensorBoard logging can run here, else why not (the package missing)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        return f"the tensorboard package is not installed ({exc.name or exc}); pip install tensorboard"
    return None


def _owner(folder: Path) -> str | None:
    """The run a folder's marker names; None without a marker hgbench could have written (the folder may be shared:
    a link, a FIFO or a huge file there is no marker)."""
    try:
        return read_json(folder / MARKER, limit=MARKER_BYTES, follow_links=False).get("run")
    except (OSError, ValueError, AttributeError):
        return None


def event_dir(root: Path, record: Mapping[str, Any]) -> Path:
    """The run's event folder under `root`: the one marked as this run's, else the first free name."""
    base = root / safe_name(machine_of(record))
    name, key = safe_name(str(record.get("run_id") or "run")), run_key(record)
    for n in range(1, 1000):
        folder = base / (name if n == 1 else f"{name}-{n}")
        if not folder.exists() or _owner(folder) == key:
            return folder
    raise OSError(f"{base}: 999 event folders named {name}-N, none free")


def logged_steps(folder: Path) -> tuple[set[int], set[int], bool]:
    """What an event folder already holds: the epochs logged whole, the steps holding the final figures, and whether
    the HParams entry is there. TensorBoard's own reader, so purged steps count as it shows them (not at all)."""
    if not folder.is_dir() or not any(folder.glob("events.out.tfevents.*")):
        return set(), set(), False
    from tensorboard.backend.event_processing.event_accumulator import (
        IMAGES,
        SCALARS,
        TENSORS,
        EventAccumulator,
    )

    acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0, IMAGES: 1, TENSORS: 1})
    acc.Reload()
    tags = set(acc.Tags().get("scalars", []))

    def steps(tag: str) -> set[int]:
        return {e.step for e in acc.Scalars(tag)} if tag in tags else set()

    epochs = steps(LAST_EPOCH_TAG) & steps("loss/train")
    try:
        has_hparams = HPARAMS_TAG in acc.PluginTagToContent("hparams")
    except KeyError:  # no HParams entry in the folder
        has_hparams = False
    return epochs, steps(FINAL_SENTINEL), has_hparams


def _image_summary(pictures: list[Picture]):
    """The pictures as one summary of already encoded images (torch's add_image would encode each again, as PNG)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    return Summary(
        value=[
            Summary.Value(
                tag=f"pictures/{p.name}",
                image=Summary.Image(height=p.height, width=p.width, colorspace=3, encoded_image_string=p.jpeg),
            )
            for p in pictures
        ]
    )


class TensorBoardTracker:
    """Logs one run to its event folder under `root` (see the module's docstring)."""

    name = "tensorboard"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.folder: Path | None = None
        self._writer = None
        self._purge: int | None = None
        self._final_logged = False
        self._hparams_logged = False
        self.added: list[str] = []  # what this tracker wrote that the folder lacked (export says it)

    def describe(self) -> dict:
        return {"dir": str(self.folder) if self.folder is not None else str(self.root)}

    def open(self, record: Mapping[str, Any]) -> None:
        """Start or continue the run's folder: purge what the record does not hold, write the epochs it lacks."""
        self.folder = event_dir(self.root, record)
        logged, finals, self._hparams_logged = logged_steps(self.folder)
        epochs = epochs_of(record)
        missing = [e for e in epochs if e["epoch"] not in logged]
        first = missing[0]["epoch"] if missing else len(epochs) + 1
        # Purged from `first` on: a step some of whose figures a killed process wrote is written whole again.
        self._final_logged = any(step < first for step in finals)
        self.folder.mkdir(parents=True, exist_ok=True)
        if _owner(self.folder) is None:
            write_json_atomic(self.folder / MARKER, {"run": run_key(record), "record_run_id": record.get("run_id")})
        self._purge = first if any(self.folder.glob("events.out.tfevents.*")) else None
        for entry in missing:
            self._scalars(entry)
        if missing:
            self.added.append(f"epochs {', '.join(str(e['epoch']) for e in missing)}")
            self.writer.flush()

    @property
    def writer(self):
        """The event file, opened on the first write (an export with nothing new leaves no empty file behind)."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder), purge_step=self._purge, flush_secs=30)
        return self._writer

    def _scalars(self, entry: Mapping[str, Any]) -> None:
        for name, value in epoch_figures(entry).items():  # dict order: LAST_EPOCH_TAG last when present
            self.writer.add_scalar(name, value, entry["epoch"])

    def log_epoch(self, entry: Mapping[str, Any], pictures: list[Picture]) -> None:
        self._scalars(entry)
        if pictures:
            # Straight to the event file, already encoded (SummaryWriter's add_image has no way to take JPEG bytes).
            self.writer._get_file_writer().add_summary(_image_summary(pictures), entry["epoch"])
        self.writer.flush()  # an epoch is minutes apart: a kill loses nothing already shown

    def log_final(self, record: Mapping[str, Any]) -> None:
        """The final figures and the HParams entry, each once (a second export of the run adds nothing)."""
        figures = final_figures(record)
        if not figures or (self._final_logged and self._hparams_logged):
            return
        if not self._final_logged:
            for name, value in figures.items():
                self.writer.add_scalar(name, value, final_step(record))
            self._final_logged = True
            self.added.append("final figures")
        if not self._hparams_logged:
            from torch.utils.tensorboard.summary import hparams as hparams_summaries

            # The metrics named here are the final scalars above, read from the same run: the HParams table shows
            # one row per run, every run of a sweep in one table.
            metrics = {name: figures[name] for name in FINAL_FIGURES if name in figures}
            file_writer = self.writer._get_file_writer()  # as torch's add_hparams, but into this run's own folder
            for summary in hparams_summaries(hparams(record), metrics):
                file_writer.add_summary(summary)
            self._hparams_logged = True
            self.added.append("hparams")
        self.writer.flush()

    def close(self, status: str) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):  # a writer that failed already said so; closing must not raise
                self._writer.close()
            self._writer = None
