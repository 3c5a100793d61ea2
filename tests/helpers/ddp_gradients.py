"""Run under torchrun (or alone): one float64 training step of hg1; rank 0 saves every parameter's gradient.

Float64, because the float32 gradient of these networks is itself only good to ~1% (BatchNorm over tiny inner levels),
which would hide a real error in the synchronised BatchNorm.

``--standin``: each process runs on a stand-in GPU of its own (tests/helpers/cuda_standin/, ``cuda:<local rank>``)
over the real gloo group, so the BatchNorm hgbench chooses for CUDA runs, and DDP wraps the network with its
``device_ids`` as on a GPU. It also counts the host synchronisations of whole training steps taken as a run takes
them (`hgbench.run.state.build_state`: BatchNorm converted, DDP, Adam) and of a real `train_one_epoch`, on every rank.
"""

import gc
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: helpers.* as the test suite imports them

from helpers.cuda_standin import CudaStandin, StandinViolation, cuda_standin  # noqa: E402
from helpers.host_sync import fake_batches  # noqa: E402
from hgbench.models import build_model  # noqa: E402
from hgbench.spec.cases import get_spec  # noqa: E402
from hgbench.spec.config import RunConfig  # noqa: E402
from hgbench.train.distributed import (  # noqa: E402
    DistContext,
    all_gather_objects,
    barrier,
    convert_sync_batchnorm,
    init_distributed,
    shutdown,
)
from hgbench.train.loss import heatmap_loss  # noqa: E402


def gradients(
    ctx: DistContext,
    convert: Callable[[nn.Module], nn.Module] = convert_sync_batchnorm,
    gpu: CudaStandin | None = None,
) -> dict:
    """Every parameter's gradient and every buffer after one step on the global batch of 4 (this rank's share), the
    network's BatchNorms synchronised by `convert`; with the stand-in `gpu`, the host synchronisations of the step
    (forward and backward, the data already on the device)."""
    device = ctx.device
    torch.manual_seed(0)
    model = build_model(get_spec("hg1")).double().to(device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 64, 64, generator=g, dtype=torch.float64)
    target = torch.rand(4, 16, 16, 16, generator=g, dtype=torch.float64)
    weight = (torch.rand(4, 16, generator=g) > 0.3).double()
    if ctx.enabled:
        model = convert(model)
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        share = slice(4 // ctx.world_size * ctx.rank, 4 // ctx.world_size * (ctx.rank + 1))
        x, target, weight = x[share], target[share], weight[share]
    else:
        ddp = model
    x, target, weight = x.to(device), target.to(device), weight.to(device)
    before = len(gpu.host_syncs) if gpu is not None else 0
    heatmap_loss(ddp(x), target, weight).backward()
    return {
        "syncs": gpu.host_syncs[before:] if gpu is not None else None,
        "norms": sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()),
        "grads": {n: p.grad.cpu() for n, p in model.named_parameters()},
        "buffers": {n: b.cpu() for n, b in model.named_buffers()},
    }


def host_syncs_per_step(ctx: DistContext, gpu: CudaStandin, steps: int = 2) -> dict:
    """The host synchronisations of `steps` training steps built as a run builds them, each step's counted apart,
    then those of a `train_one_epoch` of two batches (whose loop the stand-in holds to no host sync at all)."""
    from hgbench.run.state import build_state
    from hgbench.train.training import StepOptions, train_one_epoch

    plan = SimpleNamespace(
        config=RunConfig(case="hg1", input_res=64, batch_size=4),  # only the optimiser's settings are read
        device=ctx.device,
        spec=replace(get_spec("hg1"), num_feats=16),
        init_weights=None,
        ctx=ctx,
    )
    state = build_state(plan, None, has_unused_params=False)
    batches = fake_batches(steps, batch=4 // ctx.world_size)
    on = [{k: v.to(ctx.device) for k, v in b.items()} for b in batches]
    per_step = []
    state.train_model.train()
    for b in on:
        before = len(gpu.host_syncs)
        state.optimizer.zero_grad(set_to_none=True)
        heatmap_loss(state.train_model(b["image"]), b["target"], b["target_weight"]).backward()
        state.optimizer.step()
        per_step.append(gpu.host_syncs[before:])
    pinned = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    before, loop_error = len(gpu.host_syncs), None
    try:
        train_one_epoch(state.train_model, pinned, state.optimizer, StepOptions(ctx.device), epoch=1, stop_on_nan=False)
    except StandinViolation as exc:
        loop_error = str(exc)
    return {"per_step": per_step, "epoch": gpu.host_syncs[before:], "loop_error": loop_error}


def main(out: str, standin: bool) -> None:
    ctx = init_distributed("cpu")  # gloo: the stand-in's GPU tensors are CPU tensors underneath
    if not standin:
        result = gradients(ctx)
        if ctx.is_main:
            torch.save(result, out)
        leave(ctx)
        return
    with pytest.MonkeyPatch.context() as mp, cuda_standin(mp, device_count=2) as gpu:
        torch.cuda.set_device(ctx.local_rank)
        ctx = replace(ctx, device=torch.device("cuda", ctx.local_rank))
        result = gradients(ctx, gpu=gpu)
        result["steps"] = all_gather_objects(ctx, host_syncs_per_step(ctx, gpu))
        # What hgbench's BatchNorm replaces: torch's SyncBatchNorm (its CUDA kernels run by the stand-in), whose
        # gradients must agree too, and whose host synchronisations the stand-in must see.
        result["torch_sync_batchnorm"] = gradients(ctx, nn.SyncBatchNorm.convert_sync_batchnorm, gpu)
        result["violations"] = all_gather_objects(ctx, list(gpu.violations))
    if ctx.is_main:
        torch.save(result, out)
    leave(ctx)


def leave(ctx: DistContext) -> None:
    """Leave the group together, once the DDP wrappers (and their reducers' hooks and threads) are gone: a rank that
    tore its group down while the other still used it, or before its own reducer was freed, once died of a C++
    ``terminate`` (SIGABRT) on the shared CI machine."""
    gc.collect()
    barrier(ctx)
    shutdown(ctx)


if __name__ == "__main__":
    main(sys.argv[1], "--standin" in sys.argv[2:])
