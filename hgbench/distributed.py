"""Distributed training under `torchrun`: process-group set-up, synchronised BatchNorm, gathers and reductions.

nanoGPT-style: torchrun is detected from `RANK`; only rank 0 writes. NCCL on GPU, gloo on CPU. NCCL only reduces
tensors that live on the process's own GPU, so every tensor collective here moves its input to `DistContext.device`
first: call sites never have to remember where the process group's tensors must live. `nn.SyncBatchNorm`
runs only on accelerators, so on CPU hgbench swaps in `AllReduceBatchNorm2d`, which computes the batch statistics
over all ranks with a differentiable all-reduce: a run on W processes with batch B/W each then computes the same
function as one process with batch B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors must be
    timeout: timedelta | None = None  # how long a collective waits for the other processes (None: no group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


# How long a rank waits at a collective (or for the others to join the group) before it takes them for lost: a peer
# whose process died closes its connections and is noticed at once, but one whose machine froze or was cut off by the
# network is noticed only then (`hgbench run --dist-timeout`). Longer than torch's 10 minutes: at the end of a run
# rank 0 alone runs the timed inference passes (plain and flip, on the whole validation split, after a recompile
# with --compile) while the others wait at a barrier, which on a slow host can pass 10 minutes.
GROUP_TIMEOUT = timedelta(minutes=60)

# What gloo says (in a RuntimeError) when a peer is gone, its connection closed or reset, or silent past the timeout.
_GLOO_GONE = ("Connection closed by peer", "Connection reset by peer")
_GLOO_SILENT = ("Timed out waiting", "Application timeout caused pair closure", "Socket Timeout")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str, *, timeout: timedelta | None = None) -> DistContext:
    """Join the process group torchrun set up (no-op for a plain single process).

    Args:
        device_type: ``cuda`` (NCCL) or ``cpu`` (gloo).
        timeout: how long a collective waits for the other processes before it fails (default `GROUP_TIMEOUT`).
    """
    if not launched_by_torchrun():
        return DistContext()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if device_type == "cuda" else torch.device("cpu")
    timeout = timeout or GROUP_TIMEOUT
    if world > 1 and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", timeout=timeout)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device, timeout=timeout)


def peer_lost(ctx: DistContext, exc: BaseException) -> str | None:
    """What `exc` says, in a few words, when it is a collective failing because another process of the job is gone
    (its process or node died) or did not answer within the group's timeout; None for any other error.

    gloo raises a plain RuntimeError whose text names the transport's failure; torch's own types (`DistNetworkError`,
    `DistStoreError`, `DistBackendError`: the store, NCCL) say it by their type.
    """
    if not ctx.enabled:
        return None
    text = " ".join(str(exc).split())
    if isinstance(exc, RuntimeError):  # not an OSError: a reset pipe of this process's own (a loader worker's)
        for phrase in (*_GLOO_GONE, *_GLOO_SILENT):
            at = text.find(phrase)
            if at < 0:
                continue
            said = text[at:].split(". ")[0].rstrip(".")  # gloo's own words, without its source location and advice
            if phrase in _GLOO_SILENT:
                return f"no answer from another process within the collective timeout of {_timeout_text(ctx)} ({said})"
            return f"another process stopped ({said})"
    kinds = tuple(getattr(dist, name) for name in ("DistNetworkError", "DistStoreError", "DistBackendError"))
    if isinstance(exc, kinds):
        return f"another process stopped or did not answer ({type(exc).__name__}: {text.split('. ')[0][:200]})"
    return None


def _timeout_text(ctx: DistContext) -> str:
    seconds = (ctx.timeout or GROUP_TIMEOUT).total_seconds()
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if not ctx.enabled:
        return
    if ctx.device.type == "cuda":  # NCCL otherwise guesses the device from the rank and warns
        dist.barrier(device_ids=[ctx.device.index])
    else:
        dist.barrier()


def wait_for_rank_0(ctx: DistContext) -> None:
    """The job's last barrier: every process waits while rank 0 alone ends the run (the timed inference passes, the
    finished record), so the job ends together. A process lost now leaves rank 0's finished run as it is: rank 0 goes
    on; any other rank raises the collective's error."""
    try:
        barrier(ctx)
    except RuntimeError as exc:
        if not (ctx.is_main and peer_lost(ctx, exc) is not None):
            raise


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over ranks, on the process group's device (the input is not modified).

    The input may live anywhere (a host count, a loss on the GPU); it is copied to `ctx.device` first, because NCCL
    rejects host tensors. Without a process group the input is returned as it is.
    """
    if not ctx.enabled:
        return tensor
    out = tensor.to(ctx.device, copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def sum_over_ranks(ctx: DistContext, *values: float) -> tuple[float, ...]:
    """Host numbers summed over ranks, in one collective (one host read after it, outside any timed loop)."""
    if not ctx.enabled:
        return tuple(float(v) for v in values)
    total = all_reduce_sum(ctx, torch.tensor(values, dtype=torch.float64))
    return tuple(total.tolist())


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (gather, then compute once: style.md item 6)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole global batch, for gloo (CPU) process groups."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        # Two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2: the one-pass form cancels
        # catastrophically in low-variance channels and its error compounds through 100+ BatchNorms.
        c = x.shape[1]
        first = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), x.new_tensor([x.numel() / c])]))
        n = first[-1].detach()
        mean = first[:c] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)) * m)
        y = centred * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(model: nn.Module, device_type: str) -> nn.Module:
    """Make every BatchNorm2d synchronise across ranks: `nn.SyncBatchNorm` on GPU, `AllReduceBatchNorm2d` on CPU.

    Either way the converted layers keep the original parameter and buffer objects.
    """
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            repl = AllReduceBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            # The very parameters and buffers, as `nn.SyncBatchNorm.convert_sync_batchnorm` keeps them: an optimiser
            # built before the conversion must still hold what the network trains.
            if child.affine:
                repl.weight, repl.bias = child.weight, child.bias
            if child.track_running_stats:
                repl.running_mean, repl.running_var = child.running_mean, child.running_var
                repl.num_batches_tracked = child.num_batches_tracked
            repl.train(child.training)
            setattr(model, name, repl)
        else:
            convert_sync_batchnorm(child, device_type)
    return model
