"""A stand-in for the hourglass network of bearpaw/pytorch-pose (which anibali/pytorch-stacked-hourglass and the
study's own code keep), written for the tests from a reading of its public model code: the same module names and
forward pass, with sizes of our choosing, and the study's as-built quirks as options.

Only its module tree and forward pass matter here: the tests save its random weights in each tool's file layout
and check that hgbench, given that file, computes the same heatmaps. Module names are the tool's (``hg.<i>.hg``, a
``downsample`` Sequential, ``fc`` as conv-BN-ReLU); the code is ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

if TYPE_CHECKING:
    from hgbench.spec.cases import CaseSpec


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels) if kind == "group1" else nn.BatchNorm2d(channels)


class PoseBottleneck(nn.Module):
    """Pre-activation bottleneck; ``reapply_3x3`` runs the BN-ReLU-3x3 step twice with the same modules (as built,
    case 8)."""

    expansion = 2

    def __init__(self, c_in: int, planes: int, *, norm: str = "batch", reapply_3x3: bool = False) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.bn1, self.conv1 = _norm(norm, c_in), nn.Conv2d(c_in, planes, 1)
        self.bn2, self.conv2 = _norm(norm, planes), nn.Conv2d(planes, planes, 3, padding=1)
        self.bn3, self.conv3 = _norm(norm, planes), nn.Conv2d(planes, c_out, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1)) if c_in != c_out else None
        self.reapply_3x3 = reapply_3x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        y = self.conv1(self.relu(self.bn1(x)))
        for _ in range(2 if self.reapply_3x3 else 1):
            y = self.conv2(self.relu(self.bn2(y)))
        return self.conv3(self.relu(self.bn3(y))) + skip


class PoseHourglass(nn.Module):
    """``hg[level][unit]``: `units` residual stacks per level (plus one at the innermost, level 0); the forward pass
    calls units 0-2 (and 3 innermost) whatever was built."""

    def __init__(self, depth: int, planes: int, num_blocks: int, *, units: int = 3, **block: object) -> None:
        super().__init__()
        self.depth = depth

        def res() -> nn.Sequential:
            return nn.Sequential(*(PoseBottleneck(2 * planes, planes, **block) for _ in range(num_blocks)))

        self.hg = nn.ModuleList(nn.ModuleList(res() for _ in range(units + (level == 0))) for level in range(depth))

    def _level(self, n: int, x: torch.Tensor) -> torch.Tensor:
        units = self.hg[n - 1]
        low = units[1](F.max_pool2d(x, 2, stride=2))
        low = self._level(n - 1, low) if n > 1 else units[3](low)
        return units[0](x) + F.interpolate(units[2](low), scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class PoseNet(nn.Module):
    """The tool's ``HourglassNet``: stem, stacks with intermediate supervision, the merge between stacks.

    Args:
        depths: hourglass depth per stack built (the tool fixes 4; the study varies it per stack).
        run_stacks: stacks the forward pass runs (fewer than built: the study's as-built cases 3 and 4).
        units: residual units built per hourglass level (4: as-built case 4, whose extra units never run).
        norm: ``batch``, or ``group1`` in every bottleneck (as-built case 5).
        reapply_3x3: the study's as-built case 8.
    """

    def __init__(
        self,
        *,
        depths: tuple[int, ...] = (4,),
        num_feats: int = 16,
        num_blocks: int = 1,
        num_classes: int = 16,
        run_stacks: int | None = None,
        units: int = 3,
        norm: str = "batch",
        reapply_3x3: bool = False,
    ) -> None:
        super().__init__()
        block = {"norm": norm, "reapply_3x3": reapply_3x3}
        stacks, ch = len(depths), 2 * num_feats
        self.run_stacks = run_stacks or stacks
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(PoseBottleneck(64, 64, **block))
        self.layer2 = nn.Sequential(PoseBottleneck(128, 128, **block))
        self.layer3 = nn.Sequential(PoseBottleneck(256, num_feats, **block))
        self.maxpool = nn.MaxPool2d(2, stride=2)
        self.hg = nn.ModuleList(PoseHourglass(d, num_feats, num_blocks, units=units, **block) for d in depths)
        self.res = nn.ModuleList(
            nn.Sequential(*(PoseBottleneck(ch, num_feats, **block) for _ in range(num_blocks))) for _ in depths
        )
        self.fc = nn.ModuleList(nn.Sequential(nn.Conv2d(ch, ch, 1), nn.BatchNorm2d(ch), self.relu) for _ in depths)
        self.score = nn.ModuleList(nn.Conv2d(ch, num_classes, 1) for _ in depths)
        self.fc_ = nn.ModuleList(nn.Conv2d(ch, ch, 1) for _ in range(stacks - 1))
        self.score_ = nn.ModuleList(nn.Conv2d(num_classes, ch, 1) for _ in range(stacks - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.maxpool(self.layer1(x))))
        out = []
        for i in range(self.run_stacks):
            y = self.fc[i](self.res[i](self.hg[i](x)))
            score = self.score[i](y)
            out.append(score)
            if i < self.run_stacks - 1:
                x = x + self.fc_[i](y) + self.score_[i](score)
        return out


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BatchNorm statistic drawn at random (so that no layer is an identity), in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            values = torch.rand(tensor.shape, generator=gen) * 0.5 + 0.75 if name.endswith("running_var") else None
            if values is None:
                values = torch.randn(tensor.shape, generator=gen) * 0.1
            tensor.copy_(values)
    return model.eval()


def pose_net(spec: CaseSpec) -> PoseNet:
    """The network the tool (or the study's code) would build for `spec`, with random weights, in eval mode."""
    net = PoseNet(
        depths=spec.depths,
        num_feats=spec.num_feats,
        num_blocks=spec.num_blocks,
        num_classes=spec.num_joints,
        run_stacks=spec.run_stacks,
        units=spec.level_units,
        norm=spec.norm,
        reapply_3x3=spec.share_extra_step,
    )
    return randomize(net)


def pytorch_pose_checkpoint(net: nn.Module, path: Path, *, epoch: int = 30) -> Path:
    """What pytorch-pose's training script saves: a DataParallel model's state dict inside a training checkpoint."""
    wrapped = nn.DataParallel(net)
    optimizer = torch.optim.RMSprop(wrapped.parameters(), lr=2.5e-4)
    checkpoint = {
        "epoch": epoch,
        "arch": "hg",
        "state_dict": wrapped.state_dict(),
        "best_acc": 0.5,
        "optimizer": optimizer.state_dict(),
    }
    torch.save(checkpoint, path)
    return path
