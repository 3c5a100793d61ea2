"""What a run shows while it works: a rich progress bar per epoch (training, then validation), or one line per epoch.

Logs and pipes (no terminal) and --quiet get the per-epoch line, and a progress line at least every `HEARTBEAT_S`
seconds inside a long epoch, so a log never looks hung; other ranks than 0 stay silent. Work with no steps to count
(`hgbench bench` warming up torch.compile for minutes) gets `slow_work`: a spinner on a terminal, else the same
heartbeat from a thread.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

HEARTBEAT_S = 30.0  # without a bar, a progress line at least this often inside an epoch
_SAID: set[str] = set()  # the lines `say_once` printed in this process


def say_once(line: str) -> bool:
    """Print `line` unless this process printed it already (a sweep of 8 cases needs no 8 identical notices)."""
    if line in _SAID:
        return False
    _SAID.add(line)
    print(line, flush=True)
    return True


@contextlib.contextmanager
def slow_work(
    what: str,
    say: Callable[[str], None],
    *,
    spinner: bool,
    console: Console | None = None,
    every: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[None]:
    """Show that one long call is still going while it runs (a compile: minutes with no step to count).

    Args:
        what: what is going on, e.g. ``compile (fp32+channels_last+compile)``.
        say: prints a line (a log's heartbeat).
        spinner: True on a terminal: a spinner with the time so far, gone once the work ends; False: `say` a line
            every `every` seconds (`HEARTBEAT_S` by default) from a thread, as `ProgressBar` does inside an epoch.
        console: where the spinner draws (default: stderr).
        every: seconds between heartbeat lines (default `HEARTBEAT_S`).
        clock: for the time so far.
    """
    if spinner:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        bar = Progress(
            SpinnerColumn(),
            TextColumn(what),
            TimeElapsedColumn(),
            transient=True,
            console=console or Console(stderr=True),
        )
        with bar:
            bar.add_task(what, total=None)
            yield
        return
    period = HEARTBEAT_S if every is None else every
    start, stop = clock(), threading.Event()

    def beat() -> None:
        while not stop.wait(period):
            say(f"{what}: still going ({clock() - start:.0f} s so far)")

    thread = threading.Thread(target=beat, name="hgbench-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class ProgressBar:
    """A rich progress bar per epoch (or one log line per epoch with quiet=True); silent on non-main ranks."""

    def __init__(
        self,
        *,
        enabled: bool,
        quiet: bool,
        label: str,
        clock: Callable[[], float] = time.perf_counter,
        ticker: bool = True,
    ) -> None:
        """`ticker`: without a bar, a thread repeats the latest line when no step came for `HEARTBEAT_S`."""
        self.enabled, self.quiet, self.label, self.clock, self.ticker = enabled, quiet, label, clock, ticker
        self._bar = None
        self._said = 0.0  # when the last heartbeat line (or the epoch's start) was
        self._task = None
        self._t0 = 0.0
        self._loss: float | None = None
        self._status = ""  # what a log's heartbeat says: the latest step's line
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None  # the heartbeat thread's, while an epoch runs without a bar

    def start_epoch(self, epoch: int, epochs: int, steps: int, batch: int) -> None:
        self._t0 = self._said = self.clock()
        self._batch = batch
        self._prefix, self._steps = f"{self.label} epoch {epoch}/{epochs}", steps
        self._status = f"train step 0 of {steps} (the first step compiles, tunes or waits for workers)"
        if not self.enabled:
            return
        if self.quiet or not sys.stdout.isatty():  # logs and pipes get one line per epoch, and the heartbeat
            if self.ticker:
                self._start_ticker()
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(f"{self._prefix} train", total=steps, info="")

    def step(self, steps: int, loss: float | None) -> None:
        if loss is not None:
            self._loss = loss
        now = self.clock()
        elapsed = now - self._t0
        rate = steps * self._batch / elapsed if elapsed > 0 else 0.0
        loss_txt = f"loss {self._loss:.3g}" if self._loss is not None else "loss …"
        if self._bar is not None:
            self._bar.update(self._task, completed=steps, info=f"{loss_txt}  {rate:.1f} img/s")
        else:
            self._heartbeat(now, f"train step {steps} of {self._steps}, {loss_txt}, {rate:.1f} img/s")

    def _heartbeat(self, now: float, what: str) -> None:
        """A progress line when `HEARTBEAT_S` passed without one (no bar: a log or --quiet)."""
        with self._lock:
            self._status = what
            if self.enabled and now - self._said >= HEARTBEAT_S:
                self._said = now
                print(f"{self._prefix}: {what} ({now - self._t0:.0f} s into the epoch)", flush=True)

    def _start_ticker(self) -> None:
        """A thread that repeats the latest status when no step came for `HEARTBEAT_S` (a first step that compiles
        for minutes, a loader stalled on a slow disk): a log is never silent that long."""
        self._stop_ticker()
        stop = self._stop = threading.Event()

        def tick() -> None:
            while not stop.wait(HEARTBEAT_S / 6):
                with self._lock:
                    now = self.clock()
                    if now - self._said >= HEARTBEAT_S and not stop.is_set():
                        self._said = now
                        print(
                            f"{self._prefix}: {self._status}, still going ({now - self._t0:.0f} s into the epoch)",
                            flush=True,
                        )

        threading.Thread(target=tick, name="hgbench-heartbeat", daemon=True).start()

    def _stop_ticker(self) -> None:
        if self._stop is not None:
            with self._lock:  # so no line is being printed once this returns
                self._stop.set()
            self._stop = None

    def start_validation(self, batches: int) -> None:
        self._val_batches = batches
        if self._bar is not None:
            self._task = self._bar.add_task(f"{self._prefix} validate", total=batches, info="")

    def validation_step(self, batches: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=batches)
        else:
            self._heartbeat(self.clock(), f"validation batch {batches} of {self._val_batches}")

    def abort(self) -> None:
        self._stop_ticker()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def end_epoch(self, entry: dict) -> None:
        self.abort()
        if self.enabled:
            pckh = f"{entry['pckh']:.2f}" if entry.get("pckh") is not None else "n/a"
            print(
                f"{self.label} epoch {entry['epoch']}: loss {entry['train_loss']:.4g}  val loss {entry['val_loss']:.4g}"
                f"  heatmap acc {entry['heatmap_acc']:.3f}  PCKh {pckh}  {entry['wall_s']:.1f} s"
                f"  ({entry['images_per_s']:.1f} img/s, data wait {100 * entry['data_wait_s'] / entry['wall_s']:.0f}%)",
                flush=True,
            )
