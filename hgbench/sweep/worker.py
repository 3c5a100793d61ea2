"""What every engine runs for one run of a sweep: `run_one`, a plain top-level function (picklable for Ray, submitit).

It is `hgbench run` for one config: it skips a run this machine already finished, continues an interrupted one from
its checkpoint, and writes the record atomically into the config's results folder, exactly as `hgbench run` does. A
run another process is training (another sweep's worker, an `hgbench run`) holds its claim (`hgbench.files.claim`): the
worker leaves it alone and says "busy", naming that process. It returns a small summary (a dict of plain values)
rather than raising, so that a run failing on its own terms (NaN loss, bad data) reads as "failed" on every engine,
while a worker that dies returns nothing at all (a retry).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Test seam: when set to a path that does not exist yet, the worker creates it, stops after its first epoch's
# checkpoint and exits the process at once (os._exit), as a killed worker would; a retry finds the marker and runs on.
DIE_ONCE_ENV = "HGBENCH_SWEEP_TEST_DIE_ONCE"
# Test seam: when set to a folder, the worker holds each run once, after its first epoch's checkpoint and with its
# claim held, until a signal stops it (a Slurm time limit, a preemption, a cancel), leaving a file named after the
# run's identity there (holding: the worker's pid); the run's next start finds the file and runs on. The cluster
# tests interrupt runs mid-way so, whatever the machine's speed. A hold no signal ends runs on after HOLD_LIMIT_S.
HOLD_ONCE_ENV = "HGBENCH_SWEEP_TEST_HOLD_ONCE"
HOLD_LIMIT_S = 600.0


def run_one(
    config: dict[str, Any], *, keep_checkpoint: bool, log_path: str | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Run (or resume, or skip) the run `config` describes; its outcome as plain values.

    Args:
        config: a `RunConfig.to_dict()`.
        keep_checkpoint: keep the checkpoint once the run finished.
        log_path: append the run's own output (one line per epoch) here instead of the worker's stdout.
        threads: the CPU threads torch may use (the CPUs the engine gave the job; None: torch's default, every core).

    Returns:
        ``{"status": finished | skipped | busy | failed | interrupted, "record": path or None, "reason": one line or
        None}``; interrupted means the worker was stopped (Ctrl-C, a scheduler's SIGTERM, a cancel) after writing its
        record; busy, that another process is training the run.
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)  # side by side, runs that each take every core only fight over them
    if log_path is None:
        return _run(config, keep_checkpoint=keep_checkpoint)
    from hgbench.files.atomic_io import open_append

    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    try:  # the logs lie in the (perhaps shared) checkpoint folder: never appended to through a planted link
        raw = open_append(log_path)
    except OSError as exc:
        return {"status": "failed", "record": None, "reason": f"cannot write the run's log: {exc.strerror or exc}"}
    with io.TextIOWrapper(raw, encoding="utf-8", line_buffering=True) as log:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            return _run(config, keep_checkpoint=keep_checkpoint)


def _run(config: dict[str, Any], *, keep_checkpoint: bool) -> dict[str, Any]:
    from hgbench.errors import HGBenchError, one_line
    from hgbench.files.claim import RunBusy
    from hgbench.measure.environment import collect_environment, machine_id
    from hgbench.run import results as store
    from hgbench.run.plan import planned_identity, resolve_device
    from hgbench.run.recorder import AlreadyFinished
    from hgbench.run.runner import run
    from hgbench.spec.config import RunConfig
    from hgbench.tracking import TrackingOptions

    config = dict(config)
    force = bool(config.pop("force", False))  # sweep --force: measure a finished run again, in a new record
    tracking = TrackingOptions.from_dict(config.pop("tracking", None))  # the sweep's --tensorboard / --mlflow
    try:
        cfg = RunConfig(**config)
        machine = machine_id(collect_environment(resolve_device(cfg.device)))
        identity = planned_identity(cfg)
        done = store.find_finished(cfg.out, identity, machine_id=machine)
        if done is not None and not force:
            return {"status": "skipped", "record": str(done), "reason": "already finished with this config"}
        stop, hold = _die_once_epoch(), _hold_once(identity)
        # A forced run starts anew: resuming would complete the finished run's own record, not keep it.
        outcome = run(
            cfg,
            resume=done is None,
            quiet=True,
            keep_checkpoint=keep_checkpoint,
            stop_after_epoch=stop,
            tracking=tracking,
            after_epoch=hold,
        )
        if stop is not None and outcome.status == "interrupted":
            sys.stdout.flush()
            os._exit(137)
    except KeyboardInterrupt as exc:
        return {"status": "interrupted", "record": None, "reason": f"stopped ({one_line(exc) or 'Ctrl-C'})"}
    except RunBusy as exc:
        return {"status": "busy", "record": None, "reason": one_line(exc)}
    except AlreadyFinished as exc:  # finished since the check above, or with its record in another results folder
        return {"status": "skipped", "record": str(exc.record), "reason": one_line(exc)}
    except HGBenchError as exc:
        return {"status": "failed", "record": None, "reason": one_line(exc)}
    except Exception as exc:  # a bug: still this run's failure, not the sweep's; the log keeps the traceback
        traceback.print_exc()
        return {"status": "failed", "record": None, "reason": f"{type(exc).__name__}: {one_line(exc)}"}
    path = str(outcome.record_path) if outcome.record_path is not None else None
    return {"status": outcome.status, "record": path, "reason": None}


def _die_once_epoch() -> int | None:
    marker = os.environ.get(DIE_ONCE_ENV)
    if not marker or Path(marker).exists():
        return None
    Path(marker).touch()
    return 1


def _hold_once(identity: str) -> Callable[[int], None] | None:
    folder = os.environ.get(HOLD_ONCE_ENV)
    marker = Path(folder) / identity if folder else None
    if marker is None or marker.exists():
        return None

    def hold(epoch: int) -> None:
        if epoch != 1:
            return
        marker.write_text(f"{os.getpid()}\n", encoding="utf-8")
        deadline = time.monotonic() + HOLD_LIMIT_S
        while time.monotonic() < deadline:  # a signal's handler raising (or SIGKILL) ends it
            time.sleep(0.2)

    return hold
