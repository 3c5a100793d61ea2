"""`hgbench run`: train and evaluate one case, or the whole sweep (`--case all`), writing one record per run."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from hgbench.commands import _stops as stops
from hgbench.commands._args import positive
from hgbench.data.device_decode import DECODE_MODES
from hgbench.errors import HGBenchError
from hgbench.files.claim import RunBusy
from hgbench.spec.cases import STUDY_CASES, case_label
from hgbench.spec.config import DEFAULT_LR, RunConfig, check_settings
from hgbench.spec.variants import check_input_res, is_variant_file, resolve_case, run_case_fields, spec_of_config
from hgbench.train.distributed import GROUP_TIMEOUT

if TYPE_CHECKING:
    from hgbench.tracking import TrackingOptions

# `--smoke`: the whole sweep at a scale a 2-core CPU finishes in minutes (make run). 128 px is the smallest input
# every case trains at (case 5's instance norm needs the innermost level larger than 1x1).
SMOKE = {
    "epochs": 2,
    "input_res": 128,
    "limit_train": 24,
    "limit_val": 12,
    "synthetic_people": 120,
    "batch_size": 6,
    "test_batch_size": 6,
    "workers": 1,
    "tag": "smoke",
}

EPILOG = """examples:
  hgbench run --case 3 --epochs 50                  case 3 as described, the study's recipe, synthetic data
  hgbench run --case 3 --as-built --data-dir ~/mpii the study's own code for case 3, on real MPII
  hgbench run --case all --smoke                    every case at CPU smoke scale (what `make run` does)
  hgbench run --case 1 --fast --device cuda         bf16 + channels_last + torch.compile + GPU JPEG decoding
  hgbench run --case variants/three96.toml          a variant declared in a file
  hgbench run --case hg2 --init-from hg2.pth        fine-tune from its weights
  torchrun --nproc_per_node 4 -m hgbench.cli run --case 1 --batch 24     DDP on 4 GPUs
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = RunConfig()
    p = sub.add_parser(
        "run",
        help="train, validate and time a case; write its record",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--case", required=True, help="case id (1-8, hg1, hg2, hg8), a variant file (.toml), or 'all' for cases 1-8"
    )
    p.add_argument("--as-built", action="store_true", help="build the case as the study's code did")
    p.add_argument("--seed", type=int, default=None, help=f"random seed (default {d.seed})")
    add_run_options(p)
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN",
        help="continue an interrupted run from its last epoch: the run these flags describe, else the "
        "latest interrupted run of the case that agrees with every flag given; or RUN, a record "
        "(.json) or checkpoint (last.pt) path",
    )
    p.add_argument("--quiet", action="store_true", help="one log line per epoch, no progress bar")
    add_tracking_options(p)
    p.add_argument(
        "--dist-timeout",
        type=positive,
        default=None,
        metavar="MIN",
        help=f"under torchrun: minutes a process waits for the others at a collective before it takes them for lost "
        f"and stops, its run interrupted (default {GROUP_TIMEOUT.total_seconds() / 60:g}: rank 0 alone runs the final "
        "inference pass while the others wait)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --case all: run again the cases already finished with this config (a new record; the old one "
        "is kept)",
    )
    p.set_defaults(func=cmd_run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options that describe a run beside its case, form and seed: `hgbench run`'s and `hgbench sweep`'s."""
    d = RunConfig()
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {d.epochs})")
    p.add_argument("--data-dir", default=None, help="real MPII directory (images/ + annotations); default: synthetic")
    p.add_argument(
        "--synthetic",
        type=int,
        default=None,
        metavar="N",
        help=f"people in the synthetic default dataset (default {d.synthetic_people})",
    )
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--batch", type=int, default=None, help=f"global training batch (default {d.batch_size})")
    p.add_argument("--test-batch", type=int, default=None, help=f"inference batch (default {d.test_batch_size})")
    p.add_argument("--optim", choices=("adam", "rmsprop"), default=None, help="optimizer (default adam)")
    lr_help = f"learning rate (default {DEFAULT_LR['adam']:g} adam, {DEFAULT_LR['rmsprop']:g} rmsprop)"
    p.add_argument("--lr", type=float, default=None, help=lr_help)
    p.add_argument("--input-res", type=int, default=None, help=f"input side in pixels (default {d.input_res})")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--fast", action="store_true", help="the best mode for the device (see hgbench bench)")
    p.add_argument(
        "--decode",
        choices=("auto", *DECODE_MODES),
        default=None,
        help="decode and crop JPEGs in the DataLoader workers or in batches on the device (nvjpeg on "
        "CUDA); auto (default): device with --fast on CUDA, else workers",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="FILE",
        help="start from these weights (fine-tuning): an hgbench checkpoint, anibali's released hg1/hg2/hg8 (a file "
        "or a name: anibali:hg2, fetched once into torch.hub's cache) or a pytorch-pose checkpoint; the record keeps "
        "the path and SHA-256",
    )
    p.add_argument("--workers", type=int, default=None, help=f"DataLoader workers (default {d.workers})")
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="first N training people only")
    p.add_argument("--limit-val", type=int, default=None, metavar="N", help="first N validation people only")
    p.add_argument("--no-flip-test", action="store_true", help="skip the flip-test inference pass")
    p.add_argument("--skip-bad-images", action="store_true", help="skip corrupt images (counted in the record)")
    smoke = ", ".join(f"{k}={v}" for k, v in SMOKE.items())
    p.add_argument("--smoke", action="store_true", help=f"CPU smoke scale: {smoke}")
    p.add_argument("--out", default=d.out, help="results folder (default results/)")
    p.add_argument("--checkpoint-dir", default=d.checkpoint_dir, help="checkpoint folder (default runs/)")
    p.add_argument("--tag", default=None, help="label added to the record's file name")
    p.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep each run's checkpoint after it finished (default: kept, except with --smoke)",
    )


def add_tracking_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where each run's figures go beside its record (hgbench.tracking): `hgbench run`'s and `hgbench sweep`'s."""
    p.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="write each run's TensorBoard event folder under DIR (default: on, under <checkpoint-dir>/tensorboard; "
        "view with tensorboard --logdir DIR)",
    )
    p.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard event files")
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help="also log each run to MLflow at URI (a tracking server, http://host:5000); without URI, "
        "MLFLOW_TRACKING_URI, else a local ./mlruns folder; needs pip install 'hgbench[mlflow]'",
    )
    p.add_argument(
        "--mlflow-experiment", default="hgbench", metavar="NAME", help="the MLflow experiment (default hgbench)"
    )


def tracking_from_args(args: argparse.Namespace) -> TrackingOptions:
    """The trackers the flags ask for, checked (a package they need missing: one line) before anything runs."""
    from hgbench.tracking import TrackingOptions, check_options

    if args.tensorboard is not None and args.no_tensorboard:
        raise HGBenchError("--tensorboard DIR and --no-tensorboard contradict each other; give one")
    if args.mlflow is None and args.mlflow_experiment != "hgbench":
        raise HGBenchError("--mlflow-experiment needs --mlflow")
    options = TrackingOptions(
        tensorboard=not args.no_tensorboard,
        tensorboard_dir=args.tensorboard or None,
        tensorboard_asked=args.tensorboard is not None,
        mlflow=args.mlflow is not None,
        mlflow_uri=args.mlflow or None,
        mlflow_experiment=args.mlflow_experiment,
    )
    check_options(options)
    return options


def config_from_args(args: argparse.Namespace, case: str) -> RunConfig:
    """The RunConfig the flags describe: defaults, then --smoke, then explicit flags."""
    cfg = RunConfig(
        **run_case_fields(resolve_case(case, as_built=args.as_built)),
        device=args.device,
        optimizer=args.optim or "adam",
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        fast=args.fast,
        data_dir=args.data_dir,
        flip_test=not args.no_flip_test,
        skip_bad_images=args.skip_bad_images,
        out=args.out,
        checkpoint_dir=args.checkpoint_dir,
    )
    if args.optim == "rmsprop":
        cfg = replace(cfg, lr=DEFAULT_LR["rmsprop"])
    if args.smoke:
        cfg = replace(cfg, **SMOKE)
    explicit = {
        "epochs": args.epochs,
        "batch_size": args.batch,
        "test_batch_size": args.test_batch,
        "lr": args.lr,
        "input_res": args.input_res,
        "workers": args.workers,
        "limit_train": args.limit_train,
        "limit_val": args.limit_val,
        "synthetic_people": args.synthetic,
        "tag": args.tag,
        "decode": args.decode,
        "seed": args.seed,
        "init_from": args.init_from,
    }
    return replace(cfg, **{k: v for k, v in explicit.items() if v is not None})


def explicit_settings(args: argparse.Namespace) -> dict[str, object]:
    """The settings (RunConfig keys and values) the command line named, as opposed to defaults."""
    named = {
        "epochs": args.epochs,
        "batch_size": args.batch,
        "test_batch_size": args.test_batch,
        "lr": args.lr,
        "input_res": args.input_res,
        "limit_train": args.limit_train,
        "limit_val": args.limit_val,
        "synthetic_people": args.synthetic,
        "decode": args.decode,
        "seed": args.seed,
        "optimizer": args.optim,
        "data_dir": args.data_dir,
        "tag": args.tag,
        "init_from": args.init_from,
    }
    named = {k: v for k, v in named.items() if v is not None}
    named.update({k: True for k in ("amp", "channels_last", "compile", "fast") if getattr(args, k)})
    if args.no_flip_test:
        named["flip_test"] = False
    if args.smoke:
        named = {**{k: v for k, v in SMOKE.items() if k != "workers"}, **named}
    return named


def _config_of(path: Path, args: argparse.Namespace) -> RunConfig:
    """The RunConfig of the run a record (.json) or checkpoint file belongs to, to run on this machine's device."""
    from hgbench.train.checkpoint import load_checkpoint

    if path.suffix == ".json":
        from hgbench.run import results as store

        record, problem = store.read_record(path)
        if record is None:
            raise HGBenchError(f"--resume {path}: {problem}")
        stored = record["config"]
    else:
        stored = load_checkpoint(path).config
    fields = set(RunConfig.__dataclass_fields__)
    cfg = RunConfig(**{k: v for k, v in stored.items() if k in fields})
    overrides = {"device": args.device, "workers": args.workers}
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def resume_target(args: argparse.Namespace, cfg: RunConfig, machine: str) -> RunConfig:
    """The run `--resume` continues, said aloud; never a fresh run that the flags only happen to describe.

    The newest interrupted run of the case on this machine whose settings agree with every flag given (so the run the
    flags describe exactly, when there is one), found from the records, which name their checkpoints. A run that
    another process is training now is not interrupted, whatever its record says.

    Raises:
        RunBusy: no interrupted run fits, and a run that fits is being trained by another process (named).
        HGBenchError: no interrupted run fits; the message lists the interrupted runs of the case and how to resume
            each.
    """
    from hgbench.run import results as store

    if isinstance(args.resume, str):
        return _config_of(Path(args.resume), args)
    label = case_label(cfg.case, cfg.as_built)
    runs = store.interrupted_runs(cfg.out, cfg.case, cfg.as_built, machine_id=machine)
    given = {k: json.loads(json.dumps(v)) for k, v in explicit_settings(args).items()}
    if cfg.variant is not None:  # a variant's name alone may stand for two files' networks
        given["variant"] = json.loads(json.dumps(cfg.variant))

    def fit(record: dict) -> bool:
        return all(record["config"].get(k) == v for k, v in given.items())

    fits = [(p, r) for p, r in runs if fit(r)]
    if fits:
        path, record = fits[0]
        stored = record["config"]
        done = len(record["results"]["epochs"])
        print(
            f"hgbench: resuming the latest interrupted run of {label}: {path} (epoch {done} of {stored['epochs']}, "
            f"input {stored['input_res']}, batch {stored['batch_size']})",
            flush=True,
        )
        return _config_of(path, args)
    training = store.runs_in_training(cfg.out, cfg.case, cfg.as_built, machine_id=machine)
    busy = [(p, owner) for p, r, owner in training if fit(r)]
    if busy:
        path, owner = busy[0]
        raise RunBusy(
            f"--resume: {path} is not interrupted: its run is being trained by {owner.describe()}; nothing was started"
        )
    if not runs:
        raise HGBenchError(
            f"--resume: no interrupted run of {label} with a checkpoint in {cfg.out}/{machine}; "
            "run it without --resume to start one"
        )
    listed = "; ".join(
        f"{p} (epoch {len(r['results']['epochs'])} of {r['config']['epochs']}): hgbench run --case "
        f"{cfg.case} --resume {p}"
        for p, r in runs[:5]
    )
    raise HGBenchError(
        f"--resume: no interrupted run of {label} agrees with the flags given; interrupted runs: {listed}"
    )


def case_ids(text: str) -> list[str]:
    """The case ids a `--case` value names: 'all' (cases 1-8) or one case; the one place a case name is resolved."""
    if text.lower() == "all":
        return list(STUDY_CASES)
    spec = resolve_case(text)  # a CaseError line for an unknown id or a bad variant file
    return [text if is_variant_file(text) else spec.name]  # a variant's settings read the file (config_from_args)


def _cases_checked(args: argparse.Namespace) -> list[str]:
    """The cases `hgbench run` trains, their settings checked once before any runs; a published ``--init-from`` name
    made its cached file."""
    if getattr(args, "init_from", None):
        from hgbench.models.published import resolve

        # A published name (anibali:hg2) becomes its cached file here, so the config records a path and its SHA-256.
        args.init_from = str(resolve(args.init_from).path)
    if isinstance(args.resume, str):  # --resume RUN takes its case from the run, never from a file again
        return [args.case]
    cases = case_ids(args.case)
    cfg = config_from_args(args, cases[0])
    check_settings(cfg)  # once, not as the same error for every case of --case all
    if len(cases) == 1:
        check_input_res(cases[0], spec_of_config(cfg), cfg.input_res)  # before anything runs, naming the file
    return cases


def _case_config(args: argparse.Namespace, case: str, cases: list[str], machine: str | None) -> RunConfig:
    """One case's config: the flags', or with ``--resume`` of one case the run it continues."""
    if isinstance(args.resume, str) and len(cases) == 1:
        return _config_of(Path(args.resume), args)  # the run's own settings (a variant's spec included)
    cfg = config_from_args(args, case)
    if args.resume and len(cases) == 1:
        cfg = resume_target(args, cfg, machine)
    return cfg


def _finished_already(case: str, cfg: RunConfig, machine: str | None) -> bool:
    """Whether this machine already finished the run `cfg` describes (said when so: ``--case all`` skips it)."""
    from hgbench.run import results as store
    from hgbench.run.plan import planned_identity

    done = store.find_finished(cfg.out, planned_identity(cfg), machine_id=machine)
    if done is not None:
        print(
            f"hgbench: {case_label(case, cfg.as_built)}: already finished with this config ({done}); "
            "skipping (--force measures it again)",
            flush=True,
        )
    return done is not None


def cmd_run(args: argparse.Namespace) -> int:
    from hgbench.run.plan import resolve_device
    from hgbench.run.recorder import AlreadyFinished
    from hgbench.run.runner import run

    cases = _cases_checked(args)
    tracking = tracking_from_args(args)
    failed = []
    finished_any = False
    machine = None
    if len(cases) > 1 or args.resume:
        from hgbench.measure.environment import collect_environment, machine_id

        # A run finished on another machine is not this machine's measurement, nor its run to resume.
        machine = machine_id(collect_environment(resolve_device(args.device)))
    keep = args.keep_checkpoints or not args.smoke
    for case in cases:
        cfg = _case_config(args, case, cases, machine)
        if len(cases) > 1 and not args.force and _finished_already(case, cfg, machine):
            continue
        started = stops.now()
        try:
            outcome = run(
                cfg,
                resume=bool(args.resume),
                must_resume=bool(args.resume) and len(cases) == 1,  # --case all --resume also starts the others
                quiet=args.quiet,
                keep_checkpoint=keep,
                tracking=tracking,
                dist_timeout=timedelta(minutes=args.dist_timeout) if args.dist_timeout else None,
            )
        except AlreadyFinished as exc:
            if len(cases) == 1:
                raise
            print(f"hgbench: {exc}; skipping", flush=True)  # finished with its record in another results folder
            continue
        except HGBenchError as exc:
            stops.say_stop(cfg, started)  # the record (if the run got that far), its reason and the next step
            if len(cases) == 1:
                raise
            print(f"hgbench: error: case {case}: {exc}", flush=True)
            failed.append(case)
            continue
        except KeyboardInterrupt:
            stops.say_stop(cfg, started)
            raise
        if outcome.status != "finished":
            failed.append(case)
        else:
            finished_any = True
    if finished_any and stops.is_main_process():
        board = tracking.tensorboard_root(args.checkpoint_dir) if tracking.tensorboard else None
        print(stops.next_step(args.out, board if board is not None and board.is_dir() else None), flush=True)
    if failed:
        print(f"hgbench: {len(failed)} of {len(cases)} runs did not finish: cases {', '.join(failed)}", flush=True)
        return 1
    return 0
