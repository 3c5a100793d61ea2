"""One case's model, optimiser and synthetic batch with the step callables a timer runs: what `hgbench bench` times
for each speed mode and what `hgbench run --fast`'s probe on the CPU times (`hgbench.train.mode_probe`), so both measure
the same step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from hgbench.measure.compile_watch import compile_model
from hgbench.models import build_model
from hgbench.spec.cases import CaseSpec
from hgbench.spec.config import DEFAULT_LR
from hgbench.spec.geometry import heatmap_res
from hgbench.train.loss import heatmap_loss
from hgbench.train.speed_modes import ModeSettings

LR = DEFAULT_LR["adam"]  # the study's Adam learning rate: the optimiser step costs the same as in a real run


@dataclass
class Workload:
    """One case's model, optimiser and synthetic batch, with the two callables the timers run.

    Call ``model.train()`` before timing `train_step` and ``model.eval()`` before `infer_step` (outside the timed
    calls: switching modes walks every module).
    """

    model: nn.Module  # the network, moved to the device in the mode's memory format
    train_step: Callable[[], None]  # zero_grad, forward (autocast if set), loss over every stack, backward, Adam step
    infer_step: Callable[[], None]  # forward under no_grad (autocast if set)
    optimizer: torch.optim.Optimizer  # Adam at the study's learning rate


def make_workload(
    spec: CaseSpec, settings: ModeSettings, *, batch: int, input_res: int, device: str | torch.device, seed: int = 0
) -> Workload:
    """Build a case's model and synthetic tensors of the real shapes, and the step callables for one mode.

    The input is ``[batch, 3, input_res, input_res]`` noise; the targets are ``[batch, 16, input_res/4, input_res/4]``
    heatmaps with about a fifth of the joints weighted 0, as invisible joints are in MPII. Nothing is loaded.

    Args:
        spec: the case.
        settings: the mode's settings.
        batch: images per step.
        input_res: square input side.
        device: where to run.
        seed: for the synthetic tensors and the initial weights.
    """
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
    model: nn.Module = build_model(spec).to(dev, memory_format=fmt)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    hm = heatmap_res(input_res)
    x = torch.randn(batch, 3, input_res, input_res, generator=gen).to(dev, memory_format=fmt)
    target = torch.rand(batch, spec.num_joints, hm, hm, generator=gen).to(dev)
    weight = (torch.rand(batch, spec.num_joints, generator=gen) > 0.2).float().to(dev)  # ~20% joints unseen

    forward: Callable[[torch.Tensor], list[torch.Tensor]] = model
    if settings.compile:
        forward = compile_model(model, mode="reduce-overhead" if settings.cudagraphs else None)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=settings.amp)

    def mark_step() -> None:
        # CUDA graph trees reuse output memory between replays; marking each step tells them the last one is done.
        if settings.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()

    def train_step() -> None:
        mark_step()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            outputs = forward(x)
        heatmap_loss(outputs, target, weight).backward()
        optimizer.step()

    def infer_step() -> None:
        mark_step()
        with torch.no_grad(), autocast():
            forward(x)

    return Workload(model, train_step, infer_step, optimizer)
