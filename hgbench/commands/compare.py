"""`hgbench compare A B`: two runs or two sets of runs side by side, with deltas and Welch's t-test p-values.

A and B are each a record file, a results folder or a glob (quote it). Each metric gets A, B, B - A and the relative
change; where both sides hold 2+ seeds, Welch's t-test (scipy) says whether the PCKh and min/epoch differences stand
out from the seed-to-seed noise (p is blank otherwise, and the last column says why).
"""

from __future__ import annotations

import argparse
import sys

from hgbench.commands.table import load_or_fail, require_sources
from hgbench.report import compare_rich_table, compare_runs, to_csv

EXAMPLES = """examples:
  hgbench compare results/cpu-pt2.14.1/0001_case1_seed0.json results/cpu-pt2.14.1/0002_case8_seed0.json
  hgbench compare 'results/*/*_case1_seed*.json' 'results/*/*_case8_seed*.json'   seeds vs seeds, with p-values
  hgbench compare results/cpu-pt2.14.1 results/nvidia-h100-80gb-hbm3-pt2.14.1-cu13.0   two machines, per case
  hgbench compare A.json B.json --format csv
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="two runs or result folders side by side, with deltas and p-values",
                       description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("a", metavar="A", help="baseline: record file, folder or glob")
    p.add_argument("b", metavar="B", help="compared with A (delta = B - A): record file, folder or glob")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    require_sources([args.a, args.b])  # both sides checked before any warning is printed
    df = compare_runs(load_or_fail([args.a]), load_or_fail([args.b]))
    if args.format == "csv":
        sys.stdout.write(to_csv(df))
        return 0
    from rich.console import Console

    console = Console()
    console.print(compare_rich_table(df))
    for note in df.attrs.get("notes", []):
        console.print(note, highlight=False)
    return 0
