"""How a run that stops early says why in one line: running out of memory (with a hint), any other error, and a
scheduler's SIGTERM taken as Ctrl-C, so the runner records each as a failed or interrupted run before it exits."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hgbench.errors import RunFailed, missing_dependency, one_line
from hgbench.spec.config import RunConfig


class Terminated:
    """SIGTERM raised as KeyboardInterrupt while armed; `signalled` says whether one came.

    With `once`, a SIGTERM after the first is ignored: it comes while the process is already stopping (cancelling its
    runs), and another KeyboardInterrupt there would cut that short.
    """

    def __init__(self, *, once: bool = False) -> None:
        self.signalled = False
        self.armed = False
        self.once = once

    def arm(self) -> None:
        """Install the handler; again after a library installed its own (`ray.init` installs a bare exit)."""
        try:
            signal.signal(signal.SIGTERM, self._handler)
            self.armed = True
        except ValueError:  # not the main thread: the signal keeps its handler
            pass

    def _handler(self, signum: int, frame: object) -> None:
        if self.once and self.signalled:
            return
        self.signalled = True
        raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def sigterm_as_interrupt(*, once: bool = False, leave_to_submitit: bool = True) -> Iterator[Terminated]:
    """Treat SIGTERM (a scheduler's kill) like Ctrl-C, so the record is marked interrupted before exit; the previous
    handler is back afterwards. `once`: see `Terminated`.

    With `leave_to_submitit` (a run's default), except in a job submitit runs on Slurm: there SIGTERM comes before a
    requeue (preemption, `scontrol requeue`) as before a cancel, and submitit ignores it, acting on USR2 instead (a
    time limit's or a preemption's warning: it checkpoints and requeues the job). Stopping the run at the SIGTERM
    would end the job before the USR2 that requeues it. Nothing is lost: the record on disk already says interrupted
    after the last checkpointed epoch, and the sweep's own cancel sends SIGINT.
    """
    terminated = Terminated(once=once)
    if leave_to_submitit and os.environ.get("SUBMITIT_EXECUTOR") == "slurm":  # set by submitit's job script on Slurm
        yield terminated
        return
    previous = signal.getsignal(signal.SIGTERM)
    terminated.arm()
    try:
        yield terminated
    finally:
        if terminated.armed:  # None: a handler installed from C, which Python cannot put back
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def out_of_memory(exc: BaseException, *, device: torch.device, config: RunConfig) -> RunFailed | None:
    """A one-line `RunFailed` with a hint when `exc` is the device or the host running out of memory (a data worker
    killed by the kernel included), else None.

    PyTorch reports a failed CPU allocation as a plain RuntimeError ("DefaultCPUAllocator: not enough memory"), so
    the message decides; a CUDA one is `torch.OutOfMemoryError`.
    """
    text = str(exc)
    if "DataLoader worker" in text and ("killed by signal" in text or "exited unexpectedly" in text):
        # The kernel's OOM killer takes a worker, and the loader reports only that it died.
        return RunFailed(
            f"{one_line(exc).rstrip('. ')}: usually the host running out of memory; use fewer --workers (now "
            f"{config.workers}) or a smaller --batch"
        )
    # A DataLoader worker's error reaches this process re-raised as its own type (OpenCV's cv2.error "Insufficient
    # memory" included), so the message decides here too.
    is_oom = isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(
        s in text.lower()
        for s in ("out of memory", "not enough memory", "can't allocate memory", "insufficient memory")
    )
    if not is_oom:
        return None
    in_worker = "DataLoader worker" in text
    where = "GPU" if isinstance(exc, torch.OutOfMemoryError) or (device.type == "cuda" and not in_worker) else "host"
    return RunFailed(
        f"out of {where} memory at batch {config.batch_size}, input {config.input_res}x{config.input_res}: use a "
        f"smaller --batch or --input-res (or --amp to halve activations)"
    )


def unexpected_failure(
    exc: Exception, *, epoch: int, device: torch.device, config: RunConfig
) -> tuple[RunFailed, Exception | None]:
    """The one-line `RunFailed` a run records and raises for an error hgbench did not raise itself, and the cause to
    chain it to: none for running out of memory (its hint says it all), `exc` for anything else."""
    failure = out_of_memory(exc, device=device, config=config)
    if failure is not None:
        return failure, None
    missing = missing_dependency(exc)
    if missing is not None:  # raised here or in a DataLoader worker (re-raised as its traceback's text)
        return RunFailed(f"stopped in epoch {epoch}: {missing}"), exc
    # anything else (a library's error on odd input, a bug): the run failed too, and says why
    return RunFailed(f"stopped in epoch {epoch} by {type(exc).__name__}: {one_line(exc)[:300]}"), exc
