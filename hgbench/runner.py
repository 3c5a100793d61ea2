"""`hgbench run`: train a case, validate every epoch, time the inference pass, and record everything.

Crash safety: after every epoch the checkpoint and then the record are replaced atomically, and the record on disk
always says what a reader should believe if the process died right now ("interrupted after epoch k" until the run
finishes). `resume=True` continues from the last complete epoch and, on the same machine, ends with the same numbers
as an uninterrupted run: the data order and augmentation are functions of (seed, epoch, index), and the checkpoint
carries model, optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hgbench import __version__
from hgbench import results as store
from hgbench.cases import CaseSpec, get_spec
from hgbench.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from hgbench.config import RunConfig, run_identity
from hgbench.data.device_decode import DECODE_MODES
from hgbench.distributed import (
    DistContext,
    all_gather_objects,
    barrier,
    broadcast_object,
    convert_sync_batchnorm,
    init_distributed,
    shutdown,
    sum_over_ranks,
)
from hgbench.environment import collect_commit_info, collect_environment
from hgbench.errors import HGBenchError, RunFailed
from hgbench.inference import predict, timed_passes
from hgbench.metrics import evaluate_pckh
from hgbench.models import build_model, measure_cost
from hgbench.nvml import NvmlSampler
from hgbench.record import inference_entry, new_record, train_summary, utc_now
from hgbench.sampling import GlobalBatchSampler, ShardSampler
from hgbench.timing import peak_memory_mib, reset_peak_memory
from hgbench.training import StepOptions, train_one_epoch

MIN_FREE_BYTES = 64 * 2**20  # below this on the output disk a run refuses to start


@dataclass
class RunOutcome:
    """What `run` leaves behind."""

    status: str  # finished | interrupted | failed | skipped
    record_path: Path | None
    checkpoint_path: Path | None
    record: dict | None


def resolve_device(name: str, ctx: DistContext | None = None) -> torch.device:
    """`auto` picks CUDA when present; under torchrun each process takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:  # torch's own message is a wall of every device type it knows
        raise HGBenchError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HGBenchError("--device cuda asked for, but no CUDA device is available (use --device cpu)")
        if ctx is not None and ctx.enabled:
            dev = torch.device("cuda", ctx.local_rank)
    elif dev.type != "cpu":
        raise HGBenchError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")
    return dev


def open_datasets(data_dir: str | Path | None, *, input_res: int, limit_train: int | None, limit_val: int | None,
                  synthetic_people: int, sigma: float = 1.0, skip_bad_images: bool = False, need_train: bool = True,
                  seed: int = 0, decode: str = "workers", ctx: DistContext | None = None):  # fmt: skip
    """The training and validation datasets of a real MPII directory, or of the cached synthetic default."""
    from hgbench.data.mpii import MPIIDataset
    from hgbench.data.synthetic import default_dataset

    if data_dir is None:
        # Rank 0 generates the cached dataset; the others wait and then read it.
        if ctx is None or ctx.is_main:
            root = default_dataset(people=synthetic_people)
        if ctx is not None and ctx.enabled:
            barrier(ctx)
            root = default_dataset(people=synthetic_people)
    else:
        root = Path(data_dir).expanduser()
    common = {"input_res": input_res, "skip_bad_images": skip_bad_images, "sigma": sigma, "decode": decode}
    train = MPIIDataset(root, "train", augment=True, limit=limit_train, seed=seed, **common) if need_train else None
    val = MPIIDataset(root, "val", augment=False, limit=limit_val, seed=seed, **common)
    return train, val


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_output_dir(path: Path) -> None:
    """Fail before training when results could not be written (unwritable folder, nearly full disk)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".hgbench-write-test-{time.time_ns()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise HGBenchError(f"cannot write to {path}: {exc.strerror or exc}") from exc
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise HGBenchError(f"only {free / 2**20:.0f} MiB free on the disk holding {path}; need at least "
                           f"{MIN_FREE_BYTES / 2**20:.0f} MiB for checkpoints and records")  # fmt: skip


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (a scheduler's kill) like Ctrl-C, so the record is marked interrupted before exit."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resolve_config(config: RunConfig, device: torch.device) -> RunConfig:
    """The settings a run on `device` actually uses, as its record stores them.

    `--fast` turns on the best mode for the device (hgbench.bench.best_mode); ``decode="auto"`` becomes the fast
    mode's choice with `--fast` and "workers" (the study's pipeline) without. An explicit ``--decode`` is kept.
    """
    if not config.fast:
        return replace(config, decode="workers") if config.decode == "auto" else config
    from hgbench.speed_modes import best_mode

    mode = best_mode(device)
    config = replace(config, amp=mode["amp"], channels_last=mode["channels_last"], compile=mode["compile"])
    return replace(config, decode=mode["decode"]) if config.decode == "auto" else config


def planned_identity(config: RunConfig) -> str:
    """The identity (`hgbench.config.run_identity`) that `run(config)` would give its run, for a sweep's skip check.

    Opens the datasets to fingerprint them (generating the synthetic default if it is not cached yet, as the run
    would); trains nothing.
    """
    spec = get_spec(config.case, as_built=config.as_built)
    device = resolve_device(config.device)
    config = resolve_config(replace(config, world_size=int(os.environ.get("WORLD_SIZE", 1))), device)
    train_ds, val_ds = open_datasets(
        config.data_dir, input_res=config.input_res, limit_train=config.limit_train, limit_val=config.limit_val,
        synthetic_people=config.synthetic_people, sigma=config.sigma, skip_bad_images=config.skip_bad_images,
        seed=config.seed, decode=config.decode,
    )  # fmt: skip
    dataset = _dataset_info(train_ds, val_ds)["fingerprint"]
    return run_identity(config.to_dict(), spec_fingerprint=spec.fingerprint(), dataset_fingerprint=dataset,
                        version=__version__)  # fmt: skip


def out_of_memory(exc: BaseException, *, device: torch.device, config: RunConfig) -> RunFailed | None:
    """A one-line `RunFailed` with a hint when `exc` is the device or the host running out of memory, else None.

    PyTorch reports a failed CPU allocation as a plain RuntimeError ("DefaultCPUAllocator: not enough memory"), so
    the message decides; a CUDA one is `torch.OutOfMemoryError`.
    """
    text = str(exc)
    is_oom = isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or any(
        s in text for s in ("out of memory", "not enough memory", "can't allocate memory")
    )
    if not is_oom:
        return None
    where = "GPU" if isinstance(exc, torch.OutOfMemoryError) or device.type == "cuda" else "host"
    return RunFailed(
        f"out of {where} memory at batch {config.batch_size}, input {config.input_res}x{config.input_res}: use a "
        f"smaller --batch or --input-res (or --amp to halve activations)"
    )


def _optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=config.lr, momentum=0.0)
    raise HGBenchError(f"unknown optimizer {config.optimizer!r}; use adam or rmsprop")


def _validate_config(config: RunConfig, spec: CaseSpec, ctx: DistContext) -> None:
    try:
        spec.check_input_res(config.input_res)
    except ValueError as exc:
        raise HGBenchError(str(exc)) from exc
    if config.epochs < 1:
        raise HGBenchError(f"--epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 2:
        raise HGBenchError(f"--batch must be at least 2 (BatchNorm needs two samples), got {config.batch_size}")
    if config.batch_size % ctx.world_size:
        raise HGBenchError(f"--batch {config.batch_size} is not divisible by the {ctx.world_size} processes")
    if config.test_batch_size < 1:
        raise HGBenchError(f"--test-batch must be at least 1, got {config.test_batch_size}")
    if config.decode not in DECODE_MODES:
        raise HGBenchError(f"--decode must be one of {', '.join(DECODE_MODES)}, got {config.decode!r}")


def _dataset_info(train_ds, val_ds) -> dict:
    return {
        "name": val_ds.name,
        "root": str(val_ds.root),
        "train_size": len(train_ds),
        "val_size": len(val_ds),
        "fingerprint": f"{train_ds.fingerprint()}-{val_ds.fingerprint()}",
        "skipped_images": sorted(set(train_ds.bad_images) | set(val_ds.bad_images)),
    }


def _skipped(ctx: DistContext, train_ds, val_ds) -> list[str]:
    """Every image any rank found corrupt so far (with --skip-bad-images), for the record."""
    mine = set(train_ds.bad_images) | set(val_ds.bad_images)
    return sorted(set().union(*all_gather_objects(ctx, sorted(mine))))


def _stem(config: RunConfig, spec: CaseSpec) -> str:
    form = "-asbuilt" if spec.as_built else ""
    tag = f"_{config.tag}" if config.tag else ""
    return f"case{spec.name}{form}_seed{config.seed}{tag}"


class _Progress:
    """A rich progress bar per epoch (or one log line per epoch with quiet=True); silent on non-main ranks."""

    def __init__(self, *, enabled: bool, quiet: bool, label: str) -> None:
        self.enabled, self.quiet, self.label = enabled, quiet, label
        self._bar = None
        self._task = None
        self._t0 = 0.0
        self._loss: float | None = None

    def start_epoch(self, epoch: int, epochs: int, steps: int, batch: int) -> None:
        self._t0 = time.perf_counter()
        self._batch = batch
        if not self.enabled or self.quiet or not sys.stdout.isatty():  # logs and pipes get one line per epoch
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=True,
        )  # fmt: skip
        self._bar.start()
        self._prefix = f"{self.label} epoch {epoch}/{epochs}"
        self._task = self._bar.add_task(f"{self._prefix} train", total=steps, info="")

    def step(self, steps: int, loss: float | None) -> None:
        if loss is not None:
            self._loss = loss
        if self._bar is not None:
            elapsed = time.perf_counter() - self._t0
            rate = steps * self._batch / elapsed if elapsed > 0 else 0.0
            loss_txt = f"loss {self._loss:.3g}" if self._loss is not None else "loss …"
            self._bar.update(self._task, completed=steps, info=f"{loss_txt}  {rate:.1f} img/s")

    def start_validation(self, batches: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(f"{self._prefix} validate", total=batches, info="")

    def validation_step(self, batches: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=batches)

    def abort(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def end_epoch(self, entry: dict) -> None:
        self.abort()
        if self.enabled:
            pckh = f"{entry['pckh']:.2f}" if entry.get("pckh") is not None else "n/a"
            print(
                f"{self.label} epoch {entry['epoch']}: loss {entry['train_loss']:.4g}  val loss {entry['val_loss']:.4g}"
                f"  heatmap acc {entry['heatmap_acc']:.3f}  PCKh {pckh}  {entry['wall_s']:.1f} s"
                f"  ({entry['images_per_s']:.1f} img/s, data wait {100 * entry['data_wait_s'] / entry['wall_s']:.0f}%)",
                flush=True,
            )


def run(
    config: RunConfig,
    *,
    resume: bool = False,
    quiet: bool = False,
    progress: bool = True,
    stop_after_epoch: int | None = None,
    keep_checkpoint: bool = True,
) -> RunOutcome:
    """Train and evaluate one case as `config` says; returns where the record and checkpoint went.

    Args:
        config: every hyperparameter (see RunConfig).
        resume: continue from the last complete epoch of the same experiment, if its checkpoint exists.
        quiet: one log line per epoch instead of a progress bar.
        progress: print anything at all.
        stop_after_epoch: end the process's work right after this epoch's checkpoint, as a kill would (tests).
        keep_checkpoint: keep the last checkpoint once the run finished (False: delete it, e.g. smoke runs, whose
            checkpoints only serve a resume).

    Raises:
        HGBenchError: bad configuration or data (before training starts where it can be checked).
        RunFailed: NaN / infinite loss; the record is written with status "failed".
        KeyboardInterrupt: Ctrl-C or SIGTERM; the record is written with status "interrupted".
    """
    spec = get_spec(config.case, as_built=config.as_built)
    probe_device = resolve_device(config.device)
    ctx = init_distributed(probe_device.type)
    try:
        return _run(config, spec, ctx, resume=resume, quiet=quiet, progress=progress,
                    stop_after_epoch=stop_after_epoch, keep_checkpoint=keep_checkpoint)  # fmt: skip
    finally:
        shutdown(ctx)


def _run(config: RunConfig, spec: CaseSpec, ctx: DistContext, *, resume: bool, quiet: bool, progress: bool,
         stop_after_epoch: int | None, keep_checkpoint: bool = True) -> RunOutcome:  # fmt: skip
    device = resolve_device(config.device, ctx)
    if device.type == "cuda":
        # Autotuned convolutions: the tuning lands in epoch 1, which the record reports apart (warm-up).
        torch.backends.cudnn.benchmark = True
    config = replace(config, world_size=ctx.world_size)
    config = resolve_config(config, device)
    _validate_config(config, spec, ctx)
    say = progress and ctx.is_main
    out_dir, ckpt_root = Path(config.out), Path(config.checkpoint_dir)
    if ctx.is_main:
        _check_output_dir(out_dir)
        _check_output_dir(ckpt_root)

    train_ds, val_ds = open_datasets(
        config.data_dir, input_res=config.input_res, limit_train=config.limit_train, limit_val=config.limit_val,
        synthetic_people=config.synthetic_people, sigma=config.sigma, skip_bad_images=config.skip_bad_images,
        seed=config.seed, decode=config.decode, ctx=ctx,
    )  # fmt: skip
    if len(train_ds) < config.batch_size:
        raise HGBenchError(
            f"{len(train_ds)} training people in {train_ds.root} are fewer than one batch of {config.batch_size}; "
            "use a smaller --batch or more data"
        )
    dataset = _dataset_info(train_ds, val_ds)
    identity = run_identity(config.to_dict(), spec_fingerprint=spec.fingerprint(),
                            dataset_fingerprint=dataset["fingerprint"], version=__version__)  # fmt: skip
    run_dir = ckpt_root / f"{_stem(config, spec)}-{identity}"
    last_path = run_dir / "last.pt"

    # Resume state (rank 0 reads, everyone gets the same).
    ckpt = None
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, map_location="cpu")
        check_compatible(ckpt, spec, config.input_res)
        if ckpt.identity != identity:
            raise HGBenchError(f"checkpoint {last_path} is of another experiment (settings, data or hgbench version "
                               "changed)")  # fmt: skip
    elif resume and say:
        print(f"hgbench: no checkpoint at {last_path}; starting {spec.label} from scratch", flush=True)

    machine_info = collect_environment(device)
    machine = store.machine_id(machine_info)
    cost = measure_cost(spec, input_res=config.input_res)
    model_info = {"params": cost.params, "params_used": cost.params_used, "gflops": cost.gflops,
                  "gflops_input_res": cost.input_res}  # fmt: skip

    record_path: Path | None = None
    if ctx.is_main:
        previous = Path(ckpt.state["record_path"]) if ckpt is not None else None
        if previous is not None and previous.is_file():
            record_path = previous
            record = ckpt.state["record"]
        else:
            record_path = store.next_record_path(out_dir, machine, _stem(config, spec))
            record = new_record(run_id=record_path.stem, machine_info=machine_info,
                                commit_info=collect_commit_info(), spec=spec.to_dict(), config=config.to_dict(),
                                dataset=dataset, model=model_info, checkpoint=str(last_path))  # fmt: skip
            if ckpt is not None:
                record["results"]["epochs"] = ckpt.state["record"]["results"]["epochs"]
        store.write_json_atomic(record_path, record)
    record = broadcast_object(ctx, record if ctx.is_main else None)

    # Model, optimiser, schedule.
    _seed_everything(config.seed)
    model: nn.Module = build_model(spec)
    optimizer = _optimizer(config, model.parameters())
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.lr_milestones, gamma=config.lr_gamma)
    start_epoch, best_pckh = 0, None
    if ckpt is not None:
        model.load_state_dict(ckpt.state["model"])
        optimizer.load_state_dict(ckpt.state["optimizer"])
        scheduler.load_state_dict(ckpt.state["scheduler"])
        start_epoch, best_pckh = ckpt.epoch, ckpt.state.get("best_pckh")
        _set_rng_state(ckpt.state["rng"])
        if say:
            print(f"hgbench: resuming {spec.label} after epoch {start_epoch} from {last_path}", flush=True)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    # Optimizer state follows the parameters to the device.
    for state in optimizer.state.values():
        for k, v in state.items():
            if torch.is_tensor(v):
                state[k] = v.to(device)
    raw_model = model
    if ctx.enabled:
        model = convert_sync_batchnorm(model, device.type)
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cost.params_used < cost.params,
        )  # fmt: skip
    train_model = torch.compile(model) if config.compile else model
    opts = StepOptions(device, amp=config.amp, channels_last=config.channels_last)

    from hgbench.data.loader import make_loader

    pin = device.type == "cuda"
    train_sampler = GlobalBatchSampler(len(train_ds), config.batch_size, rank=ctx.rank, world_size=ctx.world_size,
                                       seed=config.seed)  # fmt: skip
    train_loader = make_loader(train_ds, config.batch_size // ctx.world_size, shuffle=False, workers=config.workers,
                               pin_memory=pin, sampler=train_sampler, drop_last=True, seed=config.seed,
                               device=device)  # fmt: skip
    val_loader = make_loader(val_ds, config.test_batch_size, shuffle=False, workers=config.workers, pin_memory=pin,
                             sampler=ShardSampler(len(val_ds), rank=ctx.rank, world_size=ctx.world_size),
                             drop_last=False, device=device)  # fmt: skip
    gt = val_ds.ground_truth()
    bar = _Progress(enabled=say, quiet=quiet, label=spec.label)

    def save(epoch: int, status_reason: str) -> None:
        """Checkpoint, then record: a kill between the two leaves a record one epoch behind, never ahead."""
        if not ctx.is_main:
            return
        record["datetime"] = utc_now()
        record["status"], record["status_reason"] = "interrupted", status_reason
        record["results"]["train"] = train_summary(record["results"]["epochs"])
        payload = {
            "spec": spec.to_dict(), "config": config.to_dict(), "epoch": epoch, "identity": identity,
            "best_pckh": best_pckh, "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": _rng_state(), "record_path": str(record_path),
            "record": record,
        }  # fmt: skip
        save_checkpoint(last_path, payload)
        store.write_json_atomic(record_path, record)

    def finish(status: str, reason: str | None) -> None:
        if not ctx.is_main:
            return
        record["datetime"] = utc_now()
        record["status"], record["status_reason"] = status, reason
        if status == "finished":
            record["finished"] = record["datetime"]
        record["results"]["train"] = train_summary(record["results"]["epochs"])
        store.write_json_atomic(record_path, record)

    # The first epoch of every process pays cuDNN autotuning, compilation and worker start-up: after --resume too.
    first_epoch = epoch = start_epoch + 1
    with NvmlSampler(device) as sampler, _sigterm_as_interrupt():
        if say and not sampler.available:
            print(f"hgbench: GPU telemetry unavailable ({sampler.reason}); energy and utilisation recorded as null",
                  flush=True)  # fmt: skip
        reset_peak_memory(device)
        try:
            for epoch in range(start_epoch + 1, config.epochs + 1):
                train_loader.set_epoch(epoch)
                bar.start_epoch(epoch, config.epochs, len(train_loader), config.batch_size)
                sampler.mark(f"epoch{epoch}-start")
                stats = train_one_epoch(
                    train_model,
                    train_loader,
                    optimizer,
                    opts,
                    epoch=epoch,
                    on_progress=bar.step,
                    on_batch=train_ds.collect_bad if config.skip_bad_images else None,
                )
                sampler.mark(f"epoch{epoch}-end")
                bar.start_validation(len(val_loader))
                val = predict(model, val_loader, opts, input_res=config.input_res, ctx=ctx,
                              on_batch=val_ds.collect_bad if config.skip_bad_images else None,
                              on_progress=bar.validation_step)  # fmt: skip
                scheduler.step()
                # Every rank's mean loss is over its share of the global batch; the epoch's loss is their mean.
                images, loss_sum = sum_over_ranks(ctx, stats.images, stats.train_loss)
                images, train_loss = int(images), loss_sum / ctx.world_size
                pckh = (evaluate_pckh(val.predictions, gt.subset(val_ds.indices_of(val.index))).mean
                        if ctx.is_main else None)  # fmt: skip
                best_pckh = pckh if best_pckh is None or (pckh is not None and pckh > best_pckh) else best_pckh
                tel = sampler.window(f"epoch{epoch}-start", f"epoch{epoch}-end")
                entry = {
                    "epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                    "val_loss": val.loss, "heatmap_acc": val.heatmap_acc, "pckh": pckh, "wall_s": stats.wall_s,
                    "compute_s": stats.compute_s, "data_wait_s": stats.data_wait_s,
                    "device_idle_s": stats.device_idle_s, "steps": stats.steps,
                    "images": images, "images_per_s": images / stats.wall_s if stats.wall_s > 0 else None,
                    "val_wall_s": val.timing["wall_s"], "warmup": epoch == first_epoch,
                    "energy_j": tel.get("energy_j"), "gpu_util_mean": tel.get("gpu_util_mean"),
                    "gpu_mem_used_max_mib": tel.get("gpu_mem_used_max_mib"), "power_mean_w": tel.get("power_mean_w"),
                }  # fmt: skip
                record["results"]["epochs"].append(entry)
                record["dataset"]["skipped_images"] = _skipped(ctx, train_ds, val_ds)
                record["results"]["heatmap_acc"] = val.heatmap_acc
                bar.end_epoch(entry)
                save(epoch, f"stopped after epoch {epoch} of {config.epochs}; continue with --resume")
                barrier(ctx)
                if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < config.epochs:
                    return RunOutcome("interrupted", record_path, last_path, record if ctx.is_main else None)

            # The timed inference pass: rank 0 alone, as on the study's single GPU, with the model as trained.
            if ctx.is_main:
                infer_model, infer_loader = train_model, val_loader  # warm: validation ran them last epoch
                if ctx.enabled:  # not the DDP wrapper (rank 0 runs alone), and over the whole split, not a shard
                    infer_model = torch.compile(raw_model) if config.compile else raw_model
                    infer_loader = make_loader(val_ds, config.test_batch_size, shuffle=False, workers=config.workers,
                                               pin_memory=pin, drop_last=False, device=device)  # fmt: skip
                record["results"].update(_inference_pass(infer_model, infer_loader, val_ds, gt, config, opts, say))
                record["results"]["peak_memory_mib"] = peak_memory_mib(device)
                record["results"]["telemetry"] = sampler.summary()
                if not keep_checkpoint:
                    record["checkpoint"] = None  # the record first: a kill in between leaves a stray file, no lie
                finish("finished", None)
                if not keep_checkpoint:
                    shutil.rmtree(run_dir, ignore_errors=True)
            barrier(ctx)
        except RunFailed as exc:
            bar.abort()
            finish("failed", str(exc))
            raise
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            failure = out_of_memory(exc, device=device, config=config)
            if failure is None:
                raise
            bar.abort()
            finish("failed", str(failure))
            raise failure from None
        except KeyboardInterrupt:
            bar.abort()
            done = len(record["results"]["epochs"])
            finish(
                "interrupted",
                f"interrupted during epoch {epoch}; epochs 1-{done} are checkpointed; continue with --resume"
                if done
                else f"interrupted during epoch {epoch}",
            )
            raise
    kept = last_path if keep_checkpoint else None
    if say:
        where = (f"checkpoint {last_path} ({last_path.stat().st_size / 2**20:.0f} MiB)" if kept is not None
                 else "checkpoint not kept (--keep-checkpoints keeps it)")  # fmt: skip
        print(f"hgbench: {spec.label} finished; record {record_path}; {where}", flush=True)
    return RunOutcome("finished", record_path, kept, record if ctx.is_main else None)


def _inference_pass(model: nn.Module, loader, val_ds, gt, config: RunConfig, opts: StepOptions, say: bool) -> dict:
    """One timed pass over the whole validation split at the test batch size, plain and with flip test.

    `model` is the network as trained (compiled with --compile) and `loader` one whose workers the passes share, so
    both passes start warm (`hgbench.inference.timed_passes`).
    """
    collect = val_ds.collect_bad if config.skip_bad_images else None
    passes = timed_passes(model, loader, opts, input_res=config.input_res, flip_test=config.flip_test,
                          tail=len(val_ds) % config.test_batch_size, on_batch=collect)  # fmt: skip
    scores = {k: evaluate_pckh(p.predictions, gt.subset(val_ds.indices_of(p.index))) for k, p in passes.items()}
    final = "flip" if config.flip_test else "plain"
    inference = {"n_images": len(val_ds), "n_excluded": len(passes[final].excluded),
                 "batch_size": config.test_batch_size}  # fmt: skip
    for k, p in passes.items():
        inference[k] = inference_entry(p.timing, scores[k].mean)
    if "flip" not in passes:
        inference["flip"] = None
    pckh = {**scores[final].to_dict(), "flip_test": final == "flip"}
    if say:
        print(f"hgbench: PCKh@0.5 Mean {pckh['Mean']:.2f} ({'flip test' if final == 'flip' else 'no flip'}); "
              f"inference {inference['plain']['wall_min']:.3f} min wall", flush=True)  # fmt: skip
    return {"pckh": pckh, "inference": inference}
