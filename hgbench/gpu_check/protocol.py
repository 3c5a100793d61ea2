"""What passes between a GPU check and the runner: the result file's place and shape, and a check's verdict.

A check writes its figures as it measures them (`StepContext.update`) and its verdict at the end (`finish`) into the
JSON file named in ``$HGBENCH_GPU_CHECK_RESULT``, atomically each time: a step stopped for its budget still leaves
what it had measured. Standard library only (`hgbench.files.atomic_io` and `hgbench.errors` are too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hgbench.errors import PIP_NAMES, missing_package, missing_package_in
from hgbench.files.atomic_io import write_json_atomic

RESULT_ENV = "HGBENCH_GPU_CHECK_RESULT"  # where the step writes its result (JSON)
WORK_ENV = "HGBENCH_GPU_CHECK_WORK"  # a folder it may write into (run records); kept beside the report

__all__ = ["PIP_NAMES", "RESULT_ENV", "WORK_ENV", "Outcome", "StepContext", "missing_package", "missing_package_in"]


@dataclass
class Outcome:
    """A check's verdict."""

    status: str  # "pass" | "fail" | "skipped"
    reason: str | None = None  # one line; required for fail and skipped
    summary: str | None = None  # the measured figures in a few words


@dataclass
class StepContext:
    """What a check gets: where to report, a folder to work in, and its figures so far."""

    result_path: Path | None
    work: Path
    figures: dict[str, Any] = field(default_factory=dict)

    def update(self, **figures: Any) -> None:
        """Add figures and write them out now (a step stopped later still reports them)."""
        self.figures.update(figures)
        self._write({"status": None, "figures": self.figures})

    def finish(self, outcome: Outcome) -> None:
        data = {"status": outcome.status, "reason": outcome.reason, "summary": outcome.summary}
        self._write({**data, "figures": self.figures})

    def _write(self, data: dict[str, Any]) -> None:
        if self.result_path is not None:
            write_json_atomic(self.result_path, data)
