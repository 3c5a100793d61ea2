"""`RunConfig`: every hyperparameter of a run, with the study's defaults (docs/protocol.md); the cache root."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hgbench.errors import HGBenchError

# Keys that change what a run computes; two runs agreeing on these are the same experiment (resume, sweep skip).
# Device, workers, output paths and progress display do not change the numbers (on the same machine).
RUN_IDENTITY_KEYS: tuple[str, ...] = (
    "case",
    "as_built",
    "epochs",
    "batch_size",
    "test_batch_size",
    "optimizer",
    "lr",
    "lr_milestones",
    "lr_gamma",
    "input_res",
    "sigma",
    "amp",
    "channels_last",
    "compile",
    "seed",
    "limit_train",
    "limit_val",
    "flip_test",
    "world_size",
    "synthetic_people",
    "decode",
    "init_from_sha256",
)

# Keys added to RunConfig after records were first written, with the value every older record implicitly ran with;
# `hgbench.run.results.read_record` fills them in, so old and new records compare (sweep skip, table settings).
# A key added with a null default enters the run identity only when set (`run_identity`), so adding it changed the
# identity of no earlier run.
ADDED_KEYS: dict[str, object] = {"decode": "workers", "variant": None, "init_from": None, "init_from_sha256": None}

# Learning rate per optimiser when none is given: Adam as in the study's example command, RMSprop as in the reference
# hourglass training code.
DEFAULT_LR: dict[str, float] = {"adam": 5e-4, "rmsprop": 2.5e-4}

DEFAULT_SYNTHETIC_PEOPLE = 600  # people in the synthetic dataset a run uses without --data-dir


@dataclass
class RunConfig:
    """Hyperparameters and switches of one `hgbench run` (all plain values: it is stored in every record)."""

    case: str = "1"  # registry id, or a variant's name (then `variant` holds its spec)
    as_built: bool = False  # the study's code as it ran instead of the case as described
    epochs: int = 50
    batch_size: int = 6  # global training batch (split across DDP ranks)
    test_batch_size: int = 6  # validation / inference batch
    optimizer: str = "adam"  # adam | rmsprop
    lr: float = DEFAULT_LR["adam"]  # see DEFAULT_LR for rmsprop's
    lr_milestones: list[int] = field(default_factory=lambda: [150, 175, 200])  # step schedule (epochs)
    lr_gamma: float = 0.1
    input_res: int = 256  # square input side; heatmaps are input/4
    sigma: float = 1.0  # Gaussian sigma of the target heatmaps, in heatmap pixels
    amp: bool = False  # bf16 autocast
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    fast: bool = False  # the best mode for the device (sets amp / channels_last / compile / decode)
    decode: str = "auto"  # where JPEGs are decoded and cropped: workers | device (batched, nvjpeg on CUDA) | auto
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 2  # DataLoader worker processes
    data_dir: str | None = None  # real MPII directory; None = the synthetic default
    synthetic_people: int = DEFAULT_SYNTHETIC_PEOPLE  # size of the synthetic default dataset
    skip_bad_images: bool = False
    limit_train: int | None = None  # first N training people only
    limit_val: int | None = None  # first N validation people only
    flip_test: bool = True  # the final inference pass also runs with flip test
    world_size: int = 1  # DDP processes (filled in by the runner)
    out: str = "results"  # where run records go
    checkpoint_dir: str = "runs"  # where checkpoints go
    tag: str = ""  # free label, part of the record's file name
    variant: dict | None = None  # a variant file's full CaseSpec (`CaseSpec.to_dict`); None: the registry's `case`
    init_from: str | None = None  # weights training starts from (--init-from: hgbench, anibali or pytorch-pose files)
    init_from_sha256: str | None = None  # their SHA-256, filled in when the run is planned (part of its identity)
    # The share of one GPU the sweep's engine gave the run (`sweep --gpus-per-run 0.5`); below 1 the record says the
    # GPU was shared (results.contention.shared_gpu). Not part of the identity: it changes how far to trust the
    # times, not what is measured.
    gpu_share: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """The subset of the config that defines the experiment."""
        d = self.to_dict()
        return {k: d[k] for k in RUN_IDENTITY_KEYS}


def check_settings(config: RunConfig) -> None:
    """Refuse settings no run can use, by the flag that sets them, before anything is written or started.

    The network-dependent checks (input size, batch across processes) are `hgbench.run.plan.validate_config`'s.

    Raises:
        HGBenchError: the first bad setting, e.g. ``--workers must be 0 or more, got -1``.
    """
    problems = (
        (config.epochs < 1, f"--epochs must be at least 1, got {config.epochs}"),
        (config.batch_size < 2, f"--batch must be at least 2 (BatchNorm needs two samples), got {config.batch_size}"),
        (config.test_batch_size < 1, f"--test-batch must be at least 1, got {config.test_batch_size}"),
        (config.workers < 0, f"--workers must be 0 or more, got {config.workers}"),
        (config.seed < 0, f"--seed must be 0 or more, got {config.seed}"),
        (not 0 <= config.lr < float("inf"), f"--lr must be a finite number, 0 or more, got {config.lr}"),
        (not 0 < config.sigma < float("inf"), f"sigma must be a positive number, got {config.sigma}"),
        (
            config.data_dir is None and config.synthetic_people < 2,
            f"--synthetic must be at least 2 (one person per split), got {config.synthetic_people}",
        ),
        (
            config.limit_train is not None and config.limit_train < 1,
            f"--limit-train must be at least 1, got {config.limit_train}",
        ),
        (
            config.limit_val is not None and config.limit_val < 1,
            f"--limit-val must be at least 1, got {config.limit_val}",
        ),
        (not 0 < config.gpu_share <= 1, f"--gpus-per-run must be above 0 and at most 1, got {config.gpu_share}"),
    )
    for bad, message in problems:
        if bad:
            raise HGBenchError(message)


def cache_root() -> Path:
    """Where hgbench caches what it generates or measures once (synthetic datasets, model costs).

    ``$HGBENCH_CACHE_DIR``, else ``~/.cache/hgbench``.
    """
    return Path(os.environ.get("HGBENCH_CACHE_DIR") or Path.home() / ".cache" / "hgbench").expanduser()


def run_identity(config: Mapping[str, Any], *, spec_fingerprint: str, dataset_fingerprint: str, version: str) -> str:
    """The one definition of "the same run": a short hash of everything that changes what a run measures.

    Resume accepts a checkpoint only of the same identity, and the sweep skips a case only when a finished record of
    the same identity exists (`hgbench.run.results.record_identity` recomputes it from a record). It covers the network
    (the spec's fingerprint), every `RUN_IDENTITY_KEYS` setting (the weights a fine-tuning run starts from by their
    SHA-256, not their path), the data (the dataset's fingerprint: annotation bytes, split and limit, so real MPII
    and the synthetic default never match) and the hgbench version (code that changes the figures bumps it).

    Args:
        config: a `RunConfig.to_dict()` or a record's ``config`` (keys in `ADDED_KEYS` may be missing: old records).
        spec_fingerprint: `CaseSpec.fingerprint()` of the network as built.
        dataset_fingerprint: the record's ``dataset.fingerprint`` (train and val).
        version: hgbench's version.
    """
    settings = {k: config.get(k, ADDED_KEYS.get(k)) for k in RUN_IDENTITY_KEYS}
    unset_later_keys = {k for k, default in ADDED_KEYS.items() if default is None}  # count only when set
    settings = {k: v for k, v in settings.items() if not (v is None and k in unset_later_keys)}
    payload = {"config": settings, "spec": spec_fingerprint, "dataset": dataset_fingerprint, "version": version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
