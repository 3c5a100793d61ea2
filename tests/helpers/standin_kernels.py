"""CPU versions of the CUDA-only kernels of torch's `nn.SyncBatchNorm`, for the CUDA stand-in.

torch implements ``batch_norm_stats``, ``batch_norm_gather_stats_with_counts``, ``batch_norm_elemt`` and the two
``batch_norm_backward_*`` ops for GPUs only, so without these a `SyncBatchNorm` under the stand-in stops at its first
kernel and never reaches what the stand-in is there to see (its boolean-mask index, a host synchronisation). Each
function takes the op's arguments as torch's native signature has them and computes what the CUDA kernel computes
(torch/csrc's ``Normalization.cuh``), in the input's dtype or float32 for half inputs, as the kernels accumulate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _dims(x: torch.Tensor) -> tuple[int, ...]:
    return (0, *range(2, x.dim()))


def _shape(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, *([1] * (x.dim() - 2)))


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    var, mean = torch.var_mean(_acc(x), dim=_dims(x), correction=0)
    return mean, torch.rsqrt(var + eps)


def gather_stats_with_counts(
    x: torch.Tensor,
    mean_all: torch.Tensor,
    invstd_all: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
    counts: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    n = counts.to(mean_all.dtype)[:, None]
    total = n.sum()
    mean = (n * mean_all).sum(0) / total
    var_all = 1.0 / invstd_all**2 - eps
    var = (n * (var_all + (mean_all - mean) ** 2)).sum(0) / total
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
        if running_var is not None:
            running_var.mul_(1 - momentum).add_(momentum * (var * total / (total - 1)).to(running_var.dtype))
    return mean, torch.rsqrt(var + eps)


def elemt(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    y = (_acc(x) - _shape(mean, x)) * _shape(invstd, x)
    if weight is not None:
        y = y * _shape(weight, x)
    if bias is not None:
        y = y + _shape(bias, x)
    return y.to(x.dtype)


def backward_reduce(
    dy: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    input_g: bool,
    weight_g: bool,
    bias_g: bool,
) -> tuple[torch.Tensor | None, ...]:
    d = _acc(dy)
    sum_dy = d.sum(_dims(x))
    sum_dy_xmu = (d * (_acc(x) - _shape(mean, x))).sum(_dims(x))
    grad_weight = sum_dy_xmu * invstd if weight_g else None
    grad_bias = sum_dy if bias_g else None
    return (sum_dy if input_g else None), (sum_dy_xmu if input_g else None), grad_weight, grad_bias


def backward_elemt(
    dy: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    invstd: torch.Tensor,
    weight: torch.Tensor | None,
    sum_dy: torch.Tensor,
    sum_dy_xmu: torch.Tensor,
    count: torch.Tensor,
) -> torch.Tensor:
    total = count.to(mean.dtype).sum()
    scale = invstd if weight is None else invstd * weight
    xmu = _acc(x) - _shape(mean, x)
    grad = _acc(dy) - _shape(sum_dy / total, x) - xmu * _shape(invstd**2 * sum_dy_xmu / total, x)
    return (grad * _shape(scale, x)).to(x.dtype)


# The ops by the name torch gives them (`torch.<name>`), with their stand-ins.
KERNELS: dict[str, Callable[..., Any]] = {
    "batch_norm_stats": stats,
    "batch_norm_gather_stats_with_counts": gather_stats_with_counts,
    "batch_norm_elemt": elemt,
    "batch_norm_backward_reduce": backward_reduce,
    "batch_norm_backward_elemt": backward_elemt,
}
