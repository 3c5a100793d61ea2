"""How busy the machine was while a run measured itself: CPU time other processes took, load average, steal time.

A time figure is only as good as the machine was quiet. `LoadMeter` reads, at each named mark (an epoch's start and
end, the inference pass's), the machine's CPU counters (``/proc/stat``), the 1-minute load average
(``/proc/loadavg``) and the CPU time of this run's own processes (the main process and its DataLoader workers,
``/proc/<pid>/stat``); `window` turns two marks into the share of the machine's CPU time that went to *other*
processes and to the hypervisor (steal). `contention_reasons` applies the stated thresholds (docs/record.md,
README "How time is measured"): a window is **contended** when other processes took more than
`OTHER_CPU_THRESHOLD` of the machine's CPU time, the hypervisor stole more than `STEAL_THRESHOLD` of it, or another
process used the run's GPU (`hgbench.measure.nvml`).

Where ``/proc`` is absent (macOS, Windows) every figure is None and the window is never called contended: unknown,
not quiet. The reader is injectable (`LoadMeter(read=...)`), so tests feed synthetic counters, never the real load.

Reference: pyperf's ``system show`` / ``check`` (a benchmark that does not stay silent about an unstable system).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Thresholds of the contended mark (docs/record.md, README "How time is measured").
# Other processes took more than a tenth of all the machine's CPU time. A run uses every core (torch's intra-op
# threads), and each parallel op waits for its slowest thread, so a share that looks small costs far more: in a
# `make run` on 2 cores, others taking 24% of the CPU stretched case 1's steady epoch from about 16 s to 26.4 s
# with the run's own CPU time unchanged (29.8 s against 29.5 s). Quiet epochs there measured 1-3%.
OTHER_CPU_THRESHOLD = 0.10
STEAL_THRESHOLD = 0.05  # the hypervisor gave more than 5% of the CPU time to other guests
GPU_OTHER_PROCESSES_THRESHOLD = 1  # any other process computing on the run's GPU

_PROC = Path("/proc")

# NVML's clocks-event (throttle) reason bits (nvml.h, nvmlClocksEventReason*), by the name the record uses.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def throttle_names(mask: int) -> list[str]:
    """The names of the reasons set in a throttle bitmask (unknown bits as hex)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return names + ([hex(rest)] if rest else [])


def other_processes(procs: list[object], own: set[int]) -> int:
    """How many of the GPU's compute processes are not this run's.

    In a container NVML reports the host's pids, none of which is ours: then one of the processes is taken to be
    this run (it computes on the GPU, so NVML lists it) and the rest are others.
    """
    pids = [int(getattr(p, "pid", -1)) for p in procs]
    if any(pid in own for pid in pids):
        return sum(1 for pid in pids if pid not in own)
    return max(0, len(pids) - 1)


@dataclass(frozen=True)
class CpuReading:
    """One reading of the machine's and this run's CPU counters (seconds); None where the platform has no /proc."""

    t: float  # time.monotonic()
    busy_s: float | None = None  # all CPUs, time not idle: user, nice, system, irq, softirq (/proc/stat)
    total_s: float | None = None  # all CPUs, all time: the above plus idle, iowait and steal
    steal_s: float | None = None  # time the hypervisor ran other guests on our virtual CPUs
    own_s: float | None = None  # this process and its descendants (user + system, children reaped included)
    load_avg_1m: float | None = None  # /proc/loadavg's first field (runnable threads, ours included)
    cpus: int | None = None  # logical CPUs (the cpuN lines of /proc/stat)


def parse_proc_stat(text: str, ticks_per_s: float) -> tuple[float, float, float, int]:
    """(busy, total, steal seconds, CPUs) from /proc/stat's aggregate ``cpu`` line (fields in clock ticks).

    Raises:
        ValueError: no aggregate ``cpu`` line.
    """
    cpus = sum(1 for line in text.splitlines() if line.startswith("cpu") and line[3:4].isdigit())
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            v = [float(x) for x in parts[1:9]] + [0.0] * (8 - len(parts[1:9]))
            user, nice, system, idle, iowait, irq, softirq, steal = v
            busy = user + nice + system + irq + softirq  # guest time is already inside user and nice
            total = busy + idle + iowait + steal
            return busy / ticks_per_s, total / ticks_per_s, steal / ticks_per_s, max(cpus, 1)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def parse_loadavg(text: str) -> float:
    """The 1-minute load average from /proc/loadavg."""
    return float(text.split()[0])


def _pid_stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, user + system ticks of the process and its reaped children) of one pid; None if it is gone."""
    try:
        text = (_PROC / pid / "stat").read_text()
    except OSError:
        return None
    rest = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    # Fields after the name, from 3 (state): ppid is 4, utime 14, stime 15, cutime 16, cstime 17.
    return int(rest[1]), sum(float(x) for x in rest[11:15])


def own_cpu_ticks(root: int | None = None) -> float:
    """CPU ticks of process `root` (default: this one) and every live descendant (DataLoader workers)."""
    root = os.getpid() if root is None else root
    stats = {int(p.name): s for p in _PROC.iterdir() if p.name.isdigit() and (s := _pid_stat(p.name)) is not None}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def read_cpu() -> CpuReading:
    """The machine's and this run's CPU counters now; a reading of Nones where /proc cannot be read."""
    now = time.monotonic()
    try:
        ticks = float(os.sysconf("SC_CLK_TCK"))
        busy, total, steal, cpus = parse_proc_stat((_PROC / "stat").read_text(), ticks)
        load = parse_loadavg((_PROC / "loadavg").read_text())
        own = own_cpu_ticks() / ticks
    except (OSError, ValueError, AttributeError, IndexError):  # no /proc (macOS), or a format this does not know
        return CpuReading(now)
    return CpuReading(now, busy, total, steal, own, load, cpus)


EMPTY_LOAD = {
    "load_avg_1m": None,
    "cpus": None,
    "other_cpu_frac": None,
    "steal_frac": None,
    "own_cpu_s": None,
    "other_cpu_s": None,
}


def load_window(a: CpuReading, b: CpuReading) -> dict:
    """What the machine did between two readings: the share of its CPU time other processes and steal took.

    Returns:
        load_avg_1m (at `b`), cpus, own_cpu_s (this run's processes), other_cpu_s (every other process),
        other_cpu_frac (other_cpu_s / all CPU time of the window), steal_frac; None where not readable.
    """
    if None in (a.busy_s, b.busy_s, a.total_s, b.total_s, a.own_s, b.own_s):
        return {**EMPTY_LOAD, "load_avg_1m": b.load_avg_1m, "cpus": b.cpus}
    total = b.total_s - a.total_s  # type: ignore[operator]  # None ruled out above
    own = max(0.0, b.own_s - a.own_s)  # type: ignore[operator]
    # Our workers' time can exceed the machine's busy delta by a tick of rounding: never a negative "other".
    other = max(0.0, (b.busy_s - a.busy_s) - own)  # type: ignore[operator]
    steal = max(0.0, (b.steal_s or 0.0) - (a.steal_s or 0.0))
    return {
        "load_avg_1m": b.load_avg_1m,
        "cpus": b.cpus,
        "other_cpu_frac": other / total if total > 0 else None,
        "steal_frac": steal / total if total > 0 else None,
        "own_cpu_s": own,
        "other_cpu_s": other,
    }


def contention_reasons(load: dict | None, gpu_other_processes: int | None = None) -> list[str]:
    """Why a window's times are contended, by the stated thresholds; [] when quiet (or unknown)."""
    load = load or {}
    reasons = []
    other, steal = load.get("other_cpu_frac"), load.get("steal_frac")
    if other is not None and other > OTHER_CPU_THRESHOLD:
        reasons.append(f"other processes took {100 * other:.0f}% of the CPU time")
    if steal is not None and steal > STEAL_THRESHOLD:
        reasons.append(f"the hypervisor stole {100 * steal:.0f}% of the CPU time")
    if gpu_other_processes is not None and gpu_other_processes >= GPU_OTHER_PROCESSES_THRESHOLD:
        reasons.append(f"{gpu_other_processes} other process(es) on the GPU")
    return reasons


@dataclass
class LoadMeter:
    """Named readings of the machine's load; `window(a, b)` is the load between two marks (see `load_window`).

    Args:
        read: the reader (default `read_cpu`); tests pass synthetic readings.
    """

    read: Callable[[], CpuReading] = read_cpu
    _marks: dict[str, CpuReading] = field(default_factory=dict, init=False)

    def mark(self, name: str) -> None:
        """Take a reading now, under `name` (e.g. ``epoch3-start``)."""
        self._marks[name] = self.read()

    def window(self, start: str, end: str) -> dict:
        """The load between marks `start` and `end`, and the host it was read on (DDP ranks combine by host)."""
        for m in (start, end):
            if m not in self._marks:
                raise KeyError(f"no load mark named {m!r}; marks: {sorted(self._marks)}")
        return {**load_window(self._marks[start], self._marks[end]), "host": socket.gethostname()}


def combine_loads(windows: Sequence[dict]) -> dict:
    """One window of a run over several processes (DDP ranks), rank 0's first: the other ranks on rank 0's host are
    this run's processes, not competitors, so their CPU time moves from "other" to "own"."""
    first = dict(windows[0])
    siblings = [w for w in windows[1:] if w.get("host") == first.get("host")]
    if not siblings or first.get("other_cpu_s") is None:
        return first
    moved = sum(w.get("own_cpu_s") or 0.0 for w in siblings)
    other = max(0.0, first["other_cpu_s"] - moved)
    frac = first.get("other_cpu_frac")
    scale = other / first["other_cpu_s"] if first["other_cpu_s"] > 0 else 0.0
    first.update(
        own_cpu_s=(first.get("own_cpu_s") or 0.0) + moved,
        other_cpu_s=other,
        other_cpu_frac=None if frac is None else frac * scale,
    )
    return first


def window_entry(load: dict, gpu: dict) -> dict:
    """A window's ``load`` entry as the record stores it: the CPU figures, the GPU's other processes and throttle
    reasons (`hgbench.measure.nvml`), and whether it was contended and why."""
    others = gpu.get("gpu_other_processes")
    reasons = contention_reasons(load, others)
    entry = {k: v for k, v in load.items() if k != "host"}
    entry.update(
        gpu_other_processes=others,
        gpu_throttle_reasons=gpu.get("gpu_throttle_reasons"),
        contended=bool(reasons),
        contended_reasons=reasons,
    )
    return entry


def run_contention(
    steady_epochs: Sequence[dict], inference_load: dict | None, gpu_share: float, *, mig_slice: bool = False
) -> dict:
    """The record's ``results.contention``: whether any steady epoch or the inference pass was contended, and
    whether the run shared its GPU with other runs or had a MIG slice of it (either way its board-wide NVML figures
    are the board's, not its own).
    """
    windows = [e.get("load") for e in steady_epochs] + ([inference_load] if inference_load else [])
    known = [w for w in windows if isinstance(w, dict)]
    contended = [w for w in known if w.get("contended")]
    reasons = list(dict.fromkeys(r for w in contended for r in w.get("contended_reasons") or []))
    shared = gpu_share < 1
    board_wide = [
        *(["energy, power, utilisation and memory are the whole GPU's, shared with other runs"] if shared else []),
        *(["energy, power, utilisation and memory are the whole GPU's, of which the run had a MIG slice"] * mig_slice),
    ]
    return {
        "contended": bool(contended) if known else None,
        "contended_windows": len(contended),
        "windows": len(known),
        "reasons": reasons,
        "shared_gpu": shared,
        "gpu_share": gpu_share,
        "mig_slice": mig_slice,
        "board_wide": "; ".join(board_wide) or None,
        "thresholds": {
            "other_cpu_frac": OTHER_CPU_THRESHOLD,
            "steal_frac": STEAL_THRESHOLD,
            "gpu_other_processes": GPU_OTHER_PROCESSES_THRESHOLD,
        },
    }
