"""Everything a run does before its first epoch, once planned: claim it (one live process trains a run), find the
checkpoint a resumed run continues from, measure the model's cost, write the first record, build the training state,
and make this rank's loaders. `hgbench.run.runner` calls these in order."""

from __future__ import annotations

import torch

from hgbench.data.loader import make_loader
from hgbench.errors import HGBenchError
from hgbench.files.atomic_io import remove_stale_temps
from hgbench.files.claim import Claim, RunBusy, claim_run
from hgbench.measure.compile_watch import CompileWatch
from hgbench.measure.environment import collect_environment
from hgbench.models import measure_cost
from hgbench.run.plan import RunPlan, check_checkpoint_space
from hgbench.run.recorder import Recorder, check_continuable
from hgbench.run.state import TrainingState, build_state
from hgbench.train.checkpoint import Checkpoint, check_compatible, load_checkpoint
from hgbench.train.distributed import broadcast_object
from hgbench.train.mode_probe import describe_fast_mode
from hgbench.train.sampling import GlobalBatchSampler, ShardSampler


def make_loaders(plan: RunPlan) -> tuple:
    """The training loader (this rank's slice of every global batch) and the validation loader (this rank's shard)."""
    config, ctx, pin = plan.config, plan.ctx, plan.device.type == "cuda"
    sampler = GlobalBatchSampler(
        len(plan.train_ds), config.batch_size, rank=ctx.rank, world_size=ctx.world_size, seed=config.seed
    )
    train = make_loader(
        plan.train_ds,
        config.batch_size // ctx.world_size,
        shuffle=False,
        workers=config.workers,
        pin_memory=pin,
        sampler=sampler,
        drop_last=True,
        seed=config.seed,
        device=plan.device,
    )
    val = make_loader(
        plan.val_ds,
        config.test_batch_size,
        shuffle=False,
        workers=config.workers,
        pin_memory=pin,
        sampler=ShardSampler(len(plan.val_ds), rank=ctx.rank, world_size=ctx.world_size),
        drop_last=False,
        device=plan.device,
    )
    return train, val


def claim_for(plan: RunPlan) -> Claim | None:
    """Claim the run for this process (rank 0 for every rank), so no other process trains it at the same time, and
    remove the temp checkpoint a killed write left behind.

    Raises:
        RunBusy: another process is training the run (on every rank).
    """
    claim, busy = None, None
    if plan.ctx.is_main:
        try:
            claim = claim_run(plan.run_dir, label=f"{plan.spec.label} seed {plan.config.seed}")
        except RunBusy as exc:
            busy = str(exc)
        else:
            remove_stale_temps(plan.last_path)  # a killed write's: no live process can be writing it now
    busy = broadcast_object(plan.ctx, busy)
    if busy is not None:
        raise RunBusy(busy)
    return claim


def resume_from(plan: RunPlan, resume: bool, say: bool, *, required: bool = False) -> Checkpoint | None:
    """The checkpoint a `resume` run continues from: only one of this very run (same identity).

    Raises:
        HGBenchError: `required` and there is no such checkpoint (the run is never quietly started over).
    """
    if not resume or not plan.last_path.is_file():
        if required:
            raise HGBenchError(
                f"--resume: the run's checkpoint {plan.last_path} is not there (deleted or moved, or the data or "
                "hgbench version changed since the run began); nothing was started: run without --resume to start it "
                "again"
            )
        if resume and say:
            print(f"hgbench: no checkpoint at {plan.last_path}; starting {plan.spec.label} from scratch", flush=True)
        return None
    ckpt = load_checkpoint(plan.last_path, map_location="cpu", spec=plan.spec)
    check_compatible(ckpt, plan.spec, plan.config.input_res)
    if ckpt.identity != plan.identity:
        raise HGBenchError(
            f"checkpoint {plan.last_path} is of another experiment (settings, data or hgbench version changed)"
        )
    check_continuable(plan, ckpt)
    if say:
        print(f"hgbench: resuming {plan.spec.label} after epoch {ckpt.epoch} from {plan.last_path}", flush=True)
    return ckpt


def prepare_run(
    plan: RunPlan, *, resume: bool, must_resume: bool, say: bool
) -> tuple[TrainingState, Recorder, CompileWatch | None]:
    """Everything before the first epoch, once the run is claimed: the checkpoint to resume, the model's cost, the
    record, dynamo's watch and the training state."""
    config, device = plan.config, plan.device
    if device.type == "cuda":
        # Autotuned convolutions: the tuning lands in the first epoch, which the record reports apart (warm-up).
        torch.backends.cudnn.benchmark = True
    ckpt = resume_from(plan, resume, say, required=must_resume)
    cost = measure_cost(plan.spec, input_res=config.input_res)
    if plan.ctx.is_main:
        check_checkpoint_space(plan, cost.params)  # before the record exists, not after an epoch of training
    model_info = {
        "params": cost.params,
        "params_used": cost.params_used,
        "gflops": cost.gflops,
        "gflops_input_res": cost.input_res,
    }
    recorder = Recorder(plan, machine_info=collect_environment(device), model=model_info, resumed=ckpt)
    for note in recorder.record["dataset"].get("limit_notes", []) if say else []:
        print(f"hgbench: {note}", flush=True)  # a --limit larger than its split: what was used
    for note in plan.setting_notes if say else []:
        print(f"hgbench: {note}", flush=True)  # a setting this run cannot use (--compile under torchrun)
    if say and plan.fast_mode:
        print(f"hgbench: {describe_fast_mode(plan.fast_mode)}", flush=True)
    # Dynamo afresh for every compiled run: in a process that ran other cases before (--case all) it would have hit
    # its recompile limit and run this one eagerly; the record says what it compiled.
    watch = CompileWatch.begin() if config.compile else None
    state = build_state(plan, ckpt, has_unused_params=cost.params_used < cost.params)
    if say and ckpt is None and plan.init_weights is not None:
        print(f"hgbench: starting from {plan.init_weights.path} ({plan.init_weights.describe()})", flush=True)
    return state, recorder, watch
