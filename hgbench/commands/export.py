"""`hgbench export tensorboard|mlflow RESULTS`: existing records (a finished sweep's, another machine's) in TensorBoard
or MLflow, one run per record, with the same figures, names and settings as a run that logged live.

Idempotent: a record exported twice, or exported after its run logged live, adds only what the tool lacks (the
epochs it does not hold, the final figures once), never a second run or a doubled step; MLflow runs are found again
by the record's run id, machine and start (tags ``hgbench.run_id``, ``hgbench.machine``, ``hgbench.started``).
Records hold no pictures: only a run that logged live has them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from hgbench.errors import HGBenchError, one_line

EPILOG = """examples:
  hgbench export tensorboard results/                     every record under results/ into runs/tensorboard/
  tensorboard --logdir runs/tensorboard                   then look at them (http://localhost:6006)
  hgbench export tensorboard 'results/*/*_case3_*.json' --out tb/
  hgbench export mlflow results/ --uri http://127.0.0.1:5000
  wandb sync --sync-tensorboard runs/tensorboard/MACHINE/RUN
                                                          a run's event folder into Weights & Biases
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="existing records into TensorBoard or MLflow (one run per record, idempotent)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tools = p.add_subparsers(dest="tool", metavar="TOOL", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    tb = tools.add_parser("tensorboard", help="an event folder per record", description=__doc__, formatter_class=raw)
    tb.add_argument("results", nargs="+", metavar="RESULTS", help="record files, folders or quoted globs")
    tb.add_argument(
        "--out",
        default=str(Path("runs") / "tensorboard"),
        metavar="DIR",
        help="the folder of the event folders (default runs/tensorboard, where hgbench run writes them)",
    )
    tb.set_defaults(func=cmd_export)
    ml = tools.add_parser("mlflow", help="an MLflow run per record", description=__doc__, formatter_class=raw)
    ml.add_argument("results", nargs="+", metavar="RESULTS", help="record files, folders or quoted globs")
    ml.add_argument("--uri", default=None, help="the tracking server (default: MLFLOW_TRACKING_URI)")
    ml.add_argument("--experiment", default="hgbench", metavar="NAME", help="the MLflow experiment (default hgbench)")
    ml.set_defaults(func=cmd_export)


def _records(sources: list[str]) -> list[tuple[Path, dict]]:
    """Every valid record the sources name; each one skipped said on stderr.

    Raises:
        HGBenchError: the sources hold no record at all.
    """
    from hgbench.run.results import expand_sources, read_record

    files, missing = expand_sources(sources)
    for source in missing:
        print(f"hgbench: warning: {source}: no such file, folder or matching pattern", file=sys.stderr)
    found = []
    for path in files:
        record, reason = read_record(path)
        if record is None:
            print(f"hgbench: warning: {path}: skipped, {reason}", file=sys.stderr)
            continue
        found.append((path, record))
    if not found:
        raise HGBenchError(f"no run records in {' '.join(sources)}; `hgbench run` writes them under results/")
    return found


def _tracker_factory(args: argparse.Namespace) -> tuple[Callable, str]:
    """A function making one tracker per record, and where they go (for the lines said)."""
    if args.tool == "tensorboard":
        from hgbench.tracking.tensorboard_log import TensorBoardTracker, available

        missing = available()
        if missing:
            raise HGBenchError(f"export tensorboard: {missing}")
        return (lambda: TensorBoardTracker(args.out)), args.out
    from hgbench.tracking.mlflow_log import MlflowTracker, available, shown_uri

    missing = available()
    if missing:
        raise HGBenchError(f"export mlflow: {missing}")
    uri = args.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise HGBenchError("export mlflow: give the tracking server: --uri URI (or set MLFLOW_TRACKING_URI)")
    if not args.experiment.strip():
        raise HGBenchError("export mlflow: --experiment must not be empty")
    return (lambda: MlflowTracker(uri, args.experiment)), f"{shown_uri(uri)} (experiment {args.experiment})"


def cmd_export(args: argparse.Namespace) -> int:
    from hgbench.tracking.mlflow_log import END_STATUS

    records = _records(args.results)
    make, where = _tracker_factory(args)
    failed = 0
    for path, record in records:
        tracker = make()
        try:
            tracker.open(record)
            tracker.log_final(record)
            if record.get("status") in END_STATUS:  # a run still training keeps its MLflow run open
                tracker.close(str(record["status"]))
        except Exception as exc:  # noqa: BLE001 - one record's failure (a server gone, a full disk) is said, not fatal
            failed += 1
            print(f"hgbench: error: {path}: not exported ({type(exc).__name__}: {one_line(exc)})", file=sys.stderr)
            continue
        finally:
            if args.tool == "tensorboard":
                tracker.close("finished")  # the event file closed whatever happened
        added = ", ".join(tracker.added) or "nothing new"
        print(f"hgbench: {path} -> {_target(tracker)}: {added}", flush=True)
    print(f"hgbench: exported {len(records) - failed} of {len(records)} records to {where}", flush=True)
    return 1 if failed else 0


def _target(tracker) -> str:
    described = tracker.describe()
    return described.get("dir") or f"MLflow run {described.get('mlflow_run_id')}"
