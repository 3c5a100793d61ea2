"""The checks that run whole processes: a default `hgbench run`, a one-process torchrun job over NCCL, and the
checkout's CUDA tests (`pytest -m cuda`)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile

from hgbench.gpu_check.checks._common import REPO_ROOT, hgbench_run, no_cuda, only_record
from hgbench.gpu_check.protocol import Outcome, StepContext

RUN_MODULE = "hgbench.cli"  # what torchrun starts (tests start their stand-in GPU's launcher instead)


def tiny_run(ctx: StepContext) -> Outcome:
    """A default `hgbench run` (smoke scale) on the GPU: it finishes, with CUDA-event times and NVML telemetry."""
    if skip := no_cuda():
        return skip
    rc, record = hgbench_run(ctx, "tiny_run", ["--case", "1", "--smoke", "--device", "cuda"])
    if record is None:
        return Outcome("fail", f"hgbench run exited with code {rc} and wrote no record")
    epochs = record["results"]["epochs"]
    train = record["results"].get("train") or {}
    telemetry = record["results"].get("telemetry") or {}
    plain = (record["results"].get("inference") or {}).get("plain") or {}
    ctx.update(
        exit_code=rc,
        status=record["status"],
        status_reason=record.get("status_reason"),
        epochs=[
            {k: e.get(k) for k in ("wall_s", "compute_s", "data_wait_s", "device_idle_s", "energy_j")} for e in epochs
        ],
        data_wait_fraction=train.get("data_wait_fraction"),
        energy_j_per_epoch=train.get("energy_j_per_epoch"),
        inference_device_min=plain.get("device_min"),
        telemetry_available=telemetry.get("available"),
        telemetry_reason=telemetry.get("reason"),
    )
    problems = []
    if rc != 0 or record["status"] != "finished":
        problems.append(f"run {record['status']} (exit {rc}): {record.get('status_reason')}")
    if not epochs or any(e.get("device_idle_s") is None for e in epochs) or plain.get("device_min") is None:
        problems.append("no CUDA-event figures in the record")
    if not telemetry.get("available"):
        problems.append(f"no NVML telemetry: {telemetry.get('reason')}")
    energy = train.get("energy_j_per_epoch")
    summary = f"{len(epochs)} epochs, data wait {100 * (train.get('data_wait_fraction') or 0):.1f}%, " + (
        f"{energy:.0f} J/epoch" if energy is not None else "no energy"
    )
    return Outcome("fail" if problems else "pass", "; ".join(problems) or None, summary)


def torchrun_nccl(ctx: StepContext) -> Outcome:
    """`torchrun --nproc_per_node 1 -m hgbench.cli run` on the GPU: NCCL's process group, one finished record.

    One process needs no collective, yet under torchrun it joins its group and all-reduces once
    (`hgbench.train.distributed.init_distributed`): NCCL starts there and says its version (``NCCL_DEBUG=VERSION``).
    """
    if skip := no_cuda():
        return skip
    out = ctx.work / "torchrun_nccl"
    with tempfile.TemporaryDirectory(prefix="gpu-check-ckpt-") as ckpt:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
        command += ["-m", RUN_MODULE, "run", "--case", "hg1", "--smoke", "--device", "cuda", "--quiet"]
        command += ["--out", str(out), "--checkpoint-dir", ckpt]
        env = {**os.environ, "NCCL_DEBUG": "VERSION"}  # NCCL prints its version when it starts
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    sys.stdout.write(proc.stdout + proc.stderr)
    nccl = re.search(r"NCCL version ([\w.+-]+)", proc.stdout + proc.stderr)
    record = only_record(out)
    ctx.update(
        exit_code=proc.returncode,
        nccl_version=nccl[1] if nccl else None,
        status=None if record is None else record["status"],
        world_size=None if record is None else record["config"].get("world_size"),
    )
    if proc.returncode != 0 or record is None or record["status"] != "finished":
        why = "no record" if record is None else f"run {record['status']}: {record.get('status_reason')}"
        return Outcome("fail", f"torchrun exited with code {proc.returncode}; {why}")
    if nccl is None:
        return Outcome("fail", "the run finished but NCCL never started (no 'NCCL version' line)")
    return Outcome("pass", None, f"finished, world size {record['config'].get('world_size')}, NCCL {nccl[1]}")


def cuda_tests(ctx: StepContext) -> Outcome:
    """`pytest -m cuda` over the checkout's tests."""
    if importlib.util.find_spec("pytest") is None:
        return Outcome("skipped", "pytest not installed")
    if not (REPO_ROOT / "tests").is_dir():
        return Outcome("skipped", f"no tests/ beside {REPO_ROOT / 'hgbench'} (run from a checkout)")
    if skip := no_cuda():
        return skip
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-rfE", "-p", "no:cacheprovider"]
    command += ["--continue-on-collection-errors", "tests"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    sys.stdout.write(proc.stdout + proc.stderr)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", proc.stdout)}
    failed = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    ctx.update(exit_code=proc.returncode, counts=counts, failed=failed)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if k != "deselected") or "no summary"
    if proc.returncode != 0:
        return Outcome(
            "fail", f"pytest exited with code {proc.returncode}: {'; '.join(failed[:5]) or summary}", summary
        )
    return Outcome("pass", None, summary)
