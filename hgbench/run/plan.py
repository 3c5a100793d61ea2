"""Planning a run: everything `hgbench run` resolves once, before a step is taken.

A `RunPlan` holds the device, the settings as the record stores them (the fast mode and decoder chosen, the world
size filled in), the case, the datasets and their fingerprint, the run's identity and where its checkpoint lives.
The runner, the sweep's skip check (`planned_identity`) and `hgbench evaluate --checkpoint` take these from here, so
each fact is decided in one place. A fine-tuning run's starting weights (``--init-from``) are read here too, so a file
that does not fit the case stops the run before its record is written.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hgbench._version import __version__
from hgbench.data.device_decode import DECODE_MODES
from hgbench.data.groundtruth import GroundTruth
from hgbench.errors import HGBenchError
from hgbench.models.weights import Weights, file_sha256, read_weights
from hgbench.spec.cases import CaseSpec
from hgbench.spec.config import RunConfig, check_settings, run_identity
from hgbench.spec.footprint import gib, host_available_bytes, training_bytes
from hgbench.spec.variants import NAME_PATTERN, spec_of_config
from hgbench.train.distributed import COMPILE_UNDER_DDP, DistContext, barrier

if TYPE_CHECKING:
    from hgbench.train.mode_probe import FastChoice

MIN_FREE_BYTES = 64 * 2**20  # below this on the output disk a run refuses to start


@dataclass
class RunPlan:
    """One run, resolved: what it runs on, with which settings and data, under which identity."""

    config: RunConfig  # as the record stores it (fast mode, decoder and world size resolved)
    spec: CaseSpec
    ctx: DistContext
    device: torch.device
    train_ds: object  # MPIIDataset, training split
    val_ds: object  # MPIIDataset, validation split
    dataset: dict  # the record's ``dataset`` section
    identity: str  # `hgbench.spec.config.run_identity`: resume and the sweep's skip agree on it
    fast_mode: dict | None = None  # with --fast: the mode chosen and how (`hgbench.train.mode_probe.FastChoice`)
    setting_notes: list[str] = field(default_factory=list)  # settings asked for and not used, each with why

    @property
    def stem(self) -> str:
        """The record's file name after its number, e.g. ``case3-asbuilt_seed0_smoke``."""
        return record_stem(self.config, self.spec)

    @property
    def run_dir(self) -> Path:
        """The run's checkpoint folder: its stem and identity, so two settings never share one."""
        return Path(self.config.checkpoint_dir) / f"{self.stem}-{self.identity}"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @functools.cached_property
    def ground_truth(self) -> GroundTruth:
        """The validation split's ground truth (head boxes, missing joints), read once per run."""
        return self.val_ds.ground_truth()

    @functools.cached_property
    def init_weights(self) -> Weights | None:
        """The ``--init-from`` weights mapped onto the case's network (None without --init-from), read once.

        Raises:
            HGBenchError: the file is gone, changed since the run was planned, or does not fit the case.
        """
        path = self.config.init_from
        if path is None:
            return None
        weights = read_weights(path, self.spec)
        if weights.sha256 != self.config.init_from_sha256:
            raise HGBenchError(
                f"--init-from {path} changed since this run began (SHA-256 {weights.sha256[:12]}, the run's "
                f"{str(self.config.init_from_sha256)[:12]}); start a new run"
            )
        return weights


def make_plan(config: RunConfig, spec: CaseSpec, ctx: DistContext) -> RunPlan:
    """Resolve `config` for this process: device, settings, checks, datasets and identity (raises HGBenchError)."""
    device = resolve_device(config.device, ctx)
    if device.type == "cuda":
        # The run's GPU becomes the current one, so everything that defaults to "the current device" (CUDA events,
        # streams, new tensors) is on it; with --device cuda:1 in one process it would otherwise be GPU 0.
        torch.cuda.set_device(device)
    fresh_init = config.init_from is not None and config.init_from_sha256 is None  # not a stored run's config
    validate_config(replace(config, decode="workers" if config.decode == "auto" else config.decode), spec, ctx)
    check_fits(replace(config, world_size=ctx.world_size), spec, device)  # before --fast's probe builds the network
    notes = [why] if (why := _without_compile_under_ddp(replace(config, world_size=ctx.world_size))[1]) else []
    config, fast = resolve_fast(replace(config, world_size=ctx.world_size), device, spec)
    if ctx.is_main:
        check_output_dir(Path(config.out))
        check_output_dir(Path(config.checkpoint_dir))
    train_ds, val_ds = _datasets(config, ctx)
    if len(train_ds) < config.batch_size:
        raise HGBenchError(
            f"{len(train_ds)} training people in {train_ds.root} are fewer than one batch of {config.batch_size}; "
            "use a smaller --batch or more data"
        )
    if len(val_ds) < ctx.world_size:
        # A process with no validation batch would skip the collective DDP makes on the first validation forward
        # (its buffer broadcast), and every process would wait on the others.
        raise HGBenchError(
            f"{len(val_ds)} validation people are fewer than the {ctx.world_size} processes; every process needs one: "
            "use a larger --limit-val or fewer processes"
        )
    dataset = dataset_info(train_ds, val_ds)
    identity = _identity(config, spec, dataset["fingerprint"])
    plan = RunPlan(
        config, spec, ctx, device, train_ds, val_ds, dataset, identity, fast.to_dict() if fast else None, notes
    )
    check_inside(plan.run_dir, Path(config.checkpoint_dir), "--checkpoint-dir")
    if fresh_init:
        _ = plan.init_weights  # read now: weights that do not fit the case stop the run before its record exists
    if ctx.is_main:
        _ = plan.ground_truth  # read now: a damaged ground-truth file is an error before training, not after epoch 1
    return plan


def planned_identity(config: RunConfig, device: torch.device | None = None) -> str:
    """The identity that `run(config)` would give its run, for a sweep's skip check.

    Opens the datasets to fingerprint them (generating the synthetic default if it is not cached yet, as the run
    would); trains nothing and checks no output folder. `device`: the device the run will have, where that is not
    this machine's (a sweep's driver planning for its GPU workers); default: `config.device` resolved here.
    """
    spec = spec_of_config(config)
    device = resolve_device(config.device) if device is None else device
    config = resolve_config(replace(config, world_size=int(os.environ.get("WORLD_SIZE", 1))), device, spec)
    train_ds, val_ds = _datasets(config)
    return _identity(config, spec, dataset_info(train_ds, val_ds)["fingerprint"])


def _datasets(config: RunConfig, ctx: DistContext | None = None) -> tuple:
    """The training and validation datasets that `config` names (as `open_datasets` opens them)."""
    return open_datasets(
        config.data_dir,
        input_res=config.input_res,
        limit_train=config.limit_train,
        limit_val=config.limit_val,
        synthetic_people=config.synthetic_people,
        sigma=config.sigma,
        skip_bad_images=config.skip_bad_images,
        seed=config.seed,
        decode=config.decode,
        ctx=ctx,
    )


def _identity(config: RunConfig, spec: CaseSpec, dataset_fingerprint: str) -> str:
    """`run_identity` of a resolved config, the network it builds and the data it reads, at this hgbench version."""
    return run_identity(
        config.to_dict(),
        spec_fingerprint=spec.fingerprint(),
        dataset_fingerprint=dataset_fingerprint,
        version=__version__,
    )


def resolve_device(name: str, ctx: DistContext | None = None) -> torch.device:
    """`auto` picks CUDA when present; under torchrun each process takes its local GPU.

    A CUDA device always comes back with its index (a bare ``cuda`` is the current GPU, ``cuda:<current>``): torch's
    calls that take one device (``torch.cuda.set_device``, NCCL's ``device_ids``) refuse a device without an index,
    and two spellings of one GPU would compare unequal.
    """
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
        elif dev.index is None:
            # Not torch.cuda.current_device() before CUDA is initialised: that would initialise it (the sweep's skip
            # check resolves devices too), and until then the current GPU is CUDA's default, 0.
            dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_initialized() else 0)
        if dev.index >= torch.cuda.device_count():
            raise HGBenchError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif dev.type != "cpu":
        raise HGBenchError(f"unsupported device {name!r}; use cpu, cuda or cuda:N")
    return dev


def resolve_config(config: RunConfig, device: torch.device, spec: CaseSpec | None = None) -> RunConfig:
    """The settings a run on `device` actually uses, as its record stores them (`resolve_fast` without the choice)."""
    return resolve_fast(config, device, spec)[0]


def resolve_fast(
    config: RunConfig, device: torch.device, spec: CaseSpec | None = None
) -> tuple[RunConfig, FastChoice | None]:
    """The settings a run on `device` actually uses, and with `--fast` how its mode was chosen.

    `--fast` turns on the fastest mode for the device and this case (`hgbench.train.mode_probe.choose_fast_mode`: on a
    CPU measured by a short cached probe, on CUDA the fast path's fixed settings); ``decode="auto"`` becomes the fast
    mode's choice with `--fast` and "workers" (the study's pipeline) without. An explicit ``--decode`` is kept.
    ``--init-from`` weights get their SHA-256 (the run's identity holds the file's content, not its path); a stored
    run's config keeps the one it has.

    Returns:
        The resolved config and the `FastChoice` (None without `--fast`).
    """
    if config.init_from is not None and config.init_from_sha256 is None:
        if not Path(config.init_from).is_file():
            raise HGBenchError(f"--init-from: weights file not found: {config.init_from}")
        config = replace(config, init_from_sha256=file_sha256(config.init_from))
    config = _without_compile_under_ddp(config)[0]
    if not config.fast:
        return (replace(config, decode="workers") if config.decode == "auto" else config), None
    from hgbench.train.mode_probe import choose_fast_mode

    spec = spec or spec_of_config(config)
    choice = choose_fast_mode(
        device,
        spec,
        batch=config.batch_size // max(1, config.world_size),
        input_res=config.input_res,
        world_size=config.world_size,
    )
    mode = choice.settings
    config = replace(config, amp=mode["amp"], channels_last=mode["channels_last"], compile=mode["compile"])
    return (replace(config, decode=mode["decode"]) if config.decode == "auto" else config), choice


def _without_compile_under_ddp(config: RunConfig) -> tuple[RunConfig, str | None]:
    """`config` without ``--compile`` when it runs on several processes, and the note that says so (None if kept).

    Dropped in `resolve_fast`, so that the run's record and identity and a sweep's skip check all hold what ran.
    """
    if config.compile and config.world_size > 1:
        return replace(config, compile=False), f"--compile dropped: {COMPILE_UNDER_DDP}"
    return config, None


def validate_config(config: RunConfig, spec: CaseSpec, ctx: DistContext) -> None:
    check_settings(config)
    check_tag(config.tag)
    try:
        spec.check_input_res(config.input_res)
    except ValueError as exc:
        raise HGBenchError(str(exc)) from exc
    if config.batch_size % ctx.world_size:
        raise HGBenchError(f"--batch {config.batch_size} is not divisible by the {ctx.world_size} processes")
    if config.decode not in DECODE_MODES:
        raise HGBenchError(f"--decode must be one of {', '.join(DECODE_MODES)}, got {config.decode!r}")


def open_datasets(
    data_dir: str | Path | None,
    *,
    input_res: int,
    limit_train: int | None,
    limit_val: int | None,
    synthetic_people: int,
    sigma: float = 1.0,
    skip_bad_images: bool = False,
    need_train: bool = True,
    seed: int = 0,
    decode: str = "workers",
    ctx: DistContext | None = None,
):
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


def dataset_info(train_ds, val_ds) -> dict:
    return {
        "name": val_ds.name,
        "root": str(val_ds.root),
        "train_size": len(train_ds),
        "val_size": len(val_ds),
        "fingerprint": f"{train_ds.fingerprint()}-{val_ds.fingerprint()}",
        "skipped_images": sorted(set(train_ds.bad_images) | set(val_ds.bad_images)),
    }


def device_free_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can have on `device` now (None: unknown)."""
    if device.type == "cuda":
        try:
            return torch.cuda.mem_get_info(device)[0]
        except Exception:  # no driver, a stand-in without it: unknown, and the run's own OOM handling remains
            return None
    return host_available_bytes()


def check_fits(config: RunConfig, spec: CaseSpec, device: torch.device) -> None:
    """Refuse, before anything is built or written, a run whose network and training batch cannot fit in the memory
    free on its device (`hgbench.spec.footprint`'s estimate), saying what would fit.

    Raises:
        HGBenchError: one line: what the run needs, what is free, and the largest batch or input that fits.
    """
    free = device_free_bytes(device)
    if free is None:
        return
    batch = max(1, config.batch_size // max(1, config.world_size))  # one process's share

    def need(res: int, b: int) -> int:
        return training_bytes(spec, input_res=res, batch=b, optimizer=config.optimizer, amp=config.amp)

    res = config.input_res
    if need(res, batch) <= free:
        return
    weights = need(res, 0)
    per_sample = need(res, 1) - weights
    fitting_batch = (free - weights) // per_sample if free > weights else 0
    if fitting_batch >= 2:
        fits = f"the largest --batch that fits is about {fitting_batch * max(1, config.world_size)}"
    else:
        step = spec.min_input_res()
        low, high = 0, res // step  # the largest multiple k of `step` with need(k * step, batch) <= free
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if need(mid * step, batch) <= free else (low, mid - 1)
        fits = (
            f"the largest --input-res that fits at --batch {config.batch_size} is about {low * step}"
            if low
            else "no input size fits at this batch"
        )
    raise HGBenchError(
        f"{spec.label} at input {res}x{res}, batch {batch} per process, needs about {gib(need(res, batch))} "
        f"(weights, gradients and optimiser {gib(weights)}; the batch's activations "
        f"{gib(need(res, batch) - weights)}), more than the {gib(free)} free on {device}: {fits}"
    )


def check_tag(tag: str | None) -> None:
    """A tag is part of record and checkpoint folder names, so it is a short plain word, as a variant's name is.

    Raises:
        HGBenchError: a tag with a separator, ``..``, a space or another character a file name should not hold.
    """
    if tag and not NAME_PATTERN.fullmatch(tag):
        raise HGBenchError(
            f"--tag {tag!r} must be 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(it is part of file names)"
        )


def check_inside(path: Path, root: Path, flag: str) -> None:
    """Refuse to write `path` unless it lies inside `root` once links are resolved (a name built from user input
    must never lead out of the folder the user chose).

    Raises:
        HGBenchError: `path` leads out of `root`.
    """
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop on the way: not provably inside
        inside = False
    if not inside:
        raise HGBenchError(f"{path} is not inside {flag} {root}; refusing to write there")


def check_output_dir(path: Path) -> None:
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
        raise HGBenchError(
            f"only {free / 2**20:.0f} MiB free on the disk holding {path}; need at least "
            f"{MIN_FREE_BYTES / 2**20:.0f} MiB for checkpoints and records"
        )


def checkpoint_bytes(params: int, optimizer: str) -> int:
    """About how large a checkpoint of a network of `params` fp32 parameters is: the weights and the optimiser's
    moments (Adam keeps two per parameter, RMSprop without momentum one), and a margin for the rest."""
    moments = 2 if optimizer == "adam" else 1
    return int(params * 4 * (1 + moments) * 1.05) + 2**20


def check_checkpoint_space(plan: RunPlan, params: int) -> None:
    """Fail before training when the checkpoint after epoch 1 could not be written.

    Each checkpoint is written beside the previous one before it replaces it, so one checkpoint's size must be free.
    """
    need = checkpoint_bytes(params, plan.config.optimizer) + MIN_FREE_BYTES
    folder = Path(plan.config.checkpoint_dir)
    free = shutil.disk_usage(folder).free
    if free < need:
        raise HGBenchError(
            f"only {free / 2**20:.0f} MiB free on the disk holding {folder}; a checkpoint of {plan.spec.label} "
            f"needs about {need / 2**20:.0f} MiB: free some space or choose another --checkpoint-dir"
        )


def record_stem(config: RunConfig, spec: CaseSpec) -> str:
    """``case3-asbuilt_seed0_smoke``; a variant by its own name: ``three96_seed0``."""
    form = "-asbuilt" if spec.as_built else ""
    tag = f"_{config.tag}" if config.tag else ""
    head = spec.name if config.variant is not None else f"case{spec.name}"
    return f"{head}{form}_seed{config.seed}{tag}"
