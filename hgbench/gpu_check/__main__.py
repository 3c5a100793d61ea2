"""``python3 -m hgbench.gpu_check [--out DIR] [--only a,b] [--budget name=seconds]``: the whole GPU check, one report.

Exit 0 when every step passed, 1 when any failed, ran out of time or was skipped, 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import sys

from hgbench.gpu_check.catalogue import STEPS, TOTAL_BUDGET_S
from hgbench.gpu_check.runner import run_check


def _budget(text: str) -> tuple[str, float]:
    name, sep, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        value = -1.0
    if not sep or value <= 0 or name not in {s.name for s in STEPS}:
        raise argparse.ArgumentTypeError(
            f"{text!r}: want STEP=SECONDS with STEP one of {', '.join(s.name for s in STEPS)}"
        )
    return name, value


def make_parser() -> argparse.ArgumentParser:
    steps = "\n".join(f"  {s.name:<14} {s.budget_s:>4.0f} s  {s.claim}" for s in STEPS)
    p = argparse.ArgumentParser(
        prog="python -m hgbench.gpu_check",
        description="Measure each GPU claim of the manual (docs/) on this machine, each step within its time budget "
        f"(all within {TOTAL_BUDGET_S:.0f} s), and write results/gpu-check/<machine>/report.json and report.md.",
        epilog=f"steps (budget, the manual's claim):\n{steps}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="results/gpu-check", help="folder of the per-machine reports")
    p.add_argument("--only", default=None, metavar="A,B", help="run only these steps (environment always runs)")
    p.add_argument(
        "--budget", type=_budget, action="append", default=[], metavar="STEP=SECONDS", help="another budget for a step"
    )
    p.add_argument("--total", type=float, default=TOTAL_BUDGET_S, metavar="SECONDS", help="the whole check's limit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    steps = list(STEPS)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - {s.name for s in STEPS}
        if unknown:
            print(f"gpu_check: error: unknown step {sorted(unknown)[0]!r}", file=sys.stderr)
            return 2
        steps = [s for s in STEPS if s.name in wanted or s.name == "environment"]
    report, folder = run_check(steps, args.out, total_budget_s=args.total, budgets=dict(args.budget))
    c = report["counts"]
    counts = f"{c['pass']} pass, {c['fail']} fail, {c['timeout']} timeout, {c['skipped']} skipped"
    print(f"{counts} in {report['seconds']:.0f} s")
    print(f"report: {folder / 'report.md'} and report.json")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
