"""One configurable Stacked Hourglass network (Newell et al., 2016) that every case of the study is built from.

Structure and parameter counts match the public PyTorch reference (hg1 3,586,960; hg2 6,730,912; hg8 25,594,624
parameters). The knobs are the fields of `hgbench.spec.cases.CaseSpec`; a case never needs its own class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from hgbench.models.blocks import Bottleneck, residual_stack

if TYPE_CHECKING:
    from hgbench.spec.cases import CaseSpec


class Hourglass(nn.Module):
    """A recursive hourglass of the given depth.

    Every level holds `level_units` residual units (index 0: skip branch, 1: after pooling, 2: after the inner level)
    plus one more at the innermost level (index 3). The forward pass uses units 0-2 (and 3 innermost); a level built
    with more units than that reproduces the study's as-built case 4, whose extra units never run.
    """

    def __init__(self, depth: int, planes: int, num_blocks: int, *, unit_kwargs: dict, level_units: int = 3) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"hourglass depth must be >= 1, got {depth}")
        self.depth = depth
        channels = planes * Bottleneck.expansion
        levels = []
        for level in range(depth):  # level 0 is the innermost, as in the reference code
            n_units = level_units + (1 if level == 0 else 0)
            levels.append(
                nn.ModuleList(residual_stack(channels, planes, num_blocks, **unit_kwargs) for _ in range(n_units))
            )
        self.levels = nn.ModuleList(levels)

    def _forward(self, n: int, x: torch.Tensor) -> torch.Tensor:
        units = self.levels[n - 1]
        up1 = units[0](x)
        low1 = units[1](F.max_pool2d(x, 2, stride=2))
        low2 = self._forward(n - 1, low1) if n > 1 else units[3](low1)
        low3 = units[2](low2)
        return up1 + F.interpolate(low3, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.depth, x)


class StackedHourglass(nn.Module):
    """Stem, then `num_stacks` hourglasses with intermediate supervision; returns every stack's heatmaps."""

    def __init__(self, spec: CaseSpec) -> None:
        super().__init__()
        self.spec = spec
        unit = {"norm": spec.norm, "steps": spec.bottleneck_steps, "share_extra_step": spec.share_extra_step}
        # The stem's bottlenecks use the case's norm too (as built for case 5); its first BN stays BatchNorm.
        stem_unit = unit if spec.norm_in_stem else {**unit, "norm": "batch"}
        feats = spec.num_feats
        ch = feats * Bottleneck.expansion
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=True)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = residual_stack(64, 64, 1, **stem_unit)
        self.maxpool = nn.MaxPool2d(2, stride=2)
        self.layer2 = residual_stack(128, 128, 1, **stem_unit)
        self.layer3 = residual_stack(256, feats, 1, **stem_unit)

        self.hg = nn.ModuleList(
            Hourglass(spec.depths[i], feats, spec.num_blocks, unit_kwargs=unit, level_units=spec.level_units)
            for i in range(spec.num_stacks)
        )
        self.res = nn.ModuleList(residual_stack(ch, feats, spec.num_blocks, **unit) for _ in range(spec.num_stacks))
        self.fc = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch, ch, kernel_size=1, bias=True), nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
            for _ in range(spec.num_stacks)
        )
        self.score = nn.ModuleList(
            nn.Conv2d(ch, spec.num_joints, kernel_size=1, bias=True) for _ in range(spec.num_stacks)
        )
        self.fc_ = nn.ModuleList(nn.Conv2d(ch, ch, kernel_size=1, bias=True) for _ in range(spec.num_stacks - 1))
        self.score_ = nn.ModuleList(
            nn.Conv2d(spec.num_joints, ch, kernel_size=1, bias=True) for _ in range(spec.num_stacks - 1)
        )

    @property
    def stacks_run(self) -> int:
        """Stacks the forward pass runs (fewer than built in the study's as-built cases 3 and 4)."""
        return self.spec.stacks_run

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.maxpool(x)
        x = self.layer2(x)
        x = self.layer3(x)
        outputs = []
        for i in range(self.stacks_run):
            y = self.fc[i](self.res[i](self.hg[i](x)))
            score = self.score[i](y)
            outputs.append(score)
            # The merge feeds the next stack, so the last stack that *runs* computes none. The study's as-built cases 3
            # and 4 build 8 stacks but run 6 (its forward loops `if i < self.num_stacks - 1` with num_stacks = 6): the
            # sixth stack's merge layers exist, hold parameters, and never run.
            if i < self.stacks_run - 1:
                x = x + self.fc_[i](y) + self.score_[i](score)
        return outputs


def build_model(spec: CaseSpec) -> StackedHourglass:
    """Build the network a case spec describes (see `hgbench.spec.cases.create_model` for building by case name)."""
    return StackedHourglass(spec)
