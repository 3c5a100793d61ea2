"""What a run shows while it works: a rich progress bar per epoch (training, then validation), or one line per epoch.

Logs and pipes (no terminal) get the per-epoch line only; other ranks than 0 stay silent.
"""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """A rich progress bar per epoch (or one log line per epoch with quiet=True); silent on non-main ranks."""

    def __init__(self, *, enabled: bool, quiet: bool, label: str) -> None:
        self.enabled, self.quiet, self.label = enabled, quiet, label
        self._bar = None
        self._task = None
        self._t0 = 0.0
        self._loss: float | None = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, batch: int) -> None:
        self._t0 = time.perf_counter()
        self._batch = batch
        if not self.enabled or self.quiet or not sys.stdout.isatty():  # logs and pipes get one line per epoch
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
        self._prefix = f"{self.label} epoch {epoch}/{epochs}"
        self._task = self._bar.add_task(f"{self._prefix} train", total=steps, info="")

    def step(self, steps: int, loss: float | None) -> None:
        if loss is not None:
            self._loss = loss
        if self._bar is not None:
            elapsed = time.perf_counter() - self._t0
            rate = steps * self._batch / elapsed if elapsed > 0 else 0.0
            loss_txt = f"loss {self._loss:.3g}" if self._loss is not None else "loss …"
            self._bar.update(self._task, completed=steps, info=f"{loss_txt}  {rate:.1f} img/s")

    def start_validation(self, batches: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(f"{self._prefix} validate", total=batches, info="")

    def validation_step(self, batches: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=batches)

    def abort(self) -> None:
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
