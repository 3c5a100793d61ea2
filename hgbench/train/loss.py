"""The training loss: intermediate supervision over every stack, masked per sample and per joint.

The reference code broadcast its `target_weight` mask across the batch by mistake; hgbench masks each sample's
joints by that sample's own weights (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def heatmap_loss(outputs: Sequence[torch.Tensor], target: torch.Tensor, target_weight: torch.Tensor) -> torch.Tensor:
    """Sum over stacks of the masked mean squared error.

    Args:
        outputs: per-stack heatmaps, each ``[B, K, H, W]``.
        target: ``[B, K, H, W]`` target heatmaps.
        target_weight: ``[B, K]`` per-sample, per-joint weights (visibility x in-bounds).

    Returns:
        A scalar tensor: ``sum_s mean_{b,k,h,w} w[b,k] * (out_s - target)^2``.
    """
    w = target_weight.to(target.dtype)[:, :, None, None]
    total = target.new_zeros(())
    for out in outputs:
        total = total + ((out.float() - target) ** 2 * w).mean()
    return total
