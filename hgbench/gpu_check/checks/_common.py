"""What several GPU checks share: the checkout's root, the skip without CUDA, and `hgbench run` in this process.

torch is imported inside each function, never at the top, so that the environment check reports a missing torch
with the rest of the missing packages instead of failing to import.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hgbench.gpu_check.protocol import Outcome, StepContext

REPO_ROOT = Path(__file__).resolve().parents[3]


def no_cuda() -> Outcome | None:
    """None on a machine with a CUDA device; else the skipped outcome every GPU check returns."""
    import torch

    if torch.cuda.is_available():
        return None
    return Outcome("skipped", "no CUDA device (torch.cuda.is_available() is False)")


def only_record(folder: Path) -> dict[str, Any] | None:
    records = sorted(folder.rglob("*.json"))
    return json.loads(records[-1].read_text()) if records else None


def hgbench_run(ctx: StepContext, name: str, args: list[str]) -> tuple[int, dict[str, Any] | None]:
    """`hgbench run` with these arguments in this process, its record in the work folder, checkpoints discarded."""
    from hgbench.cli import main

    out = ctx.work / name
    with tempfile.TemporaryDirectory(prefix="gpu-check-ckpt-") as ckpt:
        rc = main(["run", *args, "--out", str(out), "--checkpoint-dir", ckpt, "--quiet"])
    record = only_record(out)
    return rc, record
