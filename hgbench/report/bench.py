"""The speed-mode tables of `hgbench bench` records (schema hgbench.bench/1): loading, one frame, Markdown.

Each row carries its warm-up seconds beside the timed figures: a compiled mode's minutes of compiling are part of
what the mode costs, and not in its ms/step."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hgbench.files.bounded_read import read_json
from hgbench.report.render import _md_cell
from hgbench.run.results import expand_sources
from hgbench.spec.cases import case_label

# ---------------------------------------------------------------------------------------------- speed-mode records
BENCH_SCHEMA = "hgbench.bench/1"
BENCH_COLUMNS = (
    "case",
    "as_built",
    "device",
    "batch",
    "input_res",
    "mode",
    "settings",
    "phase",
    "status",
    "ms_per_step",
    "images_per_s",
    "speedup_vs_eager",
    "tflops",
    "pct_conv_peak",
    "peak_memory_mib",
    "warmup_s",  # the untimed warm-up: minutes where a mode compiles
    "record",
)


def load_bench_records(sources: Iterable[str | Path]) -> tuple[list[tuple[Path, dict]], list[str]]:
    """`hgbench bench` records (schema hgbench.bench/1) among files, folders (recursive) and globs; others skipped."""
    files, missing = expand_sources(sources)
    warnings = [f"{m}: no such file, folder or matching pattern" for m in missing]
    found = []
    for path in sorted(files):
        try:  # a regular file, bounded in size and depth: never a hang, never a RecursionError
            doc = read_json(path)
        except OSError as exc:
            warnings.append(f"{path}: skipped, unreadable ({exc.strerror or exc})")
            continue
        except ValueError as exc:
            warnings.append(f"{path}: skipped, not readable JSON ({exc})")
            continue
        if isinstance(doc, dict) and doc.get("schema") == BENCH_SCHEMA:
            found.append((Path(path), doc))
    return found, warnings


def bench_table(records: Sequence[tuple[Path, dict]]) -> pd.DataFrame:
    """One row per (record, mode, phase): ms/step (median, device clock), images/s, speed-up over eager, TFLOP/s."""
    rows = []
    for path, rec in records:
        cfg, info = rec.get("config", {}), rec.get("machine_info", {})
        device = info.get("gpu_name") or f"CPU: {info.get('cpu', '?')}"
        results = rec.get("results", {})
        for mode, res in results.items():
            for phase in ("train", "infer"):
                stats = res.get(phase) or {}
                eager = (results.get("eager") or {}).get(phase) or {}
                speedup = None
                if stats.get("images_per_s") and eager.get("images_per_s"):
                    speedup = stats["images_per_s"] / eager["images_per_s"]
                rows.append(
                    {
                        "case": rec.get("spec", {}).get("name", cfg.get("case")),
                        "as_built": cfg.get("as_built"),
                        "device": device,
                        "batch": cfg.get("batch_size"),
                        "input_res": cfg.get("input_res"),
                        "mode": mode,
                        "settings": res.get("label"),
                        "phase": phase,
                        "status": "ok" if res.get("status") == "ok" else f"{res.get('status')}: {res.get('reason')}",
                        "ms_per_step": stats.get("ms_per_step_median"),
                        "images_per_s": stats.get("images_per_s"),
                        "speedup_vs_eager": speedup,
                        "tflops": stats.get("tflops"),
                        "pct_conv_peak": stats.get("pct_conv_peak"),
                        "peak_memory_mib": stats.get("peak_memory_mib"),
                        "warmup_s": stats.get("warmup_s"),
                        "record": Path(path).stem,
                    }
                )
    return pd.DataFrame(rows, columns=list(BENCH_COLUMNS))


def bench_markdown(df: pd.DataFrame) -> str:
    """The speed-mode table as Markdown (— where a figure was not measured)."""

    def cell(v: Any, fmt: str) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = [
        "| case | device | batch | input | mode | phase | ms/step | images/s | x eager | TFLOP/s | % conv peak "
        "| peak MiB | warm-up s | status |",
        "|:---|:---|---:|---:|:---|:---|---:|---:|---:|---:|---:|---:|---:|:---|",
    ]
    for _, r in df.iterrows():
        case = case_label(str(r["case"]), r["as_built"], short=True)
        lines.append(
            f"| {case} | {_md_cell(str(r['device']))} | {r['batch']} | {r['input_res']} | {r['mode']} | {r['phase']} "
            f"| {cell(r['ms_per_step'], '.1f')} | {cell(r['images_per_s'], '.1f')} "
            f"| {cell(r['speedup_vs_eager'], '.2f')} "
            f"| {cell(r['tflops'], '.3f')} | {cell(r['pct_conv_peak'], '.1f')} | {cell(r['peak_memory_mib'], '.0f')} "
            f"| {cell(r['warmup_s'], '.1f')} "
            f"| {_md_cell(str(r['status']))} |"
        )
    return "\n".join(lines) + "\n"
