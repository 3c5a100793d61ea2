"""The training state of a run: the network, its optimiser and schedule, built fresh or restored from a checkpoint.

A fresh run starts from random weights, or from another tool's (``--init-from``, read by the plan); `build_state`
puts them on the plan's device (and, under torchrun, wraps the network in DDP with synchronised
BatchNorm); `TrainingState.checkpoint_state` is what a checkpoint holds beside the plan, the RNG states included, so
a resumed run continues with the same numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hgbench.errors import HGBenchError
from hgbench.measure.compile_watch import compile_model
from hgbench.models import build_model
from hgbench.run.plan import RunPlan
from hgbench.spec.config import RunConfig
from hgbench.train.checkpoint import Checkpoint
from hgbench.train.distributed import convert_sync_batchnorm
from hgbench.train.training import StepOptions


@dataclass
class TrainingState:
    """The network and its optimisation, as built or restored, and the forms the loops call."""

    raw_model: nn.Module  # the plain network (its state_dict is what checkpoints hold)
    model: nn.Module  # what validation calls: the DDP wrapper under torchrun, else the network
    train_model: nn.Module  # what training calls: `model`, compiled with --compile
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    opts: StepOptions
    start_epoch: int = 0  # epochs already done (a resumed run)
    best_pckh: float | None = None

    def checkpoint_state(self) -> dict:
        """What a checkpoint holds beside the plan: weights, optimiser, schedule, RNGs, best PCKh."""
        return {
            "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(self.opts.device),
            "best_pckh": self.best_pckh,
        }

    def inference_model(self, plan: RunPlan) -> nn.Module:
        """The network as trained for the timed pass, which rank 0 runs alone: never the DDP wrapper."""
        if not plan.ctx.enabled:
            return self.train_model
        return compile_model(self.raw_model) if plan.config.compile else self.raw_model


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(device: torch.device | None = None) -> dict:
    """Every generator a run draws from, as tensors and plain values (a checkpoint loads weights-only).

    Only the run device's CUDA generator (none without a CUDA `device`): a run resumed by a process that sees fewer
    GPUs (Ray, Slurm) restores it onto its own device.
    """
    numpy_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),  # (version, tuple of ints, gauss or None)
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    """Restore what `_rng_state` saved; the CUDA generator onto `device`, the run's device now."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, momentum=0.0)
    raise HGBenchError(f"unknown optimizer {config.optimizer!r}; use adam or rmsprop")


def build_state(plan: RunPlan, ckpt: Checkpoint | None, *, has_unused_params: bool) -> TrainingState:
    """Model, optimiser and schedule for `plan`, restored from `ckpt` when resuming (else the model starts from the
    plan's ``--init-from`` weights, if any), on the plan's device."""
    config, device = plan.config, plan.device
    _seed_everything(config.seed)
    model: nn.Module = build_model(plan.spec)
    if ckpt is not None:
        model.load_state_dict(ckpt.state["model"])
    elif plan.init_weights is not None:  # fine-tuning: a resumed run takes its weights from its own checkpoint instead
        model.load_state_dict(plan.init_weights.state_dict)
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    if plan.ctx.enabled:
        # Before the optimiser, which must hold the parameters of the network that trains.
        model = convert_sync_batchnorm(model)
    # The optimiser after the move (as torch's docs ask), so that restoring its state places it by torch's own rule:
    # moments beside their parameters, Adam's `step` on the host. A `step` on the GPU would be read back (a host
    # sync) for every parameter at every step.
    optimizer = _optimizer(config, model.parameters())
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.lr_milestones, gamma=config.lr_gamma)
    state = TrainingState(
        model,
        model,
        model,
        optimizer,
        scheduler,
        StepOptions(device, amp=config.amp, channels_last=config.channels_last),
    )
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.state["optimizer"])
        scheduler.load_state_dict(ckpt.state["scheduler"])
        state.start_epoch, state.best_pckh = ckpt.epoch, ckpt.state.get("best_pckh")
        _set_rng_state(ckpt.state["rng"], device)
    if plan.ctx.enabled:
        state.model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=has_unused_params,
        )
    state.train_model = compile_model(state.model) if config.compile else state.model
    return state
