"""Where researchers already look: each run's figures, pictures and settings sent to TensorBoard and MLflow.

TensorBoard is on by default (an event folder per run under ``<checkpoint-dir>/tensorboard/``); MLflow is opt-in
(``--mlflow URI``). The trackers are fed from what the record already holds, the runner's epoch entries and the
finished record (`hgbench.tracking.figures` names every figure once), so what either tool shows is exactly the
record's numbers; `hgbench export` sends existing records the same way. Only rank 0 tracks, and a tracker's failure
never stops a run (`hgbench.tracking.fanout`).

- `figures`: the names and values of every figure, from an epoch entry or a finished record; the settings as flat
  hyperparameters.
- `pictures`: the predicted joints of four fixed validation people, drawn each epoch.
- `tensorboard_log`, `mlflow_log`: the two trackers.
- `fanout`: the trackers of one run behind one object; failures become a warning line and a list in the record.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hgbench.errors import HGBenchError
from hgbench.tracking.fanout import Tracker, Tracking
from hgbench.tracking.pictures import PictureSource

__all__ = ["TrackingOptions", "Tracking", "open_tracking", "check_options"]


@dataclass(frozen=True)
class TrackingOptions:
    """Where a run's figures go, beside its record (not part of the record's config: a URI may hold a token)."""

    tensorboard: bool = True  # write TensorBoard event files (--no-tensorboard: none)
    tensorboard_dir: str | None = None  # the folder of every run's event folder; None: <checkpoint-dir>/tensorboard
    mlflow: bool = False  # log to MLflow (--mlflow)
    mlflow_uri: str | None = None  # None with mlflow on: MLflow's default (MLFLOW_TRACKING_URI, else ./mlruns)
    mlflow_experiment: str = "hgbench"
    # TensorBoard turned on by default, not asked for: a machine without the package runs without it (said once).
    tensorboard_asked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrackingOptions:
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__})

    def tensorboard_root(self, checkpoint_dir: str | Path) -> Path:
        return Path(self.tensorboard_dir) if self.tensorboard_dir else Path(checkpoint_dir) / "tensorboard"


def check_options(options: TrackingOptions) -> None:
    """Refuse, before anything runs, a tracker asked for that cannot run here.

    Raises:
        HGBenchError: --tensorboard without the tensorboard package, --mlflow without mlflow, an empty experiment.
    """
    from hgbench.tracking import mlflow_log, tensorboard_log

    if options.tensorboard and options.tensorboard_asked:
        missing = tensorboard_log.available()
        if missing:
            raise HGBenchError(f"--tensorboard: {missing}")
    if options.mlflow:
        missing = mlflow_log.available()
        if missing:
            raise HGBenchError(f"--mlflow: {missing}")
        if not options.mlflow_experiment.strip():
            raise HGBenchError("--mlflow-experiment must not be empty")


def _trackers(options: TrackingOptions, checkpoint_dir: str | Path) -> tuple[list[Tracker], list[str]]:
    """The trackers the options ask for, and a note for each one turned off because its package is missing."""
    from hgbench.tracking import mlflow_log, tensorboard_log

    trackers: list[Tracker] = []
    notes: list[str] = []
    if options.tensorboard:
        missing = tensorboard_log.available()
        if missing is None:
            trackers.append(tensorboard_log.TensorBoardTracker(options.tensorboard_root(checkpoint_dir)))
        else:
            notes.append(f"hgbench: TensorBoard logging off: {missing}")
    if options.mlflow:
        uri = options.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        trackers.append(mlflow_log.MlflowTracker(uri, options.mlflow_experiment))
    return trackers, notes


def open_tracking(
    options: TrackingOptions | None,
    record: dict,
    *,
    checkpoint_dir: str | Path,
    val_ds=None,
    ground_truth=None,
    say: bool = True,
) -> Tracking:
    """The run's trackers, started (a resumed run's continued) with what `record` already holds.

    Args:
        options: what to track (None: the defaults, TensorBoard only).
        record: the run's record as the recorder holds it now.
        checkpoint_dir: the run's checkpoint folder (TensorBoard's default root is inside it).
        val_ds, ground_truth: the validation split the pictures are drawn from (None: no pictures).
        say: print the notes and where each tracker logs.
    """
    options = options or TrackingOptions()
    trackers, notes = _trackers(options, checkpoint_dir)
    pictures = PictureSource(val_ds, ground_truth) if val_ds is not None and ground_truth is not None else None
    root = options.tensorboard_root(checkpoint_dir)
    tracking = Tracking(trackers, pictures=pictures, export_hint=lambda name: _export_hint(name, options, root))
    for note in notes if say else []:
        print(note, flush=True)
    tracking.open(record)
    return tracking


def _export_hint(name: str, options: TrackingOptions, root: Path) -> str:
    """The command that sends a record's missing figures later (the URI without any password in it)."""
    if name == "mlflow":
        from hgbench.tracking.mlflow_log import shown_uri

        uri = shown_uri(options.mlflow_uri) if options.mlflow_uri else "URI"
        return f"`hgbench export mlflow RECORD --uri {uri} --experiment {options.mlflow_experiment}`"
    return f"`hgbench export tensorboard RECORD --out {root}`"
