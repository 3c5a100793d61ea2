"""Checkpoints: everything needed to resume a run or evaluate its model, written atomically.

A checkpoint holds the case spec, the run config, the epoch reached, the best PCKh, model / optimizer / scheduler
state, the RNG states (tensors and plain values only, so it loads with ``weights_only=True``) and the record written
so far (nanoGPT's layout plus the spec). Resuming checks that the spec and the experiment's identity match, so a
checkpoint is never silently continued as another case.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hgbench.errors import HGBenchError, one_line
from hgbench.files.atomic_io import atomic_file, jsonable
from hgbench.models.torch_file import load_torch_file
from hgbench.models.weights import file_bound
from hgbench.spec.cases import CaseSpec

CHECKPOINT_FORMAT = "hgbench.checkpoint/1"

# Entries that are plain JSON-like values (they are stored as the record stores them).
_PLAIN_ENTRIES = {"spec", "config", "record", "best_pckh"}


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
    document = {"format": CHECKPOINT_FORMAT, **payload}
    for key in _PLAIN_ENTRIES.intersection(document):
        # Through JSON, as the record is written: a numpy scalar or a str subclass (torch's version) would need a
        # full unpickle to load again.
        document[key] = json.loads(json.dumps(jsonable(document[key])))
    try:
        with atomic_file(path) as fh:  # a new temp file written through its own descriptor: never a planted link
            torch.save(document, fh)
    except (RuntimeError, OSError) as exc:
        # Anything the write itself raises is a failed write (ENOSPC, EIO), whatever its wording: torch's zip writer
        # reports one as a RuntimeError ("enforce fail at inline_container.cc ... unexpected pos"), the fsync and the
        # rename as an OSError. The document was built above, so a bug in it never reads as a full disk.
        free = _free_mib(path.parent)
        raise HGBenchError(
            f"cannot write checkpoint {path} ({free} free on its disk): {one_line(exc)[:200]}; the previous "
            "checkpoint and the record are kept, free some space and continue with --resume"
        ) from None


def _free_mib(folder: Path) -> str:
    """Free space on `folder`'s disk for a message, e.g. ``12 MiB`` (``? MiB`` when it cannot be read)."""
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB"
    except OSError:
        return "? MiB"


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu", spec: CaseSpec | None = None
) -> Checkpoint:
    """Read a checkpoint written by `hgbench run`, weights-only (`hgbench.models.torch_file.load_torch_file`): a file
    that would need a full unpickle, which can run arbitrary code, is refused, and so is one whose zip records declare
    more than the file holds.

    Args:
        spec: the network the checkpoint should be of, where known (a resumed run's): a file larger than its weights
            and training state can be (`hgbench.models.weights.file_bound`) is refused before it is read.

    Raises:
        HGBenchError: missing file, unreadable, oversized or foreign file (one line naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise HGBenchError(f"checkpoint not found: {path}")
    bound = file_bound(spec) if spec is not None else None
    state, _ = load_torch_file(path, what="checkpoint", max_bytes=bound, map_location=map_location)  # no pickle runs
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
