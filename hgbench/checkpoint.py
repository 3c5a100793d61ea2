"""Checkpoints: everything needed to resume a run or evaluate its model, written atomically.

A checkpoint holds the case spec, the run config, the epoch reached, the best PCKh, model / optimizer / scheduler
state, the RNG states and the record written so far (nanoGPT's layout plus the spec). Resuming checks that the spec
and the experiment's identity match, so a checkpoint is never silently continued as another case.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hgbench.atomic_io import atomic_output
from hgbench.cases import CaseSpec
from hgbench.errors import HGBenchError, one_line

CHECKPOINT_FORMAT = "hgbench.checkpoint/1"


class NotAnHGBenchCheckpoint(HGBenchError):
    """A readable torch file without hgbench's marker: perhaps another tool's weights (`hgbench.models.weights`)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: Path
    spec: CaseSpec
    config: dict
    epoch: int  # last complete epoch (1-based)
    identity: str  # RunConfig.identity_hash of the run
    state: dict  # the raw dict (model, optimizer, scheduler, rng, record...)

    @property
    def input_res(self) -> int:
        return int(self.config["input_res"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (temp file, fsync, rename): a kill never leaves half a checkpoint.

    Raises:
        HGBenchError: the file could not be written (a full disk); the previous checkpoint is left as it was.
    """
    try:
        with atomic_output(path) as tmp:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    except RuntimeError as exc:
        # torch's zip writer reports a failed write (ENOSPC, EIO) as a RuntimeError, not an OSError.
        if "write" not in str(exc).lower():
            raise
        free = shutil.disk_usage(path.parent).free / 2**20
        raise HGBenchError(
            f"cannot write checkpoint {path} ({free:.0f} MiB free on its disk): {one_line(exc)}; the previous "
            "checkpoint and the record are kept, free some space and continue with --resume"
        ) from None


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by `hgbench run`.

    Raises:
        HGBenchError: missing file, unreadable or foreign file (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise HGBenchError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise HGBenchError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise NotAnHGBenchCheckpoint(f"{path} is not an hgbench checkpoint (no {CHECKPOINT_FORMAT!r} marker)")
    try:
        spec = CaseSpec.from_dict(state["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HGBenchError(f"checkpoint {path} has a damaged case spec: {exc}") from exc
    return Checkpoint(
        path=path, spec=spec, config=state["config"], epoch=int(state["epoch"]), identity=state["identity"], state=state
    )


def check_compatible(ckpt: Checkpoint, spec: CaseSpec, input_res: int) -> None:
    """Refuse to load a checkpoint into another network or input size, saying which case it belongs to."""
    if ckpt.spec.fingerprint() != spec.fingerprint():
        raise HGBenchError(
            f"checkpoint {ckpt.path} belongs to {ckpt.spec.label} ({ckpt.spec.description}), not {spec.label}"
        )
    if ckpt.input_res != input_res:
        raise HGBenchError(
            f"checkpoint {ckpt.path} was trained at input {ckpt.input_res}x{ckpt.input_res}, not {input_res}"
        )
