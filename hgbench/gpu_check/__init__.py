"""`make gpu-check`: every GPU claim of the manual measured on the machine at hand, in one command with no install.

``python3 -m hgbench.gpu_check`` (from a checkout, with the Python and torch already there) runs each check as a
subprocess with its own time budget (all of them within 8 minutes on one H100/H200), runs every check even when one
fails or runs out of time, and writes one report, ``results/gpu-check/<machine>/report.json`` and ``report.md``.

- `catalogue`: the checks, each with the manual's claim it tests and its budget (standard library only).
- `runner`: runs the checks as subprocesses under their budgets and writes the report (standard library only, so a
  machine missing one of hgbench's packages still gets a report naming it).
- `protocol`: what a step reports and where (its figures as it measures them, then its verdict).
- `step`: the entry point of one check's subprocess; `checks`: the measurements themselves (torch and hgbench), one
  module per theme.
"""

from __future__ import annotations
