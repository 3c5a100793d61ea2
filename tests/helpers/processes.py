"""Processes read from /proc (Linux) for the cluster tests: a process and everything below it, which of them still
run, each known by its PID and start time so that a PID reused by another process is never taken for it."""

from __future__ import annotations

from pathlib import Path


def stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def descendants(roots: list[int]) -> dict[int, int]:
    """`roots` and every live process below them (pid: start time); zombies have ended."""
    stats = {pid: s for pid in all_pids() if (s := stat(pid)) is not None}
    found, todo = {r for r in roots if r in stats}, [r for r in roots if r in stats]
    while todo:
        parent = todo.pop()
        for pid, (_, ppid, _) in stats.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                todo.append(pid)
    return {pid: stats[pid][2] for pid in found if stats[pid][0] != "Z"}


def alive(pids: dict[int, int]) -> list[int]:
    """The processes of `pids` (pid: start time) still running; a zombie or a reused pid has ended."""
    return [pid for pid, start in pids.items() if (s := stat(pid)) is not None and s[2] == start and s[0] != "Z"]


def environ(pid: int) -> dict[str, str]:
    """A process's environment as it started (empty once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}
