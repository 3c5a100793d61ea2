"""The `hgbench` command line: argparse subcommands, each delegated to its module in `hgbench.commands`.

User errors (`HGBenchError`, and OS errors such as a full disk) print one line and exit non-zero; anything else
is a bug and keeps its traceback (set HGBENCH_DEBUG=1 to see tracebacks for user errors too).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from hgbench._version import __version__
from hgbench.errors import HGBenchError

# The order `hgbench --help` lists subcommands in; any other module in hgbench.commands follows alphabetically.
COMMAND_ORDER: tuple[str, ...] = (
    "list",
    "run",
    "sweep",
    "evaluate",
    "table",
    "compare",
    "plot",
    "bench",
    "synth",
    "data",
    "export",
)


def command_modules() -> list[str]:
    """Names of the subcommand modules in `hgbench.commands`, in help order."""
    import hgbench.commands as pkg

    found = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    return sorted(found, key=lambda n: (COMMAND_ORDER.index(n) if n in COMMAND_ORDER else len(COMMAND_ORDER), n))


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


def make_parser() -> argparse.ArgumentParser:
    """Build the parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="hgbench",
        description="Benchmark Stacked Hourglass variants: accuracy against training and inference time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hgbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in command_modules():
        module = importlib.import_module(f"hgbench.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hgbench` console script."""
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
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
