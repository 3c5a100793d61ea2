"""`hgbench plot`: a PNG of the runs in results/, one of three kinds.

- frontier (default): validation accuracy against training minutes per epoch, ours beside the published figures.
  One panel per device of our finished runs and one for the study's published points (Quadro RTX 6000): the
  hardware differs, so each panel has its own axes; time axes start at zero so a small speed-up looks small.
  Vertical bars: the accuracy's 95% interval over validation people.
- curves: train loss, validation loss and PCKh per epoch, one line per case, the seeds' min-max as a band.
- time: per case, a stacked bar of a steady epoch's seconds: compute, data wait, device idle (GPU) and the rest.
"""

from __future__ import annotations

import argparse

from hgbench.commands.table import load_or_fail
from hgbench.report import PLOTS, plot_frontier

EXAMPLES = """examples:
  hgbench plot                                 your runs in results/ -> results/frontier.png, with the published panel
  hgbench plot --results results/published --out results/published/frontier.png
                                               README's example figure, from the published records
  hgbench plot --no-reference --out fig.png    our runs only
  hgbench plot --kind curves                   learning curves -> results/curves.png
  hgbench plot --kind time --out time.png      where an epoch's time goes, per case
"""

KINDS: tuple[str, ...] = ("frontier", "curves", "time")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="PNG of the frontier (accuracy against training time), learning curves or where an epoch's time goes",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--results",
        action="append",
        metavar="DIR",
        default=None,
        help="record file, folder or glob; repeatable (default: results, where published/ is read only when named)",
    )
    p.add_argument("--kind", choices=KINDS, default="frontier", help="which plot (default: frontier)")
    p.add_argument("--out", default=None, help="PNG to write (default: results/<kind>.png)")
    p.add_argument(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="frontier: draw the published panel (default: on)",
    )
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    summaries = load_or_fail(args.results or ["results"])
    target = args.out or f"results/{args.kind}.png"
    if args.kind == "frontier":
        out = plot_frontier(summaries, target, reference=args.reference)
    else:
        out = PLOTS[args.kind](summaries, target)
    print(f"wrote {out}")
    return 0
