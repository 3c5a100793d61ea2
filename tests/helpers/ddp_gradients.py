"""Run under torchrun (or alone): one float64 training step of hg1; rank 0 saves every parameter's gradient.

Float64, because the float32 gradient of these networks is itself only good to ~1% (BatchNorm over tiny inner levels),
which would hide a real error in the synchronised BatchNorm.
"""

import sys

import torch
from torch import nn

from hgbench.cases import get_spec
from hgbench.distributed import convert_sync_batchnorm, init_distributed, shutdown
from hgbench.loss import heatmap_loss
from hgbench.models import build_model

ctx = init_distributed("cpu")
torch.manual_seed(0)
model = build_model(get_spec("hg1")).double()
g = torch.Generator().manual_seed(1)
x = torch.randn(4, 3, 64, 64, generator=g, dtype=torch.float64)
target = torch.rand(4, 16, 16, 16, generator=g, dtype=torch.float64)
weight = (torch.rand(4, 16, generator=g) > 0.3).double()
if ctx.enabled:
    model = convert_sync_batchnorm(model, "cpu")
    ddp = nn.parallel.DistributedDataParallel(model)
    share = slice(4 // ctx.world_size * ctx.rank, 4 // ctx.world_size * (ctx.rank + 1))
    heatmap_loss(ddp(x[share]), target[share], weight[share]).backward()
else:
    heatmap_loss(model(x), target, weight).backward()
if ctx.is_main:
    grads = {n: p.grad for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    torch.save({"grads": grads, "buffers": buffers}, sys.argv[1])
shutdown(ctx)
