"""`hgbench sweep`: many runs (cases x seeds x forms, or a plan file) spread over an engine: local, Ray or Slurm.

Every run is the `hgbench run` of the same options and writes its own record, atomically, into --out (on a cluster:
a folder on the filesystem every worker and the driver share). Calling the same sweep again skips the finished runs,
resumes the interrupted ones from their checkpoints and re-runs those whose worker died.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from hgbench.commands._args import at_least
from hgbench.commands.run import add_run_options, add_tracking_options, case_ids, config_from_args, tracking_from_args
from hgbench.errors import HGBenchError
from hgbench.run.failures import Terminated, sigterm_as_interrupt
from hgbench.spec.config import RunConfig, check_settings

if TYPE_CHECKING:
    from hgbench.sweep.driver import SweepRun, Workers
    from hgbench.sweep.engines import Engine
    from hgbench.sweep.plan import Option

DESCRIPTION = """Many runs (cases x seeds x forms, or a plan file) over local, Ray or Slurm.

Each run is the `hgbench run` of the same options and writes its own record,
atomically, into --out: on a cluster, a folder every worker and this driver
share. The same sweep again skips finished runs, resumes interrupted ones from
their checkpoints and re-runs those whose worker died (--retries).
"""

EPILOG = """examples:
  hgbench sweep --cases all --seeds 0,1,2 --as-built both --epochs 50 --dry-run
      the study's grid x 3 seeds x both forms: the runs and what they ask for
  hgbench sweep --cases 1,3 --seeds 0,1 --smoke
      one run after another on this machine
  hgbench sweep --cases all --engine ray --gpus-per-run 0.5
      on this machine's GPUs, two runs sharing each GPU
  hgbench sweep --plan study.toml --engine ray --address auto
      on a running Ray cluster
  hgbench sweep --plan study.toml --engine slurm --slurm-partition gpu
      one Slurm job per run (a job array)
  hgbench sweep --plan study.toml --engine slurm --slurm-time 240 --slurm-mem 32G --slurm-extra account=lab
      the same, with the time, memory and account the cluster wants
"""

# Flags that belong to one engine: given with another engine they would be silently ignored, so they are an error.
ENGINE_FLAGS: dict[str, tuple[str, ...]] = {
    "ray": ("address", "gpus_per_run"),
    "slurm": (
        "slurm_partition",
        "slurm_time",
        "slurm_gpus_per_run",
        "slurm_gpus_as",
        "slurm_mem",
        "slurm_extra",
        "slurm_array_parallelism",
        "slurm_local",
    ),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="many runs (cases x seeds x forms, or a plan file) on this machine, Ray or Slurm",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_runs_options(p.add_argument_group("the runs"))
    add_run_options(p.add_argument_group("options of every run (as hgbench run's; a plan's [[run]] overrides them)"))
    add_tracking_options(p.add_argument_group("where every run's figures go beside its record (as hgbench run's)"))
    engine = p.add_argument_group("engine")
    _add_engine_options(engine)
    _add_slurm_options(engine)
    p.set_defaults(func=cmd_sweep, _parser=p)


def _add_runs_options(runs: argparse._ArgumentGroup) -> None:
    """Which runs: the grid (cases x seeds x forms) or a plan file."""
    runs.add_argument("--cases", default=None, metavar="LIST", help="case ids, comma-separated, or 'all' (1-8)")
    runs.add_argument("--seeds", default=None, metavar="LIST", help="seeds, comma-separated (default 0)")
    runs.add_argument(
        "--as-built",
        dest="forms",
        choices=("no", "yes", "both"),
        default="no",
        help="the cases as described (no, default), as the study's code built them (yes), or both",
    )
    runs.add_argument(
        "--plan",
        default=None,
        metavar="FILE",
        help="a TOML plan: [defaults] and one [[run]] table per run (case, seed, other options), instead of the grid",
    )


def _add_engine_options(engine: argparse._ArgumentGroup) -> None:
    """The engine, and what every engine (or Ray alone) takes."""
    engine.add_argument("--engine", choices=("local", "ray", "slurm"), default="local", help="(default local)")
    engine.add_argument(
        "--retries", type=at_least(0), default=1, metavar="N", help="re-runs of a run whose worker died (default 1)"
    )
    engine.add_argument("--quiet", action="store_true", help="a line when a run ends, no live table or per-epoch lines")
    engine.add_argument(
        "--force",
        action="store_true",
        help="run again the runs already finished with the same config (a new record each; the old ones are kept)",
    )
    engine.add_argument("--dry-run", action="store_true", help="print the runs and what they would ask for; run none")
    engine.add_argument("--address", default=None, help="ray: join this cluster (e.g. auto); default: a local Ray")
    engine.add_argument(
        "--gpus-per-run",
        type=float,
        default=None,
        metavar="G",
        help="ray: GPUs per run, fractions share one (default 1 where the cluster has GPUs, 0 with --device cpu)",
    )
    engine.add_argument(
        "--cpus-per-run",
        type=at_least(1),
        default=None,
        metavar="C",
        help="CPUs each run asks for and the torch threads it uses (default: ray, slurm 1; local every core)",
    )


def _add_slurm_options(engine: argparse._ArgumentGroup) -> None:
    """What a Slurm job asks for (`--engine slurm` only: `ENGINE_FLAGS`)."""
    engine.add_argument("--slurm-partition", default=None, help="slurm: the partition")
    engine.add_argument(
        "--slurm-time", type=at_least(1), default=None, metavar="MIN", help="slurm: minutes per job (default 1440)"
    )
    engine.add_argument(
        "--slurm-gpus-per-run", type=at_least(0), default=None, metavar="G", help="slurm: GPUs per job (default 1)"
    )
    engine.add_argument(
        "--slurm-gpus-as",
        choices=("gpus-per-node", "gres"),
        default=None,
        help="slurm: ask for the GPUs as --gpus-per-node=G (default) or --gres=gpu:G (clusters without the former)",
    )
    engine.add_argument(
        "--slurm-mem", default=None, metavar="SIZE", help="slurm: memory per job, as sbatch's --mem (16G, 500M)"
    )
    engine.add_argument(
        "--slurm-extra",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="slurm: another sbatch option for every job (account=lab, qos=high, constraint=a100); repeatable",
    )
    engine.add_argument(
        "--slurm-array-parallelism",
        type=at_least(1),
        default=None,
        metavar="N",
        help="slurm: jobs of the array running at once (default 16)",
    )
    engine.add_argument(
        "--slurm-local", action="store_true", help="slurm: submitit's local executor on this machine (no cluster)"
    )


def run_options() -> dict[str, Option]:
    """The settings a plan file accepts beside case, seed and as_built: `hgbench run`'s options, by dest name."""
    from hgbench.sweep.plan import Option

    probe = argparse.ArgumentParser(add_help=False)
    add_run_options(probe)
    options = {}
    for action in probe._actions:
        if action.nargs == 0:  # store_true
            options[action.dest] = Option(bool)
        else:
            choices = tuple(action.choices) if action.choices else None
            options[action.dest] = Option(action.type or str, choices)
    return options


def sweep_configs(args: argparse.Namespace) -> list[tuple[RunConfig, bool]]:
    """(RunConfig, keep its checkpoint) of every run, from the grid flags or the plan file."""
    from hgbench.sweep.plan import FORMS, grid, parse_list, read_plan

    parser = args._parser
    options = run_options()
    given = {k: v for k, v in vars(args).items() if k in options and v != parser.get_default(k)}
    if args.plan:
        defaults, own = read_plan(args.plan, options)
        base = {**vars(args), "as_built": False, "seed": None}
        settings = [{**base, **defaults, **given, **run} for run in own]
    else:
        cases = [case for text in parse_list(args.cases or "", str, "--cases") for case in case_ids(text)]
        seeds = parse_list(args.seeds, int, "--seeds") if args.seeds else [None]
        settings = [{**vars(args), **run} for run in grid(cases, seeds, FORMS[args.forms])]
    configs = []
    for setting in settings:
        ns = argparse.Namespace(**setting)
        for case in case_ids(str(ns.case)):
            config = config_from_args(ns, case)
            try:
                check_settings(config)  # every run's before any starts: a bad value is not a failed run later
            except HGBenchError as exc:
                where = f"{args.plan}: " if args.plan else ""
                raise HGBenchError(f"{where}run of case {case}, seed {config.seed}: {exc}") from None
            configs.append((config, ns.keep_checkpoints or not ns.smoke))
    return configs


def same_networks(configs: list[tuple[RunConfig, bool]]) -> tuple[list[tuple[RunConfig, bool]], list[str]]:
    """The runs less the as-built forms that build the same network as their described form in the same sweep (cases
    1, 2, 6 and 7: the study's code matches its description), and a line saying which were dropped."""
    from hgbench.spec.variants import spec_of_config

    def network(cfg: RunConfig) -> str:
        spec = spec_of_config(cfg).to_dict()
        return json.dumps({k: v for k, v in spec.items() if k not in _NOT_NETWORK}, sort_keys=True)

    def described_form(cfg: RunConfig) -> str:
        return json.dumps({**cfg.to_dict(), "as_built": False}, sort_keys=True)

    described = {described_form(c): c for c, _ in configs if not c.as_built}
    kept, twins = [], []
    for cfg, keep in configs:
        twin = described.get(described_form(cfg)) if cfg.as_built else None
        if twin is not None and network(twin) == network(cfg):
            twins.append(cfg.case)
            continue
        kept.append((cfg, keep))
    if not twins:
        return kept, []
    return kept, [
        f"hgbench: as built, case(s) {', '.join(dict.fromkeys(twins))} build the same network as described: each "
        "runs once, in its described form"
    ]


_NOT_NETWORK = frozenset({"name", "description", "expected_params", "as_built"})


def _check_flags(args: argparse.Namespace) -> None:
    parser = args._parser
    if args.plan and (args.cases or args.seeds or args.forms != "no"):
        parser.error("--plan lists the runs itself; drop --cases, --seeds and --as-built (or put them in the plan)")
    if not args.plan and not args.cases:
        parser.error("give the runs: --cases LIST (with --seeds, --as-built) or --plan FILE")
    for engine, flags in ENGINE_FLAGS.items():
        wrong = [f for f in flags if args.engine != engine and getattr(args, f) not in (None, False)]
        if wrong:
            parser.error(f"--{wrong[0].replace('_', '-')} is for --engine {engine}")


def make_engine(args: argparse.Namespace) -> Engine:
    """The engine the flags name (its package imported: a one-line error names the extra to install)."""
    from hgbench.sweep.engines import LocalEngine, RayEngine
    from hgbench.sweep.submitit_engine import SubmititEngine

    if args.engine == "ray":
        gpus = 0.0 if args.gpus_per_run is None and args.device == "cpu" else args.gpus_per_run
        return RayEngine(address=args.address, gpus=gpus, cpus=args.cpus_per_run or 1)
    if args.engine == "slurm":
        from hgbench.sweep.slurm import parse_extra, parse_memory

        gpus = args.slurm_gpus_per_run
        if gpus is None:
            gpus = 0 if args.device == "cpu" else 1
        return SubmititEngine(
            folder=Path(args.checkpoint_dir) / "submitit",
            local=args.slurm_local,
            partition=args.slurm_partition,
            time_min=args.slurm_time or 1440,
            gpus=gpus,
            cpus=args.cpus_per_run or 1,
            array_parallelism=args.slurm_array_parallelism or 16,
            memory=parse_memory(args.slurm_mem),
            gpus_as=args.slurm_gpus_as or "gpus-per-node",
            extra=parse_extra(args.slurm_extra),
        )
    return LocalEngine(threads=args.cpus_per_run)


def workers_of(args: argparse.Namespace) -> Workers:
    """Where the engine runs the sweep's runs: on this machine (local, a local Ray, --slurm-local) or elsewhere, and on
    which device `--device auto` resolves there, by the GPUs each run asks for (`make_engine`'s defaults); None
    where only the cluster knows (Ray asked for no GPU count: 1 where the cluster has GPUs)."""
    from hgbench.sweep.driver import Workers

    if args.engine == "local" or (args.engine == "slurm" and args.slurm_local):
        return Workers(None, here=True)
    if args.engine == "slurm":
        gpus = args.slurm_gpus_per_run if args.slurm_gpus_per_run is not None else 0 if args.device == "cpu" else 1
    else:
        gpus = args.gpus_per_run if args.gpus_per_run is not None else 0 if args.device == "cpu" else None
    device = None if gpus is None else "cuda" if gpus > 0 else "cpu"
    return Workers(device, here=args.engine == "ray" and args.address is None)


def cmd_sweep(args: argparse.Namespace) -> int:
    from hgbench.sweep import view

    _check_flags(args)
    tracking = tracking_from_args(args)
    engine = make_engine(args)  # first: a missing package is said before any planning
    runs, twins = _plan_sweep(args)
    for run in runs:
        run.tracking = tracking.to_dict()  # every worker logs where the sweep's flags say
    todo = [run for run in runs if run.status == "queued"]
    logs = Path(args.checkpoint_dir) / "sweep-logs"
    print(f"hgbench: sweep of {len(runs)} runs, {len(todo)} to run; {engine.describe()}; logs in {logs}", flush=True)
    for note in twins:
        print(note, flush=True)
    if args.dry_run:
        for i, run in enumerate(runs, start=1):
            print(f"  [{i}/{len(runs)}] {_plan_line(run)}")
        from hgbench.sweep.estimate import cost_line

        print(cost_line(runs), flush=True)
        return 0
    interrupted, terminated = _drive(args, engine, runs)
    for line in view.summary(runs):
        print(line, flush=True)
    table = view.results_table(runs)
    if table:
        sys.stdout.write("\n" + table)
    if interrupted and terminated.signalled:
        print("hgbench: stopped by SIGTERM; the same sweep again resumes its runs", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM
    if interrupted:
        raise KeyboardInterrupt
    return _left_undone(runs)


def _plan_sweep(args: argparse.Namespace) -> tuple[list[SweepRun], list[str]]:
    """The sweep's runs, each queued or skipped (finished already, unless --force), and the notes on twin networks."""
    from hgbench.sweep import driver

    configs, twins = same_networks(sweep_configs(args))
    machine = None
    if args.engine == "local":
        from hgbench.measure.environment import collect_environment, machine_id
        from hgbench.run.plan import resolve_device

        # As `hgbench run --case all`: a run finished on another machine is not this machine's measurement.
        machine = machine_id(collect_environment(resolve_device(args.device)))
    if args.engine == "ray" and args.gpus_per_run is not None and 0 < args.gpus_per_run < 1:
        # Runs sharing a GPU say so in their records: their board-wide NVML figures and times are not their own.
        configs = [(replace(config, gpu_share=args.gpus_per_run), keep) for config, keep in configs]
    runs = driver.plan_runs(configs, machine_id=machine, workers=workers_of(args))
    if args.force:  # measure the finished runs again: new records, the old ones kept
        for run in runs:
            run.force = True
            if run.status == "skipped":
                run.status, run.record, run.reason = "queued", None, None
    return runs, twins


def _drive(args: argparse.Namespace, engine: Engine, runs: list[SweepRun]) -> tuple[bool, Terminated]:
    """Run the sweep on `engine` behind the live view; whether it was interrupted, and whether by SIGTERM (its active
    runs then marked cancelled: the same sweep again resumes them)."""
    from hgbench.sweep import driver, view

    # Not left to submitit: this driver is no job of submitit's, and a second SIGTERM must not cut its cancel short.
    with sigterm_as_interrupt(once=True, leave_to_submitit=False) as terminated:
        try:
            try:
                engine.start()
                terminated.arm()  # again: ray.init installs its own SIGTERM handler (a bare exit)
                with view.make_view(runs, quiet=args.quiet) as shown:
                    for run in runs:
                        if run.status == "skipped":
                            shown.changed(
                                run,
                                f"skipped: already finished with this config ({run.record}; --force measures it again)",
                            )
                    interrupted = driver.drive(runs, engine, retries=args.retries, view=shown)
            finally:
                engine.close()
        except KeyboardInterrupt:
            if not terminated.signalled:
                raise
            interrupted = True  # before the runs went out (drive cancels those it submitted itself)
            for run in runs:
                if run.status in driver.ACTIVE:
                    run.status, run.reason = "cancelled", "cancelled by SIGTERM; the same sweep again resumes it"
    return interrupted, terminated


def _left_undone(runs: list[SweepRun]) -> int:
    """The exit status of a sweep that ran to its end: 1, each said on stderr, when runs failed or other processes
    were training some; else 0."""
    status = 0
    failed = [run.label for run in runs if run.status == "failed"]
    if failed:
        print(f"hgbench: {len(failed)} of {len(runs)} runs failed: {'; '.join(failed)}", file=sys.stderr, flush=True)
        status = 1
    busy = [run.label for run in runs if run.status == "busy"]
    if busy:
        print(
            f"hgbench: {len(busy)} of {len(runs)} runs are being trained by other processes (left to them): "
            f"{'; '.join(busy)}",
            file=sys.stderr,
            flush=True,
        )
        status = 1
    return status


def _plan_line(run: SweepRun) -> str:
    cfg = run.config
    what = (
        f"{run.label}: {cfg.epochs} epochs, input {cfg.input_res}, batch {cfg.batch_size}, lr {cfg.lr:g}, "
        f"device {cfg.device}, results {cfg.out}"
    )
    if run.status == "skipped":
        return f"{what}; skip: already finished ({run.record}; --force measures it again)"
    return what
