"""`hgbench list`: every registered case (or the cases named, variant files too) with its structure, size and cost."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable

from rich import box
from rich.console import Console
from rich.table import Table

from hgbench.models import measure_cost
from hgbench.spec.cases import CaseSpec, get_spec, list_cases
from hgbench.spec.variants import check_input_res, is_variant_file, resolve_case

CSV_LEAD = ("case", "as_built", "params", "params_used", "gflops")


def case_specs(cases: list[str] | None = None, *, input_res: int = 256) -> list[CaseSpec]:
    """The specs `hgbench list` shows: both forms of each study case and each reference model, or of those named
    (ids or variant files; a variant file is one row), or an error naming the first that cannot run at `input_res`."""
    specs = []
    for text in cases or list_cases():
        spec = resolve_case(text)
        check_input_res(text, spec, input_res)  # counting a network at a size it cannot run is a crash, not a row
        if is_variant_file(text):
            specs.append(spec)
        else:
            specs += [spec, get_spec(spec.name, as_built=True)] if spec.name.isdigit() else [spec]
    return specs


def case_rows(*, input_res: int = 256, cases: list[str] | None = None) -> list[dict]:
    """One row per (case, as_built) for cases 1-8 and one (as_built false) per reference model, or for `cases`."""
    rows = []
    for spec in case_specs(cases, input_res=input_res):
        cost = measure_cost(spec, input_res=input_res)
        rows.append(
            {
                "case": spec.name,
                "as_built": spec.as_built,
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


# (header, justify, cell, wide only): the default view fits an 80-column terminal (the description wraps); --wide
# adds the structure columns, for terminals of about 130 columns.
COLUMNS: tuple[tuple[str, str, Callable[[dict], str], bool], ...] = (
    ("case", "left", lambda r: r["case"], False),
    ("form", "left", lambda r: "as built" if r["as_built"] else "described", False),
    ("description", "left", lambda r: r["description"], False),
    ("stacks", "right", lambda r: _stacks(r), False),
    ("feats", "right", lambda r: str(r["feats"]), True),
    ("blocks", "right", lambda r: str(r["blocks"]), True),
    ("depths", "left", lambda r: r["depths"], True),
    ("norm", "left", lambda r: r["norm"], True),
    ("steps", "right", lambda r: str(r["steps"]), True),
    ("params", "right", lambda r: f"{r['params']:,}", False),
    ("used", "right", lambda r: f"{r['params_used']:,}", False),
    ("GFLOPs", "right", lambda r: f"{r['gflops']:.2f}", False),
)
WIDE_WIDTH = 140  # a --wide table is printed this wide at least, so a narrower terminal wraps it instead of cutting


def _stacks(row: dict) -> str:
    """Stacks that run, and (as built) the stacks constructed when they differ: ``6/8``."""
    stacks = str(row["stacks_run"])
    return stacks + (f"/{row['stacks_built']}" if row["stacks_run"] != row["stacks_built"] else "")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list every case with its size and cost", description=__doc__)
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format (default: table)")
    p.add_argument("--input-res", type=int, default=256, help="input side for the GFLOPs column (default: 256)")
    p.add_argument(
        "--case",
        action="append",
        metavar="CASE",
        help="only this case: an id (both forms of 1-8) or a variant file (.toml); repeatable",
    )
    p.add_argument(
        "--wide", action="store_true", help="also feats, blocks, depths, norm and bottleneck steps (about 130 columns)"
    )
    p.set_defaults(func=cmd_list)


def cases_table(rows: list[dict], *, input_res: int, wide: bool) -> Table:
    """The cases as a rich table: the default columns read at 80 columns, `wide` adds the structure."""
    caption = "stacks: run/built where they differ; used: parameters that receive a gradient"
    table = Table(
        title=f"hgbench cases (GFLOPs: forward, 1x3x{input_res}x{input_res})",
        caption=caption,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption_justify="left",
    )
    columns = [c for c in COLUMNS if wide or not c[3]]
    for header, justify, _, _ in columns:
        # Numbers and short codes never wrap; the description is the one column that gives way (folding a long word
        # rather than cutting it).
        if header == "description":
            table.add_column(header, justify=justify, overflow="fold")
        else:
            table.add_column(header, justify=justify, no_wrap=True)
    for r in rows:
        table.add_row(*(cell(r) for _, _, cell, _ in columns))
    return table


def cmd_list(args: argparse.Namespace) -> int:
    rows = case_rows(input_res=args.input_res, cases=args.case)
    if args.format == "csv":
        fields = [*CSV_LEAD, *(k for k in rows[0] if k not in CSV_LEAD)]
        writer = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "as_built": str(r["as_built"]).lower()})
        return 0
    console = Console()
    if args.wide:
        console = Console(width=max(WIDE_WIDTH, console.width))
    console.print(cases_table(rows, input_res=args.input_res, wide=args.wide))
    return 0
