"""What a planned sweep costs: its epochs in all, and its time estimated from earlier records of the same settings.

A run's estimate is the newest finished record in its results folder of the same case, form and every setting that
shapes an epoch's time (input size, batch, data and its limits, precision and compilation, workers): its minutes per
steady epoch times the run's epochs, plus its inference pass. A run with no such record has no estimate, and the
line says how many; nothing is guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

from hgbench.run.results import RunSummary, load_records
from hgbench.sweep.driver import SweepRun

# The config keys that must agree for an earlier record to predict a run's minutes per epoch.
TIME_KEYS: tuple[str, ...] = (
    "input_res",
    "batch_size",
    "test_batch_size",
    "data_dir",
    "synthetic_people",
    "limit_train",
    "limit_val",
    "amp",
    "channels_last",
    "compile",
    "fast",
    "decode",
    "workers",
    "device",
    "flip_test",
)


def _key(case: str, as_built: bool, config: dict) -> tuple:
    return (case, as_built, *(str(config.get(k)) for k in TIME_KEYS))


def estimate_minutes(runs: Sequence[SweepRun]) -> tuple[float, int]:
    """(estimated minutes of the runs that have an earlier record, how many runs have none)."""
    records: list[RunSummary] = []
    for out in sorted({run.config.out for run in runs}):
        found, _ = load_records([out])
        records += [r for r in found if r.finished and r.min_per_epoch is not None]
    newest: dict[tuple, RunSummary] = {}
    for r in sorted(records, key=lambda r: r.datetime or ""):
        newest[_key(r.case, r.as_built, r.config)] = r
    minutes, missing = 0.0, 0
    for run in runs:
        cfg = run.config.to_dict()
        known = newest.get(_key(run.config.case, run.config.as_built, cfg))
        if known is None:
            missing += 1
            continue
        passes = 2 if run.config.flip_test else 1  # the flip pass takes about as long again
        minutes += run.config.epochs * known.min_per_epoch + passes * (known.inference_min or 0.0)  # type: ignore[operator]
    return minutes, missing


def cost_line(runs: Sequence[SweepRun]) -> str:
    """``hgbench: 96 epochs in all; about 42 min for 40 runs (earlier records of the same settings), 8 without``."""
    todo = [run for run in runs if run.status == "queued"]
    epochs = sum(run.config.epochs for run in todo)
    if not todo:
        return "hgbench: nothing to run"
    minutes, missing = estimate_minutes(todo)
    known = len(todo) - missing
    if not known:
        return (
            f"hgbench: {epochs} epochs in all; no estimate: no earlier record of these settings "
            "(one run of a case tells how long the others take)"
        )
    without = f"; {missing} run(s) have no earlier record, not counted" if missing else ""
    return (
        f"hgbench: {epochs} epochs in all; about {minutes:.0f} min for {known} run(s) on the machines that measured "
        f"the earlier records of the same settings{without}"
    )
