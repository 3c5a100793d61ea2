"""Distributed training under `torchrun`: process-group set-up, synchronised BatchNorm, gathers and reductions.

nanoGPT-style: torchrun is detected from `RANK`; only rank 0 writes. NCCL on GPU, gloo on CPU. NCCL only reduces
tensors that live on the process's own GPU, so every tensor collective here moves its input to `DistContext.device`
first: call sites never have to remember where the process group's tensors must live. Every BatchNorm becomes
`AllReduceBatchNorm2d`, on the GPU as on the CPU, which computes the batch statistics over all ranks with one
all-reduce and no host synchronisation (torch's `nn.SyncBatchNorm` synchronises the host at every layer): a run on W
processes with batch B/W each then computes the same function as one process with batch B.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from hgbench.errors import HGBenchError


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


# Why a run under torchrun never compiles (`--compile` is dropped, `--fast` leaves it off), in one line.
COMPILE_UNDER_DDP = (
    "torch.compile is off under torchrun: compiling the DDP network with its synchronised BatchNorm is not yet "
    "measured on a GPU"
)


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
    ctx = DistContext(rank=rank, world_size=world, local_rank=local, device=device, timeout=timeout)
    # Under torchrun even a job of one process joins its group: what it was launched to exercise is the backend.
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout)
        _first_collective(ctx, backend)
    return ctx


def _first_collective(ctx: DistContext, backend: str) -> None:
    """One all-reduce through the new group, at once: NCCL starts its communicator at the first collective, so a
    backend that cannot work fails here, before any record exists, and never half-way through a run.

    Raises:
        HGBenchError: the sum of every rank's 1 is not the number of ranks.
    """
    ones = torch.ones(1, device=ctx.device)
    dist.all_reduce(ones)
    total = int(ones.item())  # one read, at start-up
    if total != ctx.world_size:
        raise HGBenchError(f"the {backend} process group's first all-reduce gave {total}, not {ctx.world_size}")


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
    """Leave the group `init_distributed` joined (one under torchrun, of any size), once every DDP wrapper is freed.

    A wrapper held only by a reference cycle (its hooks) would otherwise outlive its group and be destroyed at the
    interpreter's exit, with its reducer's threads: a rank of a finished gloo job once died there of a C++ terminate
    (SIGABRT), which failed the whole torchrun job, on a loaded 2-core machine.
    """
    if launched_by_torchrun() and dist.is_initialized():
        gc.collect()
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


def _sync_world() -> int:
    """Processes a training BatchNorm synchronises over: the default group's size, 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _float(t: torch.Tensor) -> torch.Tensor:
    """`t` in a dtype fit for statistics: float32 for half or bfloat16 activations (autocast), else as it is."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _per_channel(v: torch.Tensor) -> torch.Tensor:
    return v[None, :, None, None]


class _GlobalBatchNorm(torch.autograd.Function):
    """Training BatchNorm over every rank's share of the global batch: one all-reduce forward, one backward.

    Forward: each rank's count, mean and sum of squared deviations (from its own mean, `torch.var_mean`: stable);
    every rank's row is all-reduced into a table of all of them, and Chan's formula combines it exactly. Backward:
    the two sums the input's gradient needs are all-reduced; the weight's and bias's gradients stay this rank's
    (DDP averages them with the others'). Neither direction reads a device value on the host or copies host data to
    the device, so the GPU queue never drains: the count of every rank is written on the device by a fill.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        momentum: float | torch.Tensor,
        eps: float,
    ) -> torch.Tensor:
        world, rank, c = dist.get_world_size(), dist.get_rank(), x.shape[1]
        var, mean = torch.var_mean(_float(x), dim=(0, 2, 3), correction=0)
        count = x.numel() // c
        rows = mean.new_zeros(world, 2 * c + 1)
        rows[rank] = torch.cat([mean.new_full((1,), count), mean, var * count])
        dist.all_reduce(rows)
        counts, means, squares = rows[:, :1], rows[:, 1 : c + 1], rows[:, c + 1 :]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        var = (squares.sum(0) + (counts * (means - mean) ** 2).sum(0)) / total
        if running_mean is not None and running_var is not None:
            running_mean.mul_(1 - momentum).add_(mean * momentum)
            running_var.mul_(1 - momentum).add_(var * (total / (total - 1)) * momentum)
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps), total)
        # The normalisation itself is torch's fused kernel, given the global statistics.
        return F.batch_norm(x, mean, var, weight, bias, training=False, momentum=0.0, eps=eps)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd, total = ctx.saved_tensors
        c = x.shape[1]
        d = _float(dy)
        xhat = (_float(x) - _per_channel(mean)) * _per_channel(invstd)
        sums = torch.cat([d.sum(dim=(0, 2, 3)), (d * xhat).sum(dim=(0, 2, 3))])
        grad_weight = sums[c:].clone() if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sums[:c].clone() if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            dist.all_reduce(sums)
            scale = invstd if weight is None else invstd * weight
            grad_x = (d - _per_channel(sums[:c] / total) - xhat * _per_channel(sums[c:] / total)) * _per_channel(scale)
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole global batch, on every device (`_GlobalBatchNorm`).

    Used on CUDA as on the CPU: torch's `nn.SyncBatchNorm` drops empty ranks' statistics with a boolean mask, a host
    synchronisation at every BatchNorm of every forward (hundreds per step for case 1). Every rank's share of a
    training batch is non-empty here (`hgbench.train.sampling.GlobalBatchSampler` splits it evenly).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _sync_world() < 2:
            return super().forward(x)
        self._check_input_dim(x)
        tracked = self.track_running_stats and self.running_mean is not None and self.running_var is not None
        momentum: float | torch.Tensor = 0.0
        if tracked:
            self.num_batches_tracked.add_(1)
            # No momentum: the cumulative average, its factor kept on the device (BatchNorm2d reads it on the host).
            momentum = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
        return _GlobalBatchNorm.apply(
            x,
            self.weight,
            self.bias,
            self.running_mean if tracked else None,
            self.running_var if tracked else None,
            momentum,
            self.eps,
        )


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make every BatchNorm2d synchronise across ranks (`AllReduceBatchNorm2d`), keeping its parameter and buffer
    objects, as `nn.SyncBatchNorm.convert_sync_batchnorm` does."""
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            repl = AllReduceBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            # The very parameters and buffers: an optimiser built before the conversion must still hold what the
            # network trains.
            if child.affine:
                repl.weight, repl.bias = child.weight, child.bias
            if child.track_running_stats:
                repl.running_mean, repl.running_var = child.running_mean, child.running_var
                repl.num_batches_tracked = child.num_batches_tracked
            repl.train(child.training)
            setattr(model, name, repl)
        else:
            convert_sync_batchnorm(child)
    return model
