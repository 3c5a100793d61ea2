"""Run under torchrun (or alone): one training step of a small hg1 through `build_state`, as a run takes it.

Rank 0 saves, for every parameter that got a non-zero gradient, whether the optimiser's step changed it
(tests/test_distributed.py: an optimiser that holds parameters the network no longer uses leaves them unchanged).
"""

import sys
from dataclasses import replace
from types import SimpleNamespace

import torch

from hgbench.run.state import build_state
from hgbench.spec.cases import get_spec
from hgbench.spec.config import RunConfig
from hgbench.train.distributed import init_distributed, shutdown
from hgbench.train.loss import heatmap_loss


def step_changes(ctx) -> dict[str, bool]:
    """Whether one step changed each parameter that got a non-zero gradient, by name."""
    plan = SimpleNamespace(
        config=RunConfig(case="hg1", input_res=64, batch_size=4),  # only the optimiser's settings are read
        device=torch.device("cpu"),
        spec=replace(get_spec("hg1"), num_feats=16),
        init_weights=None,
        ctx=ctx,
    )
    state = build_state(plan, None, has_unused_params=False)
    before = {n: p.detach().clone() for n, p in state.raw_model.named_parameters()}
    g = torch.Generator().manual_seed(ctx.rank)
    n = 4 // ctx.world_size
    x, target = torch.randn(n, 3, 64, 64, generator=g), torch.rand(n, 16, 16, 16, generator=g)
    state.train_model.train()
    loss = heatmap_loss(state.train_model(x), target, torch.ones(n, 16))
    loss.backward()
    state.optimizer.step()
    return {
        n: not torch.equal(before[n], p.detach())
        for n, p in state.raw_model.named_parameters()
        if p.grad is not None and bool(p.grad.abs().sum() > 0)
    }


if __name__ == "__main__":
    ctx = init_distributed("cpu")
    changed = step_changes(ctx)
    if ctx.is_main:
        torch.save(changed, sys.argv[1])
    shutdown(ctx)
