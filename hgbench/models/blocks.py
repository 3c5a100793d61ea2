"""Building blocks of the stacked hourglass: the pre-activation bottleneck and the normalisation factory.

The bottleneck follows the common PyTorch port of Newell et al. (2016) (bearpaw/pytorch-pose, anibali/pytorch-stacked-
hourglass): BN-ReLU-Conv1x1 -> BN-ReLU-Conv3x3 -> BN-ReLU-Conv1x1 with expansion 2 and a biased 1x1 projection skip.
Case 8 of the study adds a fourth BN-ReLU-Conv3x3 step; the study's own code re-applied the second step's modules
(`share_extra_step=True`), which is kept so the as-built form can be reproduced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hgbench.spec.cases import NORMS


def make_norm(kind: str, channels: int) -> nn.Module:
    """Return a 2-d normalisation layer by name.

    Args:
        kind: ``"batch"`` (BatchNorm2d), ``"instance"`` (InstanceNorm2d with affine parameters, as the study describes
            case 5) or ``"group1"`` (GroupNorm with one group, i.e. a layer norm over C, H, W, as the study built it).
        channels: number of channels normalised.
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group1":
        return nn.GroupNorm(1, channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of {', '.join(NORMS)}")


NormFactory = Callable[[int], nn.Module]


class Bottleneck(nn.Module):
    """Pre-activation bottleneck with expansion 2 (in -> planes -> 2*planes)."""

    expansion = 2

    def __init__(
        self,
        in_channels: int,
        planes: int,
        *,
        norm: str = "batch",
        steps: int = 3,
        share_extra_step: bool = False,
    ) -> None:
        super().__init__()
        if steps not in (3, 4):
            raise ValueError(f"a bottleneck has 3 or 4 steps, got {steps}")
        out_channels = planes * self.expansion
        self.bn1 = make_norm(norm, in_channels)
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=True)
        self.bn2 = make_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=True)
        # The extra step of case 8: its own weights as described, or the second step applied twice as built.
        self.extra_step = steps == 4
        self.share_extra_step = self.extra_step and share_extra_step
        if self.extra_step and not share_extra_step:
            self.bn2b = make_norm(norm, planes)
            self.conv2b = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=True)
        self.bn3 = make_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=True) if in_channels != out_channels else None
        )

    @property
    def num_steps(self) -> int:
        """BN-ReLU-Conv steps the forward pass runs."""
        return 4 if self.extra_step else 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        if self.share_extra_step:
            out = self.conv2(self.relu(self.bn2(out)))
        elif self.extra_step:
            out = self.conv2b(self.relu(self.bn2b(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + residual


def residual_stack(
    in_channels: int, planes: int, num_blocks: int, *, norm: str, steps: int, share_extra_step: bool
) -> nn.Sequential:
    """``num_blocks`` bottlenecks in sequence; the first projects ``in_channels`` to ``2*planes`` when they differ."""
    blocks = []
    for i in range(num_blocks):
        c_in = in_channels if i == 0 else planes * Bottleneck.expansion
        blocks.append(Bottleneck(c_in, planes, norm=norm, steps=steps, share_extra_step=share_extra_step))
    return nn.Sequential(*blocks)
