"""Runs the GPU checks as subprocesses, each under its own time budget, and writes one report.

Every step runs, whatever the others did: a step that fails is reported with the tail of its output, one that runs
past its budget is stopped (its whole process group: torchrun's workers and DataLoader workers too) and reported
"timeout" with whatever figures it had written so far. The whole check is held to `TOTAL_BUDGET_S` as well, so it
ends in time however the steps behave. A step reports through a JSON file named in ``$HGBENCH_GPU_CHECK_RESULT``
(`hgbench.gpu_check.step`); its output goes to ``logs/<step>.log`` beside the report.

Standard library only (and `hgbench.files.atomic_io` and `hgbench.errors`, stdlib too): the report is written even where
torch or another of hgbench's packages does not import.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hgbench._version import __version__
from hgbench.files.atomic_io import write_bytes_atomic, write_json_atomic
from hgbench.gpu_check.catalogue import TOTAL_BUDGET_S, Step
from hgbench.gpu_check.protocol import RESULT_ENV, WORK_ENV, missing_package_in

SCHEMA = "hgbench.gpu-check/1"
STATUSES = ("pass", "fail", "timeout", "skipped")
KILL_GRACE_S = 2.0  # between SIGTERM and SIGKILL of a step that ran out of time
KILL_WAIT_S = 10.0  # the most a step's SIGKILLed processes are waited for
TAIL_LINES = 40
REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: on PYTHONPATH for every step
# Where torch.compile keeps what it compiled (inductor's graphs, Triton's kernels): a sub-folder of the check's cache.
COMPILE_CACHES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


@dataclass
class StepResult:
    """One step's line of the report."""

    name: str
    claim: str
    status: str  # one of STATUSES
    reason: str | None = None  # one line: why it failed, timed out or was skipped (or a note on a pass)
    summary: str | None = None  # the measured figures in a few words
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    budget_s: float = 0.0  # the budget it ran under
    log: str | None = None  # relative to the report's folder
    output_tail: str | None = None  # last lines of output, on fail and timeout


def _step_env(result: Path, work: Path, cache: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env[RESULT_ENV] = str(result)
    env[WORK_ENV] = str(work)
    env["PYTHONUNBUFFERED"] = "1"  # the log shows how far a step got when it is stopped
    if cache is not None:  # one compile cache for every step, and the check's own: compile seconds start cold
        for variable, folder in COMPILE_CACHES.items():
            env[variable] = str(cache / folder)
    return env


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running (Linux's /proc; a zombie has ended, and an orphan's zombie may
    wait for a parent that never reaps it). False where there is no /proc to ask."""
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return False
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _kill_group(pgid: int) -> None:
    """SIGKILL the step's process group and wait (a bounded while) until none of it runs: a SIGKILL is delivered when
    its target next runs, and a step's workers still computing would skew the next step's figures."""
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    while _group_running(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the step's process group, then SIGKILL what is left after the grace period."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()


def _read_result(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tail(log: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def run_step(
    step: Step, *, logs: Path, work: Path, budget_s: float | None = None, cache: Path | None = None
) -> StepResult:
    """Run one step in a subprocess of its own session, stopped after `budget_s` (default: the step's budget);
    `cache`: the compile cache every step of the check shares (`COMPILE_CACHES`)."""
    budget = step.budget_s if budget_s is None else budget_s
    logs.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = logs / f"{step.name}.log"
    result_path = logs / f"{step.name}.result.json"
    result_path.unlink(missing_ok=True)
    command = list(step.command) if step.command else [sys.executable, "-m", "hgbench.gpu_check.step", step.name]
    base = StepResult(step.name, step.claim, "fail", budget_s=budget, log=str(log.relative_to(logs.parent)))
    t0 = time.monotonic()
    timed_out = False
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_step_env(result_path, work, cache),
                cwd=REPO_ROOT,
                start_new_session=True,  # its own process group: stopping it stops everything it started
            )
        except OSError as exc:
            base.reason = f"could not start {command[0]}: {exc.strerror or exc}"
            return base
        try:
            rc = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
            rc = proc.returncode
        _kill_group(proc.pid)  # workers it left behind would skew the next step's figures
    base.seconds = round(time.monotonic() - t0, 2)
    data = _read_result(result_path)
    base.figures = data.get("figures") or {}
    base.summary = data.get("summary")
    if timed_out:
        base.status = "timeout"
        base.reason = f"ran past its {budget:g} s budget and was stopped; last output: {_last_line(_tail(log, 5))}"
    elif data.get("status") in ("pass", "fail", "skipped"):
        base.status, base.reason = data["status"], data.get("reason")
        if rc != 0 and base.status == "pass":
            base.status, base.reason = "fail", f"reported pass but exited with code {rc}"
    else:
        base.reason = f"exited with code {rc} without a result; last output: {_last_line(_tail(log, 5))}"
    if base.status in ("fail", "timeout"):
        base.output_tail = _tail(log)
        _name_missing_package(base, log)
    return base


def _name_missing_package(result: StepResult, log: Path) -> None:
    """Add to a failed step's reason the package its output says did not import (a process the step started, such
    as torchrun's workers, fails on its own and the step sees only its exit code)."""
    try:
        missing = missing_package_in(log.read_text(errors="replace"))
    except OSError:
        return
    if missing is not None and missing not in (result.reason or ""):
        result.reason = f"{result.reason}; {missing}" if result.reason else missing


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unknown"


def fallback_machine() -> str:
    """The report's folder when no step could name the machine (torch did not import): the host name."""
    return f"unknown-{_slug(socket.gethostname())}"


def _machine_folder(out_root: Path, machine: str | None, staged: tuple[Path, ...]) -> Path:
    """The machine's folder under `out_root`, the staged folders moved into it (replacing an earlier check's)."""
    target = out_root / (machine or fallback_machine())
    target.mkdir(parents=True, exist_ok=True)
    for sub in staged:
        shutil.rmtree(target / sub.name, ignore_errors=True)
        if sub.exists():
            sub.replace(target / sub.name)
    return target


def _report(
    results: list[StepResult], *, machine: str, started: dt.datetime, t0: float, total_budget_s: float
) -> dict[str, Any]:
    """The check's report: every step's result, counted by status, and when and where it ran (finished now)."""
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    return {
        "schema": SCHEMA,
        "hgbench_version": __version__,
        "machine": machine,
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 2),
        "total_budget_s": total_budget_s,
        "python": f"{platform.python_version()} ({sys.executable})",
        "counts": counts,
        "ok": counts["pass"] == len(results),
        "steps": [asdict(r) for r in results],
    }


def run_check(
    steps: Sequence[Step],
    out_root: str | os.PathLike,
    *,
    total_budget_s: float = TOTAL_BUDGET_S,
    budgets: dict[str, float] | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Path]:
    """Run every step in order and write ``<out_root>/<machine>/report.json`` and ``report.md``.

    A step that needs CUDA is skipped once an earlier step reported ``cuda_available: false`` (the environment
    step); the machine's folder name comes from an earlier step's ``machine_id`` figure, else `fallback_machine`.
    Every step gets its own budget; a compile-heavy one (`Step.compiles`) also its share of what the steps before
    it left unspent (`_share_of_spare`). All steps share one compile cache in the staging folder, removed at the end.

    Args:
        steps: the checks, in order.
        out_root: the folder holding one sub-folder per machine (``results/gpu-check``).
        total_budget_s: the whole check's wall-clock limit; a step gets at most what is left of it.
        budgets: per-step budgets that replace the catalogue's (``--budget name=seconds``).
        echo: where the one-line progress goes.

    Returns:
        The report and the folder it was written to.
    """
    out_root = Path(out_root).resolve()  # steps run in the checkout: every path they get is absolute
    out_root.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    deadline = t0 + total_budget_s
    # The machine's name is known only once the environment step ran: logs and work go to a staging folder first.
    # The compile cache stays there and goes with it (hundreds of MB that no report should carry).
    staging = Path(tempfile.mkdtemp(prefix=".gpu-check-", dir=out_root))
    logs, work, cache = staging / "logs", staging / "work", staging / "compile-cache"
    results: list[StepResult] = []
    cuda: bool | None = None
    cuda_reason = "no CUDA device"
    machine: str | None = None
    own = {s.name: (budgets or {}).get(s.name, s.budget_s) for s in steps}
    spare = 0.0  # seconds earlier steps left of their own budgets: the compile-heavy steps' to share
    try:
        for i, step in enumerate(steps, 1):
            budget = own[step.name] + _share_of_spare(step, steps[i - 1 :], own, spare)
            left = deadline - time.monotonic() - KILL_GRACE_S
            echo(f"[{i}/{len(steps)}] {step.name} (budget {min(budget, max(left, 0)):.0f} s) ...")
            if step.needs_cuda and cuda is False:
                result = StepResult(step.name, step.claim, "skipped", reason=cuda_reason, budget_s=0.0)
            elif left < 1.0:
                reason = f"not started: the check's {total_budget_s:g} s were spent"
                result = StepResult(step.name, step.claim, "timeout", reason=reason, budget_s=0.0)
            else:
                result = run_step(step, logs=logs, work=work, budget_s=min(budget, left), cache=cache)
            spare = max(0.0, spare + own[step.name] - result.seconds)
            if "cuda_available" in result.figures:
                cuda = bool(result.figures["cuda_available"])
                cuda_reason = result.figures.get("cuda_reason") or cuda_reason
            machine = machine or result.figures.get("machine_id")
            results.append(result)
            detail = result.summary or result.reason or ""
            echo(f"    {result.status} in {result.seconds:.1f} s{': ' + detail if detail else ''}")
        target = _machine_folder(out_root, machine, (logs, work))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = _report(results, machine=target.name, started=started, t0=t0, total_budget_s=total_budget_s)
    write_json_atomic(target / "report.json", report)
    write_bytes_atomic(target / "report.md", render_markdown(report).encode())
    return report, target


def _share_of_spare(step: Step, rest: Sequence[Step], own: dict[str, float], spare: float) -> float:
    """What a compile-heavy step may add to its own budget: the unspent seconds so far, split among it and the
    compile-heavy steps after it in proportion to their own budgets (what it leaves unused passes on). Other steps
    add nothing, and every step keeps its own budget: the budgets never add up to more than the catalogue's."""
    if not step.compiles:
        return 0.0
    weights = sum(own[s.name] for s in rest if s.compiles)
    return spare * own[step.name] / weights if weights > 0 else 0.0


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") if text not in (None, "") else "—"


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a page: one table row per step, then each failed or stopped step's reason and last output."""
    c = report["counts"]
    lines = [
        f"# GPU check: {report['machine']}",
        "",
        f"{report['started']}, hgbench {report['hgbench_version']}, Python {report['python']}; "
        f"{report['seconds']:.0f} s of the {report['total_budget_s']:.0f} s budget. "
        f"**{c['pass']} pass, {c['fail']} fail, {c['timeout']} timeout, {c['skipped']} skipped.**",
        "",
        "| step | the manual's claim | status | measured | seconds (budget) |",
        "|:---|:---|:---|:---|---:|",
    ]
    for s in report["steps"]:
        measured = s["summary"] or s["reason"]
        lines.append(
            f'| {s["name"]} | "{_cell(s["claim"])}" | **{s["status"]}** | {_cell(measured)} '
            f"| {s['seconds']:.1f} ({s['budget_s']:.0f}) |"
        )
    for s in report["steps"]:
        if s["status"] not in ("fail", "timeout"):  # a skip's reason is in the table
            continue
        lines += ["", f"## {s['name']}: {s['status']}", "", _cell(s["reason"])]
        if s["output_tail"]:
            lines += ["", f"Last lines of `{s['log']}`:", "", "```", s["output_tail"], "```"]
    return "\n".join(lines) + "\n"
