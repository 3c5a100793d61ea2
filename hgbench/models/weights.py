"""Weights saved by hgbench or by the tools it grew out of, mapped onto a case's network; the layout read from the keys.

Two module trees are known, told apart by their keys (never by the file's name):

- **hgbench**: `StackedHourglass` as built here; an hourglass's levels are ``hg.<stack>.levels.<level>.<unit>...`` and
  a bottleneck's projection skip is one conv, ``downsample.weight``.
- **pytorch-pose**: the ``HourglassNet`` of bearpaw/pytorch-pose, which anibali/pytorch-stacked-hourglass and the
  study's own code keep. Its modules are ours, in the same order and of the same shapes; only two names differ: the
  levels sit under ``hg.<stack>.hg.<level>...`` and the projection skip is a one-conv ``Sequential``
  (``downsample.0.weight``). The forward passes match too (pre-activation bottleneck, nearest 2x upsampling, the
  merge ``x + fc_(y) + score_(score)``), so renaming the keys reproduces its heatmaps exactly; the study's as-built
  quirks (stacks built but not run, hourglass units built but not called, GroupNorm, the re-applied 3x3 step) are
  `CaseSpec` fields of ours with the same module tree.

Every file is read weights-only (`hgbench.models.torch_file.load_torch_file`): a file that needs a full unpickle,
which can run arbitrary code, is refused, never read another way; a file larger than the case's weights and training
state could be (`file_bound`), or whose zip records declare more than it holds, is refused before torch reads it.

Containers: a plain ``state_dict`` (anibali's released hg1/hg2/hg8), a training
checkpoint with a ``state_dict`` entry (pytorch-pose: ``{'epoch', 'arch', 'state_dict', 'optimizer', ...}``), an
hgbench checkpoint (its ``model`` entry); keys may carry DataParallel's ``module.`` prefix. A file that does not fit
the case is one line with the counts of missing and unexpected keys and the first shape that differs.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hgbench.errors import HGBenchError
from hgbench.models.hourglass import build_model
from hgbench.models.torch_file import PICKLE_BYTES, load_torch_file
from hgbench.spec.cases import CaseSpec
from hgbench.spec.footprint import spec_params

HGBENCH = "hgbench"
PYTORCH_POSE = "pytorch-pose"

# Renames from each layout's key names to ours, applied in order to every key.
_RENAMES: dict[str, tuple[tuple[re.Pattern[str], str], ...]] = {
    HGBENCH: (),
    PYTORCH_POSE: (
        (re.compile(r"^hg\.(\d+)\.hg\."), r"hg.\1.levels."),
        (re.compile(r"\.downsample\.0\."), ".downsample."),
    ),
}
_LAYOUT_MARKS: dict[str, re.Pattern[str]] = {
    HGBENCH: re.compile(r"^hg\.\d+\.levels\."),
    PYTORCH_POSE: re.compile(r"^hg\.\d+\.hg\."),
}
_DATA_PARALLEL = "module."

# BatchNorm's step counter: files from before PyTorch 0.4.1 lack it, and it changes no output (momentum is fixed).
_OPTIONAL_SUFFIX = ".num_batches_tracked"


@dataclass(frozen=True)
class Weights:
    """A file's weights in hgbench's key layout, checked against one case's network."""

    path: Path
    state_dict: dict[str, torch.Tensor]  # hgbench's keys, every key of the case's network
    layout: str  # the module tree the file was saved from: "hgbench" or "pytorch-pose"
    container: str  # how they were stored, e.g. "training checkpoint (epoch 30), DataParallel keys"
    sha256: str  # of the file's bytes

    def describe(self) -> str:
        """One phrase for logs and reports: ``pytorch-pose layout, training checkpoint (epoch 30)``."""
        return f"{self.layout} layout, {self.container}"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_bound(spec: CaseSpec) -> int:
    """The largest weights file or checkpoint `spec`'s network can have: its parameters in float64 five times over
    (weights, gradients' moments and a margin: Adam's checkpoint takes 12 bytes a parameter in float32), plus the
    pickle. A larger file is not this network's weights, and is refused before it is read."""
    return spec_params(spec) * 8 * 5 + PICKLE_BYTES


def read_weights(path: str | Path, spec: CaseSpec) -> Weights:
    """Read a weights file of any known layout and map it onto `spec`'s network (see the module docstring).

    Raises:
        HGBenchError: missing, unreadable or oversized file (checked before it is read: `file_bound`), no weights in
            it, or weights that do not fit the case (one line: the counts of missing and unexpected keys and the
            first shape that differs).
    """
    path = Path(path)
    if not path.is_file():
        raise HGBenchError(f"weights file not found: {path}")
    raw, sha256 = load_torch_file(path, what="weights file", max_bytes=file_bound(spec), sha256=True)
    state, container = _unwrap(raw, path)
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise HGBenchError(f"{path}: its {container} holds entries that are not named tensors")
    if all(k.startswith(_DATA_PARALLEL) for k in state):
        state = {k.removeprefix(_DATA_PARALLEL): v for k, v in state.items()}
        container += ", DataParallel keys"
    layout = detect_layout(state)
    mapped = to_hgbench_keys(state, layout)
    fitted = fit_to(mapped, spec, source=f"{path} ({layout} layout)")
    return Weights(path, fitted, layout, container, str(sha256))


def _unwrap(raw: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside a file, and how it was stored."""
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        epoch = raw.get("epoch")
        return dict(raw["state_dict"]), "training checkpoint" + (f" (epoch {epoch})" if epoch is not None else "")
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
        kind = "hgbench checkpoint" if str(raw.get("format", "")).startswith("hgbench.") else "checkpoint"
        epoch = raw.get("epoch")
        return dict(raw["model"]), kind + (f" (epoch {epoch})" if epoch is not None else "")
    if isinstance(raw, Mapping) and raw and all(isinstance(k, str) and torch.is_tensor(v) for k, v in raw.items()):
        return dict(raw), "state_dict"
    raise HGBenchError(
        f"{path} holds no network weights hgbench knows: expected a state_dict, a training checkpoint with "
        "'state_dict', or an hgbench checkpoint"
    )


def detect_layout(state: Mapping[str, Any]) -> str:
    """The module tree a state dict was saved from, by its hourglass keys; hgbench's when neither is recognised
    (the fit check then says what does not match)."""
    for layout, mark in _LAYOUT_MARKS.items():
        if any(mark.match(k) for k in state):
            return layout
    return HGBENCH


def to_hgbench_keys(state: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """A state dict with its keys renamed from `layout` to hgbench's."""
    rules = _RENAMES[layout]

    def rename(key: str) -> str:
        for pattern, replacement in rules:
            key = pattern.sub(replacement, key)
        return key

    return {rename(k): v for k, v in state.items()}


def expected_shapes(spec: CaseSpec) -> dict[str, torch.Size]:
    """Every state-dict key of `spec`'s network and its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = build_model(spec)
    return {k: v.shape for k, v in model.state_dict().items()}


def fit_to(state: dict[str, torch.Tensor], spec: CaseSpec, *, source: str) -> dict[str, torch.Tensor]:
    """`state` checked key by key and shape by shape against `spec`'s network; a missing BatchNorm step counter is
    filled with 0.

    Raises:
        HGBenchError: ``<source> does not fit <case>: N missing and M unexpected keys; first shape that differs: ...``
    """
    expected = expected_shapes(spec)
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in expected]
    differ = next(
        (
            f"{k} is {list(state[k].shape)} in the file, {list(expected[k])} in the network"
            for k in expected
            if k in state and tuple(state[k].shape) != tuple(expected[k])
        ),
        None,
    )
    if missing or unexpected or differ:
        examples = [f"; first missing {missing[0]}"] if missing else []
        examples += [f"; first unexpected {unexpected[0]}"] if unexpected else []
        raise HGBenchError(
            f"{source} does not fit {spec.label}: {len(missing)} missing and {len(unexpected)} unexpected keys"
            f"{''.join(examples)}; first shape that differs: {differ or 'none'}"
        )
    filled = {k: torch.zeros((), dtype=torch.long) for k in expected if k not in state}
    return {**state, **filled}
