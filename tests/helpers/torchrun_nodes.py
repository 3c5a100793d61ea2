"""Two torchrun "nodes" on this machine for the cluster tests: `torchrun --nnodes 2`, one process each, gloo, on
127.0.0.1 and a port free when asked, with the static rendezvous (`--node_rank 0|1`, node 0 hosting the store) or
c10d's. Each node's worker writes its stdout and stderr into its own files (`--redirects 3`), apart from torchrun's own
report; each node's processes (its agent and the worker it started) are found and stopped by PID, whatever happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.processes import alive, descendants, environ
from helpers.ray_nodes import free_ports

WAIT_S = 300.0  # how long a job may take to start or end on a loaded machine (a bound, not a measure)


@dataclass
class TorchrunNode:
    """One node of the job: its torchrun agent, the folder of its worker's output, and what it started."""

    index: int  # the order it was started in (its --node_rank with the static rendezvous)
    agent: subprocess.Popen
    logs: Path  # torchrun's --log-dir: the worker's stdout.log and stderr.log below it
    known: dict[int, int]  # every process of the node seen so far (pid: start time)

    def processes(self) -> dict[int, int]:
        """The node's live processes now (pid: start time), remembered for `stop`."""
        now = descendants([self.agent.pid])
        self.known.update(now)
        return now

    def worker(self) -> int | None:
        """The PID of the node's worker (the one process its agent started), once it runs."""
        children = [pid for pid in self.processes() if pid != self.agent.pid]
        return children[0] if len(children) == 1 else None

    def rank(self) -> int | None:
        """The global rank torchrun gave the node's worker (its RANK), once it runs."""
        pid = self.worker()
        rank = environ(pid).get("RANK") if pid is not None else None
        return int(rank) if rank is not None else None

    def worker_output(self, stream: str) -> str:
        """What the worker wrote on `stream` (stdout or stderr), every attempt's."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.rglob(f"{stream}.log")))

    def agent_output(self) -> str:
        return (self.logs.parent / f"agent-{self.index}.log").read_text(errors="replace")

    def wait(self) -> int:
        """The agent's exit status, waited for as long as a liveness bound allows."""
        try:
            return self.agent.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"torchrun node {self.index} did not end in {WAIT_S:.0f} s") from None

    def signal(self, sig: int) -> None:
        """`sig` to every process of the node (the agent and its worker), by PID."""
        for pid in alive(self.processes()):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Every process of the node seen so far, by PID (SIGKILL reaches stopped processes too)."""
        self.processes()
        for pid in alive(self.known):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + WAIT_S
        while alive(self.known) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.agent.poll() is None:
            self.agent.wait(timeout=WAIT_S)


def _rendezvous(kind: str, index: int, port: int) -> list[str]:
    if kind == "static":
        return ["--node_rank", str(index), "--master_addr", "127.0.0.1", "--master_port", str(port)]
    # c10d: node 0 hosts the rendezvous store; torchrun gives the ranks out in its own order.
    host = ["--rdzv_conf", f"is_host={1 if index == 0 else 0}"]
    return ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "hgbench-test", *host]


@contextmanager
def torchrun_nodes(
    run_args: Sequence[str], folder: Path, *, rendezvous: str = "static", node_env: Sequence[dict] = ({}, {})
) -> Iterator[list[TorchrunNode]]:
    """Two nodes of one process each running ``hgbench.cli run_args``, started in order; `node_env` adds to each
    node's environment (a hold on one of them). Every process of both is stopped by PID afterwards."""
    [port] = free_ports(1)
    nodes: list[TorchrunNode] = []
    try:
        for index, extra in enumerate(node_env):
            logs = folder / f"node-{index}"
            logs.mkdir(parents=True)
            command = [
                *(sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"),
                *_rendezvous(rendezvous, index, port),
                *("--log-dir", str(logs), "--redirects", "3"),
                *("-m", "hgbench.cli", *run_args),
            ]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
            with (folder / f"agent-{index}.log").open("wb") as out:
                agent = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            nodes.append(TorchrunNode(index, agent, logs, {}))
        yield nodes
    finally:
        for node in nodes:
            node.stop()
