"""`hgbench compare A B`: two runs or two sets of runs side by side, with deltas, Welch's t-test and a paired bootstrap.

A and B are each a record file, a results folder or a glob (quote it). Each metric gets A, B, B - A and the relative
change; where both sides hold 2+ seeds, Welch's t-test (scipy) says whether the PCKh and min/epoch differences stand
out from the spread within each side (p is blank otherwise, and the caption says why). The "PCKh@0.5 Mean, paired"
row resamples the validation people both sides scored (one seed a side is enough): B - A with its 95% interval and
p-value, "no detectable difference" when the interval covers 0, or why it is not available (other people scored,
records without per-person PCKh).

A timing p-value says less than an accuracy one: the runs of one machine share its load, so on a shared or busy machine
two seeds of one config can give a low p for min/epoch with no difference in the code. A timing is called different
only with p < 0.05 and a change of 5% or more, and the output says so beside the test.
"""

from __future__ import annotations

import argparse
import sys

from hgbench.commands.table import load_or_fail, require_sources
from hgbench.report import compare_rich_table, compare_runs, compare_summary, to_csv

EXAMPLES = """examples:
  # two of the published example's runs: case 1 against case 8
  hgbench compare results/published/cpu-amd-epyc-2c-pt2.14.1/0001_case1_seed0_smoke.json \\
                  results/published/cpu-amd-epyc-2c-pt2.14.1/0008_case8_seed0_smoke.json
  # your seeds of case 1 against your seeds of case 8, with p-values
  hgbench compare 'results/*/*_case1_seed*.json' 'results/*/*_case8_seed*.json'
  # the published example against your machine's runs, a line per case first, then case by case
  # (the glob takes every CPU machine's folder; `hgbench table --machines` names each)
  hgbench compare results/published 'results/cpu-*'
  hgbench compare A.json B.json --format csv
"""

# compare takes its sources as arguments (it has no --results option).
HINT = "A and B are record files, folders or quoted globs; `hgbench run` writes records under results/"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="two runs or result folders side by side, with deltas and p-values",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", metavar="A", help="baseline: record file, folder or glob")
    p.add_argument("b", metavar="B", help="compared with A (delta = B - A): record file, folder or glob")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    require_sources([args.a, args.b], hint=HINT)  # both sides checked before any warning is printed
    df = compare_runs(load_or_fail([args.a], hint=HINT), load_or_fail([args.b], hint=HINT))
    if args.format == "csv":
        sys.stdout.write(to_csv(df))
        return 0
    from rich.console import Console

    console = Console()
    if df["group"].nunique() > 1:  # folder against folder: the gist first, one line per case
        for line in compare_summary(df):
            console.print(line, highlight=False, soft_wrap=True)  # one line a case, however wide
        console.print()
    console.print(compare_rich_table(df))
    for note in df.attrs.get("notes", []):
        console.print(note, highlight=False)
    return 0
