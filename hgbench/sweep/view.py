"""What a sweep shows: a live table of its runs on a terminal, one line per change otherwise; the summary at the end.

At the end: one line per run that did not finish, the counts, and the comparison table (`hgbench.report`) of the
sweep's own records, finished now or skipped as finished before.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from hgbench.report import comparison_table, to_markdown
from hgbench.run.results import load_records
from hgbench.sweep.driver import SweepRun, log_path

DONE = ("finished", "skipped")
EXPLAINED = ("failed", "cancelled", "busy", "skipped")  # states whose reason is shown beside them


def describe(run: SweepRun) -> str:
    """The run's state in a few words: ``running, epoch 3 of 50, PCKh 41.20``."""
    parts = [run.status]
    if run.status in ("running", "finished", "failed", "cancelled") and run.epochs_done:
        parts.append(f"epoch {run.epochs_done} of {run.config.epochs}")
        if run.pckh is not None:
            parts.append(f"PCKh {run.pckh:.2f}")
    if run.attempts > 1:
        parts.append(f"attempt {run.attempts}")
    if run.reason and run.status in EXPLAINED:
        parts.append(run.reason)
    return ", ".join(parts)


class LineView:
    """One line per change, for logs and pipes."""

    def __init__(self, runs: Sequence[SweepRun], stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.runs, self.stream, self.quiet = runs, stream or sys.stdout, quiet
        self._last: dict[int, str] = {}

    def __enter__(self) -> LineView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def changed(self, run: SweepRun, note: str | None = None) -> None:
        line = describe(run)
        if note is None and self._last.get(id(run)) == line:
            return
        if self.quiet and note is None and run.status in ("queued", "running"):  # --quiet: only how runs end
            return
        self._last[id(run)] = line
        index = self.runs.index(run) + 1
        print(f"hgbench: [{index}/{len(self.runs)}] {run.label}: {note or line}", file=self.stream, flush=True)


class LiveView:
    """A table of every run redrawn in place on a terminal (rich), with the notes (retries) printed above it."""

    def __init__(self, runs: Sequence[SweepRun]) -> None:
        from rich.live import Live

        self.runs = runs
        self._live = Live(self._table(), auto_refresh=False, transient=False)

    def __enter__(self) -> LiveView:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.update(self._table(), refresh=True)
        self._live.stop()

    def changed(self, run: SweepRun, note: str | None = None) -> None:
        if note:
            self._live.console.print(f"hgbench: {run.label}: {note}")
        self._live.update(self._table(), refresh=True)

    def _table(self):
        from rich.table import Table

        table = Table(title="hgbench sweep", title_justify="left")
        for column in ("#", "run", "status", "epoch", "PCKh", "attempt", "note"):
            table.add_column(column, overflow="fold")
        for i, run in enumerate(self.runs, start=1):
            epoch = f"{run.epochs_done}/{run.config.epochs}" if run.epochs_done else ""
            pckh = f"{run.pckh:.2f}" if run.pckh is not None else ""
            note = run.reason if run.status in EXPLAINED else ""
            table.add_row(str(i), run.label, run.status, epoch, pckh, str(run.attempts or ""), note or "")
        return table


def make_view(runs: Sequence[SweepRun], *, quiet: bool = False) -> LineView | LiveView:
    """The live table on a terminal, lines otherwise; with `quiet`, a line when a run ends (or retries)."""
    return LineView(runs, quiet=quiet) if quiet or not sys.stdout.isatty() else LiveView(runs)


def summary(runs: Sequence[SweepRun]) -> list[str]:
    """The end of a sweep: a line per run that did not finish, then the counts."""
    lines = [
        f"hgbench: {run.label}: {run.status}: {run.reason}"
        + (f"; record {run.record}" if run.record else "")
        + (f" (log {log_path(run)})" if run.status == "failed" else "")
        for run in runs
        if run.status not in DONE
    ]
    counts = {s: sum(run.status == s for run in runs) for s in ("finished", "skipped", "busy", "failed", "cancelled")}
    said = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines.append(f"hgbench: sweep of {len(runs)} runs: {said}")
    return lines + next_steps(runs)


def next_steps(runs: Sequence[SweepRun]) -> list[str]:
    """What to do after the sweep: resume what did not end, look at what did."""
    steps = []
    if any(run.status in ("cancelled", "failed") for run in runs):
        steps.append(
            "the same sweep command again resumes the cancelled runs and runs the failed ones again (fix what "
            "their logs say first)"
        )
    outs = sorted({run.config.out for run in runs if run.status in DONE})
    if outs:
        command = " ".join(["hgbench table", *(f"--results {out}" for out in outs if out != "results")])
        steps.append(f"`{command}` and `hgbench plot` show the records")
    return [f"hgbench: next: {'; '.join(steps)}"] if steps else []


def results_table(runs: Sequence[SweepRun]) -> str:
    """The comparison table (Markdown) of the sweep's finished records, or "" when there is none."""
    paths = [run.record for run in runs if run.status in DONE and run.record]
    if not paths:
        return ""
    summaries, _ = load_records(paths)
    return to_markdown(comparison_table(summaries))
