"""What a case's network costs: parameters, parameters that train, and forward FLOPs (cached per spec and torch).

FLOPs come from one forward pass under `torch.utils.flop_counter.FlopCounterMode` on the ``meta`` device (FLOPs =
2 x multiply-adds, as torch counts them); `hgbench list`, the runner and `hgbench bench` all read them from here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hgbench._version import __version__
from hgbench.files.atomic_io import write_bytes_atomic
from hgbench.files.bounded_read import read_json
from hgbench.models.hourglass import build_model
from hgbench.spec.cases import CaseSpec
from hgbench.spec.config import cache_root
from hgbench.spec.footprint import spec_params

COST_CACHE_FILENAME = "model_costs.json"
_CACHE_BYTES = 4 * 2**20  # an entry is ~150 bytes: tens of thousands of specs and versions


@dataclass(frozen=True)
class ModelCost:
    """Size and arithmetic cost of a built network."""

    params: int  # all parameters
    params_used: int  # parameters that receive a gradient in a training step
    gflops: float  # forward GFLOPs at the given input (FLOPs = 2 x multiply-adds, as torch.utils.flop_counter)
    input_res: int  # square input side used for `gflops`


def count_params(model: nn.Module) -> int:
    """Number of distinct parameter elements (shared modules counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_used_params(model: nn.Module, *, input_res: int = 128) -> int:
    """Parameter elements that receive a gradient from one training-mode backward pass (batch 2, CPU).

    128 is the smallest input every case can train at (see `CaseSpec.check_input_res`)."""
    model.train()
    model.zero_grad(set_to_none=True)
    x = torch.randn(2, 3, input_res, input_res, generator=torch.Generator().manual_seed(0))
    outputs = model(x)
    sum(o.square().mean() for o in outputs).backward()
    return sum(p.numel() for p in model.parameters() if p.grad is not None)


def measure_cost(spec: CaseSpec, *, input_res: int = 256, use_cache: bool = True) -> ModelCost:
    """Count parameters, used parameters and forward FLOPs of a case without allocating real memory.

    FLOPs come from one forward pass under `torch.utils.flop_counter.FlopCounterMode` on the ``meta`` device (eval
    mode, batch 1, no memory). "Used" parameters are those that get a gradient from a backward pass through every
    stack's output, measured on a real CPU copy at a 128x128 input (the set does not depend on the input size).
    Results are cached per spec fingerprint, torch version and hgbench version (the model code, e.g. which merges the
    as-built forward computes, changes what is counted): the counting mode's per-operator overhead makes an 8-stack
    model cost a second or two.
    """
    from torch.utils.flop_counter import FlopCounterMode

    key = f"{spec.fingerprint()}@{input_res}@torch{torch.__version__}@hgbench{__version__}"
    cache = cache_root() / COST_CACHE_FILENAME
    if use_cache:
        cached = _read_cache(cache).get(key)
        # The parameter count is known exactly from the spec (hgbench.spec.footprint): an entry that disagrees is not
        # this network's, whoever wrote it.
        if cached is not None and cached.input_res == input_res and cached.params == spec_params(spec):
            return cached

    with torch.device("meta"):
        meta_model = build_model(spec).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta_model(torch.zeros(1, 3, input_res, input_res, device="meta"))
    cost = ModelCost(
        params=count_params(meta_model),
        params_used=count_used_params(build_model(spec)),
        gflops=counter.get_total_flops() / 1e9,
        input_res=input_res,
    )
    if use_cache:
        _store_cost(cache, key, cost)
    return cost


def _read_cache(cache: Path) -> dict[str, ModelCost]:
    """The cache's well-formed entries. A cache is rebuilt, never trusted: an unreadable file (a FIFO, a link to a
    device, over `_CACHE_BYTES`), one that is not a JSON object, and every entry that is not a cost of the right
    types are dropped, to be measured again."""
    try:
        data = read_json(cache, limit=_CACHE_BYTES)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {key: cost for key, entry in data.items() if (cost := _cost_of(entry)) is not None}


def _cost_of(entry: Any) -> ModelCost | None:
    """A cache entry as a `ModelCost`, or None when it is not one (missing or extra fields, wrong types, negative
    or non-finite figures, more used parameters than parameters)."""
    if not isinstance(entry, dict) or set(entry) != {f.name for f in fields(ModelCost)}:
        return None
    counts = [entry[name] for name in ("params", "params_used", "input_res")]
    if not all(type(n) is int and n >= 0 for n in counts) or entry["params_used"] > entry["params"]:
        return None
    gflops = entry["gflops"]
    if type(gflops) not in (int, float) or not math.isfinite(gflops) or gflops < 0:
        return None
    return ModelCost(**{**entry, "gflops": float(gflops)})


def _store_cost(cache: Path, key: str, cost: ModelCost) -> None:
    """Best-effort cache write (atomic replace); a read-only home just means no cache. What was there is kept only
    where it reads as costs (`_read_cache`): a damaged cache is rebuilt, entry by entry."""
    data = {k: asdict(v) for k, v in _read_cache(cache).items()}
    data[key] = asdict(cost)
    try:
        write_bytes_atomic(cache, json.dumps(data, indent=1, sort_keys=True).encode())
    except OSError:
        pass
