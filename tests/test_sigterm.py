"""SIGTERM taken as Ctrl-C (`hgbench.run.failures.sigterm_as_interrupt`), the one handler the runner and the sweep
driver share: it interrupts, says it did, ignores a second SIGTERM while the sweep cancels, is put back after a library
replaced it, and leaves the handler it found when it ends.

`signal.raise_signal` runs the Python handler before it returns, so nothing here waits on the signal's delivery."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from hgbench.run.failures import sigterm_as_interrupt


@pytest.fixture
def seen() -> Iterator[list[int]]:
    """A recording SIGTERM handler in place of the default one (which would end pytest), put back afterwards."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_interrupts_and_the_previous_handler_is_back_afterwards(seen: list[int]) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), sigterm_as_interrupt() as terminated:
        signal.raise_signal(signal.SIGTERM)
    assert terminated.signalled
    assert signal.getsignal(signal.SIGTERM) is before
    signal.raise_signal(signal.SIGTERM)
    assert seen == [signal.SIGTERM]  # the handler found before runs again, the block's one does not


def test_once_a_second_sigterm_while_cancelling_is_not_another_interrupt(seen: list[int]) -> None:
    with sigterm_as_interrupt(once=True) as terminated:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # while the sweep cancels its runs: ignored
        assert terminated.signalled
    assert seen == []


def test_without_once_every_sigterm_interrupts(seen: list[int]) -> None:
    with sigterm_as_interrupt() as terminated:
        for _ in range(2):
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGTERM)
        assert terminated.signalled


def test_arm_puts_the_handler_back_after_a_library_replaced_it_and_the_first_one_is_restored(seen: list[int]) -> None:
    """As `ray.init` installs its own SIGTERM handler inside the sweep's block: arm() again, and at the end the
    handler from before the block comes back, not the library's."""
    before = signal.getsignal(signal.SIGTERM)
    intruder: list[int] = []
    with sigterm_as_interrupt(once=True) as terminated:
        signal.signal(signal.SIGTERM, lambda signum, frame: intruder.append(signum))
        terminated.arm()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    assert intruder == []
    assert seen == []
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("leave_to_submitit", [True, False])
def test_inside_a_submitit_slurm_job_only_the_runs_handler_stands_aside(
    seen: list[int], monkeypatch: pytest.MonkeyPatch, leave_to_submitit: bool
) -> None:
    """A run leaves SIGTERM to submitit there (it precedes a requeue); the sweep's driver, no submitit job, does not."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    interrupted = False
    with sigterm_as_interrupt(leave_to_submitit=leave_to_submitit) as terminated:
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            interrupted = True
    assert interrupted is not leave_to_submitit
    assert terminated.signalled is not leave_to_submitit
    assert seen == ([signal.SIGTERM] if leave_to_submitit else [])


def test_outside_the_main_thread_the_handler_is_left_alone(seen: list[int]) -> None:
    before = signal.getsignal(signal.SIGTERM)
    armed: list[bool] = []

    def in_thread() -> None:
        with sigterm_as_interrupt() as terminated:  # Python lets only the main thread set a handler
            armed.append(terminated.armed)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(timeout=60)
    assert armed == [False]
    assert signal.getsignal(signal.SIGTERM) is before
