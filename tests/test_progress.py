"""A run's progress output in a log (no terminal): a line per epoch, and a progress line at least every 30 s inside
a long epoch (training and validation), never more often; work with no steps to count (a compile) says it is still
going the same way, or shows a spinner on a terminal."""

from __future__ import annotations

import io
import threading

import pytest

from hgbench.run.progress import HEARTBEAT_S, ProgressBar, say_once, slow_work


def test_a_long_epoch_in_a_log_says_how_far_it_got_every_30_s(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    bar = ProgressBar(enabled=True, quiet=True, label="case 1", clock=lambda: now[0], ticker=False)
    bar.start_epoch(1, 2, steps=100, batch=6)
    for step in range(1, 101):
        now[0] = step * 1.0  # one step a second: 100 s of training
        bar.step(step, 0.5)
    bar.start_validation(10)
    for batch in range(1, 11):
        now[0] = 100.0 + 4.0 * batch  # 40 s of validation
        bar.validation_step(batch)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "case 1 epoch 1/2: train step 30 of 100, loss 0.5, 6.0 img/s (30 s into the epoch)"
    assert [line.split(": ", 1)[1].split(",")[0].split(" (")[0] for line in lines] == [
        "train step 30 of 100",
        "train step 60 of 100",
        "train step 90 of 100",
        "validation batch 5 of 10",
    ]
    assert HEARTBEAT_S == 30.0


def test_an_epoch_whose_first_step_takes_minutes_still_says_so_in_a_log(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiled first step (or a stalled loader) gives no step to report: the log still hears from the run."""
    import time

    monkeypatch.setattr("hgbench.run.progress.HEARTBEAT_S", 0.05)
    bar = ProgressBar(enabled=True, quiet=True, label="case 1")
    bar.start_epoch(1, 2, steps=100, batch=6)
    deadline = time.monotonic() + 60  # liveness only
    out = ""
    while "still going" not in out and time.monotonic() < deadline:
        time.sleep(0.02)
        out += capsys.readouterr().out
    bar.abort()
    first = out.splitlines()[0]
    assert first.startswith("case 1 epoch 1/2: train step 0 of 100 (the first step compiles")
    assert "still going" in first
    capsys.readouterr()
    time.sleep(0.3)
    assert capsys.readouterr().out == ""  # the epoch ended: no heartbeat after it


def test_silent_ranks_say_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]
    bar = ProgressBar(enabled=False, quiet=True, label="case 1", clock=lambda: now[0])
    bar.start_epoch(1, 1, steps=10, batch=6)
    now[0] = 100.0
    bar.step(10, 0.5)
    assert capsys.readouterr().out == ""


def test_a_notice_is_said_once_a_process(capsys: pytest.CaptureFixture[str]) -> None:
    line = "hgbench: GPU telemetry unavailable (test notice); energy and utilisation recorded as null"
    assert [say_once(line) for _ in range(8)] == [True] + [False] * 7
    assert capsys.readouterr().out == line + "\n"


def test_slow_work_in_a_log_says_it_is_still_going_until_it_ends() -> None:
    lines: list[str] = []
    two = threading.Event()
    ticks = iter(range(0, 10_000, 30))  # the clock: 0 at the start, then 30 s more at each line

    def say(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            two.set()

    with slow_work("compile (fp32+compile)", say, spinner=False, every=0.001, clock=lambda: next(ticks)):
        assert two.wait(60), "no heartbeat line came"
    said = len(lines)  # the heartbeat thread has ended: nothing more comes after the work
    assert lines[:2] == [
        "compile (fp32+compile): still going (30 s so far)",
        "compile (fp32+compile): still going (60 s so far)",
    ]
    assert len(lines) == said


def test_slow_work_on_a_terminal_is_a_spinner_and_no_log_lines() -> None:
    from rich.console import Console

    screen = io.StringIO()
    lines: list[str] = []
    with slow_work(
        "compile (fp32+compile)", lines.append, spinner=True, console=Console(file=screen, force_terminal=True)
    ):
        pass
    assert "compile (fp32+compile)" in screen.getvalue()
    assert lines == []
