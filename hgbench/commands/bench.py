"""`hgbench bench`: time training steps and inference batches of one case per speed mode, on synthetic tensors."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager
from typing import Any

import torch

from hgbench.errors import HGBenchError
from hgbench.measure.environment import device_label
from hgbench.run.bench import MODES, BenchConfig, parse_modes, run_bench, write_record
from hgbench.run.progress import slow_work
from hgbench.spec.cases import case_label
from hgbench.spec.variants import check_input_res, resolve_case

EPILOG = """modes (each adds to the previous where the device supports it):
  eager          fp32, contiguous: the study's setting (its convolutions are TF32 on an
                 Ampere-or-newer GPU, torch's default: labelled tf32 there)
  channels_last  + NHWC memory format
  bf16           + bf16 autocast (skipped where the device has no native bf16)
  compile        + torch.compile (its warm-up compiles: minutes per model on the CPU; bench says
                 so first, then shows a spinner, or in a log a line every 30 s, until it is done)
  cudagraphs     + CUDA graphs via torch.compile(mode="reduce-overhead") (CUDA only)

examples:
  hgbench bench --case 1 --batch 6                      every mode of case 1 at the study's batch size
  hgbench bench --case 1 --batch 32 --modes eager,compile
  hgbench bench --case hg1 --input-res 64 --batch 2 --steps 2 --device cpu --modes eager,channels_last
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="time training and inference of one case in each speed mode (synthetic tensors, no data loading)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--case", required=True, help="case id (1-8, hg1, hg2, hg8) or a variant file (.toml)")
    p.add_argument("--as-built", action="store_true", help="the case as the study's code built it")
    p.add_argument("--batch", type=int, default=6, help="images per step (default: 6, the study's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode and phase (default: 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3; compile modes need more)")
    p.add_argument("--input-res", type=int, default=256, help="square input side (default: 256)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    p.add_argument("--modes", default="all", help=f"comma-separated, from: {','.join(MODES)} (default: all)")
    p.add_argument("--out", default="results/bench", help="records go to OUT/<machine_id>/ (default: results/bench)")
    p.add_argument("--no-save", action="store_true", help="print only; write no record")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(func=cmd_bench)


def _check_args(args: argparse.Namespace) -> torch.device:
    for name in ("batch", "steps"):
        if getattr(args, name) < 1:
            raise HGBenchError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise HGBenchError(f"--warmup must be 0 or more, got {args.warmup}")
    try:
        dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as exc:
        raise HGBenchError(f"unknown device {args.device!r}: use cpu or cuda[:i]") from exc
    if dev.type not in ("cpu", "cuda"):
        raise HGBenchError(f"unsupported device {args.device!r}: use cpu or cuda[:i]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HGBenchError("--device cuda requested but no CUDA device is available")
    return dev


def cmd_bench(args: argparse.Namespace) -> int:
    modes = parse_modes(args.modes)
    dev = _check_args(args)
    spec = resolve_case(args.case, as_built=args.as_built)
    check_input_res(args.case, spec, args.input_res)
    config = BenchConfig(
        case=spec.name,
        as_built=spec.as_built,
        batch_size=args.batch,
        steps=args.steps,
        warmup=args.warmup,
        input_res=args.input_res,
        device=str(dev),
        modes=tuple(modes),
    )
    record = run_bench(spec, config, **_progress(quiet=args.format == "json"))
    path = None if args.no_save else write_record(record, args.out)
    if args.format == "json":
        print(json.dumps(record, indent=2))
    else:
        print_table(record)
        if path is not None:
            print(f"record: {path}")
    return 0 if any(r["status"] == "ok" for r in record["results"].values()) else 1


def _progress(*, quiet: bool) -> dict[str, Any]:
    """run_bench's progress lines and heartbeat: to stderr (stdout holds the table or the JSON); none for JSON."""
    if quiet:
        return {}

    def say(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    def heartbeat(what: str) -> AbstractContextManager[None]:
        return slow_work(what, say, spinner=sys.stderr.isatty())

    return {"progress": say, "heartbeat": heartbeat}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


TABLE_WIDTH = 120  # the table is laid out for this many columns at least (a narrower terminal wraps it)


def bench_rich_table(record: dict) -> tuple[Any, list[str]]:
    """A bench record as a rich table (one row per mode and phase, speed-up over eager of the same phase) and the
    notes that go below it; laid out to read in full at `TABLE_WIDTH` columns."""
    from rich import box
    from rich.table import Table

    cfg, mi, peak = record["config"], record["machine_info"], record["device_peak"]["conv_tflops"]
    where = device_label(mi, threads=True)
    name = case_label(record["spec"]["name"], record["spec"]["as_built"])
    peak_note = f"; % peak: of the measured bf16 conv peak, {peak:.1f} TFLOP/s" if peak else ""
    table = Table(
        title=f"hgbench bench: {name}, batch {cfg['batch_size']}, {cfg['input_res']}x{cfg['input_res']}, "
        f"{cfg['steps']} timed steps, on {where}",
        caption=f"ms/step: median on the device clock; {record['model']['gflops']:.2f} forward GFLOPs/image, "
        f"a training step counts 3x forward{peak_note}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        caption_justify="left",
    )
    cols = ["mode", "settings", "phase", "ms/step", "IQR ms", "images/s", "x eager", "TFLOP/s"]
    cols += ["% peak"] if peak else []
    cols += ["peak MiB", "warm-up s"]
    for c in cols:
        # Settings wrap at their "+" (a long label must not push the figures out of the table); the rest never wrap.
        if c == "settings":
            table.add_column(c, min_width=len("channels_last"), overflow="fold")
        else:
            table.add_column(c, justify="left" if c in ("mode", "phase") else "right", no_wrap=True)
    eager = record["results"].get("eager") or {}
    notes = []
    for mode, r in record["results"].items():
        settings = (r["label"] or "").replace("+", " + ")
        if r["status"] != "ok":
            # The reason goes below the table: a long line squeezed into one cell would wrap the whole table.
            table.add_row(
                mode, settings, r["status"], *[""] * (len(cols) - 3), style="dim" if r["status"] == "skipped" else "red"
            )
            notes.append(f"{mode}: {r['status']}: {r['reason']}")
            continue
        if r.get("cudagraph_skips"):
            notes.append(f"{mode}: inductor skipped CUDA graphs {r['cudagraph_skips']} time(s); see the log for why")
        for phase in ("train", "infer"):
            s = r[phase]
            base = (eager.get(phase) or {}).get("images_per_s") if eager.get("status") == "ok" else None
            row = [
                mode if phase == "train" else "",
                settings if phase == "train" else "",
                phase,
                _fmt(s["ms_per_step_median"], ".1f"),
                _fmt(s["iqr"] * 1e3, ".1f"),
                _fmt(s["images_per_s"], ".1f"),
                _fmt(s["images_per_s"] / base if base else None, ".2f"),
                _fmt(s["tflops"], ".3f"),
            ]
            row += [_fmt(s["pct_conv_peak"], ".0f")] if peak else []
            row += [_fmt(s["peak_memory_mib"], ".0f"), _fmt(s["warmup_s"], ".1f")]
            table.add_row(*row)
    return table, notes


def print_table(record: dict) -> None:
    """Print a bench record's table and its notes."""
    from rich.console import Console

    table, notes = bench_rich_table(record)
    console = Console(width=max(TABLE_WIDTH, Console().width))
    console.print(table)
    for line in notes:
        console.print(f"  {line}", highlight=False, markup=False)
