"""The run's recorder: owns the record of one run and writes it, with the checkpoint, atomically.

The record on disk always says what a reader should believe if the process died right now: "interrupted after epoch
k" until the run finishes. After every epoch the checkpoint is written first and then the record, so a kill between
the two leaves a record one epoch behind its checkpoint, never ahead. Only rank 0 writes; every rank holds the same
record (broadcast at the start) so a resumed or failed run can say how far it got.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hgbench.errors import HGBenchError
from hgbench.files.atomic_io import next_record_path, write_json_atomic
from hgbench.files.bounded_read import read_json
from hgbench.measure.environment import collect_commit_info, machine_id, slurm_job
from hgbench.run.plan import RunPlan
from hgbench.run.record import contention_summary, new_record, train_summary, utc_now
from hgbench.tracking import Tracking, TrackingOptions, open_tracking
from hgbench.train.checkpoint import Checkpoint, save_checkpoint
from hgbench.train.distributed import broadcast_object


class AlreadyFinished(HGBenchError):
    """The run a checkpoint belongs to has finished: it is never trained or measured again, nor its record rewritten."""

    def __init__(self, message: str, record: Path) -> None:
        super().__init__(message)
        self.record = record


def check_continuable(plan: RunPlan, ckpt: Checkpoint) -> None:
    """Refuse to continue a checkpoint whose run finished, or whose record lies in another results folder.

    A finished run's checkpoint stays (to evaluate or fine-tune from); continuing it would measure the run again and
    rewrite its finished record. A run begun with another ``--out`` has its record there: continuing it here would
    write into that folder, not the one this run was given.

    Raises:
        AlreadyFinished: the record the checkpoint names says finished.
        HGBenchError: that record is in another results folder.
    """
    previous = Path(ckpt.state.get("record_path") or "")
    if not previous.name or not previous.is_file():
        return  # no record to continue: the run's record starts afresh here, with the checkpoint's epochs
    try:
        status = read_json(previous).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    label = f"{plan.spec.label} seed {plan.config.seed}"
    if status == "finished":
        raise AlreadyFinished(
            f"{label} already finished with these settings: its record is {previous} (checkpoint {plan.last_path}); "
            "nothing was trained or measured again",
            previous,
        )
    out = Path(plan.config.out)
    if previous.resolve().parent.parent != out.resolve():
        raise HGBenchError(
            f"{label} was begun with another results folder: its record {previous} continues there, not in {out}; "
            f"resume it with --out {previous.parent.parent}, or give this run another --checkpoint-dir"
        )


def slurm_history(earlier: Any, job: dict[str, Any] | None) -> dict[str, Any] | None:
    """The record's ``slurm`` section: every Slurm job that ran the run so far with the times Slurm requeued it, this
    process's job (`hgbench.measure.environment.slurm_job`) added or brought up to date, and ``requeues``, their sum;
    None when no Slurm job ever ran it. A sweep's retry is another job, so it adds an entry rather than a requeue."""
    jobs = []
    for entry in earlier.get("jobs", []) if isinstance(earlier, dict) else []:
        if isinstance(entry, dict) and isinstance(entry.get("job_id"), str) and isinstance(entry.get("restarts"), int):
            jobs.append({"job_id": entry["job_id"], "restarts": entry["restarts"]})
    if job is not None:
        same = next((entry for entry in jobs if entry["job_id"] == job["job_id"]), None)
        if same is None:
            jobs.append(dict(job))
        else:
            same["restarts"] = max(same["restarts"], job["restarts"])
    if not jobs:
        return None
    return {"jobs": jobs, "requeues": sum(entry["restarts"] for entry in jobs)}


class Recorder:
    """The record of one run, from its first write to its final status.

    Args:
        plan: the resolved run.
        machine_info: `collect_environment` of the run's device.
        model: the record's ``model`` section (params, params used, GFLOPs and the input size they were counted at).
        resumed: the checkpoint a resumed run continues from: its record is completed, not a new one started.
    """

    def __init__(self, plan: RunPlan, *, machine_info: dict, model: dict, resumed: Checkpoint | None) -> None:
        self.plan = plan
        self.writes = plan.ctx.is_main
        self.path: Path | None = None
        record = None
        if self.writes:
            previous = Path(resumed.state["record_path"]) if resumed is not None else None
            if previous is not None and previous.is_file():
                self.path, record = previous, resumed.state["record"]
                record["slurm"] = slurm_history(record.get("slurm"), slurm_job())
                write_json_atomic(self.path, record)
            else:
                commit_info = collect_commit_info()  # before the record file is claimed: it runs git
                self.path = next_record_path(plan.config.out, machine_id(machine_info), plan.stem)
                try:
                    record = new_record(
                        run_id=self.path.stem,
                        machine_info=machine_info,
                        commit_info=commit_info,
                        spec=plan.spec.to_dict(),
                        spec_fingerprint=plan.spec.fingerprint(),
                        config=plan.config.to_dict(),
                        dataset=plan.dataset,
                        model=model,
                        checkpoint=str(plan.last_path),
                        fast_mode=plan.fast_mode,
                        setting_notes=plan.setting_notes,
                    )
                    earlier = resumed.state["record"] if resumed is not None else {}
                    if resumed is not None:
                        record["results"]["epochs"] = earlier["results"]["epochs"]
                    record["slurm"] = slurm_history(earlier.get("slurm"), slurm_job())
                    write_json_atomic(self.path, record)
                except BaseException:  # Ctrl-C or SIGTERM this moment: no empty record file is left behind
                    self.path.unlink(missing_ok=True)
                    raise
        self.record: dict = broadcast_object(plan.ctx, record)
        # The trackers' state (hgbench.tracking): where the figures went and what could not be sent; in every write.
        self.tracking_state: Callable[[], dict | None] | None = None
        self._checkpointed = self.epochs_done  # epochs the checkpoint on disk holds (a resumed run's, or none)

    @property
    def epochs_done(self) -> int:
        return len(self.record["results"]["epochs"])

    def track(self, options: TrackingOptions | None, *, say: bool) -> Tracking:
        """Rank 0's trackers (hgbench.tracking), started with what the record holds (a resumed run's epochs too); every
        write of the record then carries their state, what they could not take included. Other ranks track nothing.
        """
        if not self.writes:
            return Tracking()
        plan = self.plan
        trackers = open_tracking(
            options,
            self.record,
            checkpoint_dir=plan.config.checkpoint_dir,
            val_ds=plan.val_ds,
            ground_truth=plan.ground_truth,
            say=say,
        )
        self.tracking_state = trackers.state
        return trackers

    def add_epoch(self, entry: dict, *, heatmap_acc: float | None, skipped_images: list[str]) -> None:
        """One finished epoch's figures (written with the next `checkpoint`)."""
        self.record["results"]["epochs"].append(entry)
        self.record["results"]["heatmap_acc"] = heatmap_acc
        self.record["dataset"]["skipped_images"] = skipped_images

    def checkpoint(self, epoch: int, state: dict[str, Any]) -> None:
        """The checkpoint after `epoch` (model, optimiser, ... in `state`), then the record that points at it."""
        if not self.writes:
            return
        reason = f"stopped after epoch {epoch} of {self.plan.config.epochs}; continue with --resume"
        self._mark("interrupted", reason)
        payload = {
            "spec": self.plan.spec.to_dict(),
            "config": self.plan.config.to_dict(),
            "epoch": epoch,
            "identity": self.plan.identity,
            "record_path": str(self.path),
            "record": self.record,
            **state,
        }
        save_checkpoint(self.plan.last_path, payload)
        self._checkpointed = self.epochs_done
        write_json_atomic(self.path, self.record)

    def set_results(self, **results: Any) -> None:
        """Final figures (``pckh``, ``inference``, ``peak_memory_mib``, ``peak_host_memory_mib``, ``telemetry``)."""
        self.record["results"].update(results)

    def finish(self, status: str, reason: str | None, *, keep_checkpoint: bool = True) -> None:
        """Write the final status; a finished run that keeps no checkpoint says so first, then deletes it."""
        if not self.writes:
            return
        if status == "finished" and not keep_checkpoint:
            self.record["checkpoint"] = None  # the record first: a kill in between leaves a stray file, no lie
        self._mark(status, reason)
        write_json_atomic(self.path, self.record)
        if status == "finished" and not keep_checkpoint:
            shutil.rmtree(self.plan.run_dir, ignore_errors=True)

    def rewrite(self) -> None:
        """Write the record again as it stands, with the trackers' state (after a finished run's final figures)."""
        if not self.writes:
            return
        self._note_tracking()
        write_json_atomic(self.path, self.record)

    def _note_tracking(self) -> None:
        if self.tracking_state is None:
            return
        state = self.tracking_state()
        if state is None:  # no tracker this time: a resumed run's earlier section would describe another process
            self.record.pop("tracking", None)
        else:
            self.record["tracking"] = state

    def interrupted(self, epoch: int, *, cause: str = "interrupted") -> None:
        """Ctrl-C or SIGTERM (or a lost peer: `cause`) during `epoch`: the record says what is safe to resume from.

        An epoch whose checkpoint was not written (the signal came while it was being saved) is dropped from the
        record: a resumed run trains it again, and the record never claims more than the checkpoint holds.
        """
        del self.record["results"]["epochs"][self._checkpointed :]
        done = self.epochs_done
        self.finish(
            "interrupted",
            f"{cause} during epoch {epoch}; epochs 1-{done} are checkpointed; continue with --resume"
            if done
            else f"{cause} during epoch {epoch}",
        )

    def _mark(self, status: str, reason: str | None) -> None:
        record = self.record
        record["datetime"] = utc_now()
        record["status"], record["status_reason"] = status, reason
        if status == "finished":
            record["finished"] = record["datetime"]
        record["results"]["train"] = train_summary(record["results"]["epochs"])
        mig = (record["machine_info"].get("gpu_state") or {}).get("mig") is True  # NVML's answer at the start
        record["results"]["contention"] = contention_summary(
            record["results"], self.plan.config.gpu_share, mig_slice=mig
        )
        self._note_tracking()
