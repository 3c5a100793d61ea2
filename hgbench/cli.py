"""The `hgbench` command line: argparse subcommands, each delegated to its module in `hgbench.commands`.

User errors (`HGBenchError`, OS errors such as a full disk, and a package hgbench depends on that does not import)
print one line and exit non-zero; anything else is a bug and keeps its traceback (set HGBENCH_DEBUG=1 to see
tracebacks for user errors too).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from hgbench._version import __version__
from hgbench.errors import HGBenchError, missing_dependency


@dataclass(frozen=True)
class Command:
    """One subcommand: its module is ``hgbench.commands.<name>``, which has ``add_parser(subparsers)`` (the
    subcommand's arguments, with this same help line) and the function it sets as ``func``."""

    name: str  # what the user types
    help: str  # its line in `hgbench --help`, shown without importing the module


# Every subcommand, in the order `hgbench --help` lists them. A new one is a module in hgbench/commands/ and one line
# here. Only the module of the command being run is imported, so one command's packages (rich for `list`, pandas for
# `table`, OpenCV for `synth`) are never needed by another's (tests/test_cli_lazy.py holds both to that).
COMMANDS: tuple[Command, ...] = (
    Command("list", "list every case with its size and cost"),
    Command("run", "train, validate and time a case; write its record"),
    Command("sweep", "many runs (cases x seeds x forms, or a plan file) on this machine, Ray or Slurm"),
    Command("evaluate", "score predictions (a file or a checkpoint) with the MPII PCKh protocol"),
    Command("table", "comparison table of the runs in results/ (Markdown or CSV)"),
    Command("compare", "two runs or result folders side by side, with deltas and p-values"),
    Command(
        "plot",
        "PNG of the frontier (accuracy against training time), learning curves or where an epoch's time goes",
    ),
    Command("bench", "time training and inference of one case in each speed mode (synthetic tensors, no data loading)"),
    Command("synth", "write a synthetic MPII-format dataset"),
    Command("data", "download, extract and verify a real dataset folder (MPII)"),
    Command("export", "existing records into TensorBoard or MLflow (one run per record, idempotent)"),
)
_HELP = {c.name: c.help for c in COMMANDS}


def command_modules() -> list[str]:
    """The subcommands' names (each its module's in `hgbench.commands`), in help order."""
    return [c.name for c in COMMANDS]


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand `argv` names: its first word that is not an option (the top level's options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


EPILOG = """examples:
  hgbench list                                 every case with its size and cost
  hgbench run --case 3 --epochs 50             train and evaluate case 3 on the synthetic default
  hgbench run --case all --data-dir ~/mpii     the whole sweep on real MPII (finished runs are skipped)
  hgbench sweep --cases all --seeds 0,1,2 --engine ray
                                               cases x seeds spread over a Ray cluster's GPUs
  hgbench data mpii ~/mpii                     download, extract and verify the MPII images
  hgbench evaluate --weights anibali:hg2 --data-dir ~/mpii --reproduce
                                               check the set-up reproduces anibali's published hg2 figures
  hgbench evaluate --predictions preds.mat     score another tool's predictions with the MPII PCKh protocol
  hgbench table --reference                    our measurements beside the published table
  hgbench compare results/a.json results/b.json
"""


def make_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser: with `argv`, only the subcommand it names has its arguments (only its module is imported; the
    others are their names and help lines); without, every subcommand has them (every module imported)."""
    parser = argparse.ArgumentParser(
        prog="hgbench",
        description="Benchmark Stacked Hourglass variants: accuracy against training and inference time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hgbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _command_in(argv) if argv is not None else None
    for name in command_modules():
        if argv is None or name == chosen:
            importlib.import_module(f"hgbench.commands.{name}").add_parser(sub)
        else:
            sub.add_parser(name, help=_HELP[name])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hgbench` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = make_parser(argv).parse_args(argv)  # imports the command's module: its packages must be there
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        missing = missing_dependency(exc)
        if missing is None or os.environ.get("HGBENCH_DEBUG"):
            raise
        print(f"hgbench: error: {missing}", file=sys.stderr)
        return 2
    except HGBenchError as exc:
        if os.environ.get("HGBENCH_DEBUG"):
            raise
        print(f"hgbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # full disk, permissions, vanished files: the user's environment, not a bug
        if os.environ.get("HGBENCH_DEBUG"):
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"hgbench: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hgbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
