"""`hgbench list`: every registered case with its structure, size and forward cost."""

from __future__ import annotations

import argparse
import csv
import sys

from hgbench.cases import get_spec, list_cases
from hgbench.models import measure_cost

CSV_LEAD = ("case", "as_built", "params", "params_used", "gflops")


def case_rows(*, input_res: int = 256) -> list[dict]:
    """One row per (case, as_built) for cases 1-8 and one (as_built false) per reference model."""
    rows = []
    for name in list_cases():
        for as_built in (False, True) if name.isdigit() else (False,):
            spec = get_spec(name, as_built=as_built)
            cost = measure_cost(spec, input_res=input_res)
            rows.append(
                {
                    "case": spec.name,
                    "as_built": as_built,
                    "params": cost.params,
                    "params_used": cost.params_used,
                    "gflops": round(cost.gflops, 2),
                    "description": spec.description,
                    "stacks_built": spec.num_stacks,
                    "stacks_run": spec.stacks_run,
                    "feats": spec.num_feats,
                    "blocks": spec.num_blocks,
                    "depths": "-".join(map(str, spec.depths[: spec.stacks_run])),
                    "norm": spec.norm,
                    "steps": spec.bottleneck_steps,
                    "input_res": input_res,
                }
            )
    return rows


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list every case with its size and cost", description=__doc__)
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default: table)")
    p.add_argument("--input-res", type=int, default=256, help="input side for the GFLOPs column (default: 256)")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    rows = case_rows(input_res=args.input_res)
    if args.format == "csv":
        fields = [*CSV_LEAD, *(k for k in rows[0] if k not in CSV_LEAD)]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "as_built": str(r["as_built"]).lower()})
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"hgbench cases (GFLOPs: forward, 1x3x{args.input_res}x{args.input_res})")
    for col, justify in [
        ("case", "left"), ("form", "left"), ("description", "left"), ("stacks", "right"), ("feats", "right"),
        ("blocks", "right"), ("depths", "left"), ("norm", "left"), ("steps", "right"), ("params", "right"),
        ("params used", "right"), ("GFLOPs", "right"),
    ]:  # fmt: skip
        table.add_column(col, justify=justify)
    for r in rows:
        stacks = str(r["stacks_run"])
        if r["stacks_run"] != r["stacks_built"]:
            stacks += f"/{r['stacks_built']}"  # as built: stacks that run / stacks constructed
        table.add_row(
            r["case"], "as built" if r["as_built"] else "described", r["description"], stacks, str(r["feats"]),
            str(r["blocks"]), r["depths"], r["norm"], str(r["steps"]), f"{r['params']:,}", f"{r['params_used']:,}",
            f"{r['gflops']:.2f}",
        )  # fmt: skip
    Console().print(table)
    return 0
