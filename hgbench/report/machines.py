"""`hgbench table --machines`: which machine folders a results folder holds, one line each.

A run's record goes to ``results/<machine_id>/``, and the id names the CPU model as that machine reports it (one
AMD EPYC says ``cpu-amd-epyc-7b13-2c-pt2.14.1``, another ``cpu-amd-epyc-2c-pt2.14.1``), so a user cannot guess the
folder to pass to ``--results`` or ``compare``: this lists the folders with what each holds (run records, finished
runs, the torch and the settings they were measured with), each folder's path as the other commands take it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hgbench.report.grouping import _setting
from hgbench.report.table_notes import _common_setting
from hgbench.run.results import RunSummary


@dataclass
class MachineFolder:
    """One folder of run records and what its records say."""

    folder: Path  # the records' folder, as found under the source (e.g. results/cpu-amd-epyc-2c-pt2.14.1)
    records: int = 0  # valid run records, any status
    finished: int = 0  # of which finished (the ones tables, plots and compare read)
    torch: list[str] = field(default_factory=list)  # torch versions seen, in first-seen order
    settings: list[str] = field(default_factory=list)  # the settings seen (dataset, epochs, batch...), first-seen


def machine_folders(summaries: Sequence[RunSummary]) -> list[MachineFolder]:
    """Group run records by the folder that holds them, sorted by folder."""
    found: dict[Path, MachineFolder] = {}
    for run in summaries:
        folder = found.setdefault(run.path.parent, MachineFolder(run.path.parent))
        folder.records += 1
        folder.finished += int(run.finished)
        setting = _common_setting(run, _setting(run), ())
        for seen, value in ((folder.torch, run.torch_version), (folder.settings, setting)):
            if value and value not in seen:
                seen.append(value)
    return [found[k] for k in sorted(found)]


def machine_line(folder: MachineFolder) -> str:
    """``results/cpu-...: 8 records, 8 finished; torch 2.14.1; synthetic data (24 train / 12 val), 2 epochs, ...``"""
    torch = f"torch {', '.join(folder.torch)}" if folder.torch else "torch unknown"
    settings = " | ".join(folder.settings) or "settings unknown"
    if len(folder.settings) > 1:
        settings = f"{len(folder.settings)} settings: {settings}"
    records = f"{folder.records} record{'s' if folder.records != 1 else ''}"
    return f"{folder.folder}: {records}, {folder.finished} finished; {torch}; {settings}"
