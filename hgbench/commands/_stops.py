"""What `hgbench run` prints when a run stops: what happened, where its record is, and what to do next.

The runner writes the record on every stop (finished, failed, interrupted); the command finds it afterwards (the
newest record of this case and seed written since the run started) and says, in one line on stdout, the record's own
reason and path and the next command: `--resume` for an interrupted run with checkpointed epochs, `hgbench table`
for finished ones. The error itself stays the one line on stderr that the CLI prints.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hgbench.spec.cases import case_label
from hgbench.spec.config import RunConfig

CLOCK_SLACK_S = 2.0  # a record's mtime may round below the start time on coarse filesystems


def is_main_process() -> bool:
    """Rank 0 under torchrun (or no torchrun): the one process that speaks for the run."""
    return os.environ.get("RANK", "0") == "0"


def latest_record(cfg: RunConfig, since: float) -> tuple[Path, dict] | None:
    """The newest record of `cfg`'s case, form and seed written into `cfg.out` since `since` (time.time())."""
    from hgbench.run.results import read_record

    out = Path(cfg.out)
    if not out.is_dir():
        return None
    found = []
    for path in out.glob("*/*.json"):
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if mtime >= since - CLOCK_SLACK_S:
            found.append((mtime, path))
    for _, path in sorted(found, reverse=True):
        record, _ = read_record(path)
        config = (record or {}).get("config") or {}
        if record and (config.get("case"), config.get("as_built"), config.get("seed")) == (
            cfg.case,
            cfg.as_built,
            cfg.seed,
        ):
            return path, record
    return None


def stop_line(cfg: RunConfig, since: float) -> str | None:
    """The line that says how a stopped (failed or interrupted) run ended, its record and the next step."""
    found = latest_record(cfg, since)
    if found is None:
        return None
    path, record = found
    label = case_label(cfg.case, cfg.as_built)
    status, reason = record.get("status"), record.get("status_reason") or ""
    line = f"hgbench: {label} {status}: {reason}; record {path}"
    checkpoint = record.get("checkpoint")
    if status == "interrupted" and record["results"]["epochs"] and checkpoint and Path(checkpoint).is_file():
        line += f"; continue with: {resume_command(cfg.case, path, record['config'].get('world_size', 1))}"
    elif status == "interrupted":
        line += "; no epoch was checkpointed: run it again to start over"
    return line


def resume_command(case: str, path: Path, world_size: int) -> str:
    """The command that continues an interrupted run: under torchrun, a torchrun job of as many processes (the run's
    identity counts them; one process alone would refuse the checkpoint)."""
    run = f"hgbench run --case {case} --resume {path}"
    if world_size <= 1:
        return run
    nodes, per_node = os.environ.get("GROUP_WORLD_SIZE", "1"), os.environ.get("LOCAL_WORLD_SIZE", str(world_size))
    if nodes == "1":
        return f"torchrun --standalone --nproc_per_node {per_node} -m hgbench.cli {run.removeprefix('hgbench ')}"
    each = f"{per_node} process{'es' if per_node != '1' else ''} each"
    return f"torchrun <this job's own flags: {nodes} nodes, {each}> -m hgbench.cli {run.removeprefix('hgbench ')}"


def say_stop(cfg: RunConfig, since: float) -> None:
    if is_main_process() and (line := stop_line(cfg, since)) is not None:
        print(line, flush=True)


def next_step(out: str, tensorboard: Path | None = None) -> str:
    """What to do after runs finished: see them beside the others (and in TensorBoard, where they were written)."""
    results = "" if out == "results" else f" --results {out}"
    steps = [f"`hgbench table{results}` shows them beside your other runs", f"`hgbench plot{results}` draws them"]
    if tensorboard is not None:
        steps.append(f"`tensorboard --logdir {tensorboard}` shows their curves and pictures")
    return "hgbench: next: " + ", ".join(steps)


def now() -> float:
    return time.time()
