"""A Ray cluster of two nodes on this machine for the cluster tests, started and stopped by the tests themselves.

A head (`ray start --head`) and a second node (`ray start --address`), each with its own temp folder, its own ports
(free ones, asked of the OS) and its own custom resource, so that nothing collides with another Ray on the machine
(another suite's, a user's). Every process of a node is found by PID: the daemons whose command line names the node's
temp folder, and their descendants (the workers and agents a raylet starts, which rename themselves ``ray::...``).
Nothing here runs `ray stop`, which stops every Ray on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from helpers.hold import hold_env
from helpers.processes import alive, all_pids, cmdline, descendants

RAY = Path(sys.executable).with_name("ray")  # the venv's own `ray` command, so the nodes run this venv's Python
WAIT_S = 300.0  # how long a node may take to start or a process to end on a loaded machine (a bound, not a measure)
# Ports `ray start` would otherwise take at fixed defaults (6379, 8265, 52365, ...): each node gets free ones.
HEAD_PORTS = ("--port", "--dashboard-port")
# The head's checks on each node (Ray's system config, read from the environment when the GCS starts): a node that
# stops answering is declared dead after 5 failed checks, a second apart, each waiting 3 s at most (Ray's defaults
# take about half a minute). Generous for a loaded machine: a live raylet answers in milliseconds.
HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "3000",
    "RAY_health_check_failure_threshold": "5",
}
# gRPC keepalive of every Ray process (the sweep's driver too): a call to a process that stopped answering without
# closing its connection (a frozen node, a node cut off by the network) fails after 2 pings 5 s apart go unanswered,
# not after Ray's default 5 + 2 minutes. Servers and clients agree, so no live peer is refused for pinging too often.
KEEPALIVE = {
    "RAY_grpc_keepalive_time_ms": "5000",
    "RAY_grpc_keepalive_timeout_ms": "5000",
    "RAY_grpc_client_keepalive_time_ms": "5000",
    "RAY_grpc_client_keepalive_timeout_ms": "5000",
}
# Ray 2.60's token authentication, off for this cluster's nodes, explicitly: once a local `ray.init()` has written
# ~/.ray/auth_token, a head started without the setting requires that token while a node joining without it sends
# none and is refused. A driver that sends a token anyway (this process, after a local `ray.init()`) is let in.
AUTH = {"RAY_AUTH_MODE": "disabled"}
NODE_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class RayNode:
    """One Ray node of the cluster: its temp folder, its custom resource and, once started, its Ray node id."""

    name: str
    temp_dir: Path
    resource: str  # a custom resource only this node has (1 of it)
    env: dict[str, str] = field(default_factory=dict)  # more environment for the node's processes (its workers')
    node_id: str = ""
    known: dict[int, int] = field(default_factory=dict)  # every process of the node seen so far (pid: start time)

    def processes(self) -> dict[int, int]:
        """The node's live processes now (pid: start time), remembered for `stop`."""
        mine = str(self.temp_dir)
        roots = [pid for pid in all_pids() if pid != os.getpid() and mine in cmdline(pid)]
        now = descendants(roots)
        self.known.update(now)
        return now

    def started_by(self, pid: int) -> dict[int, int]:
        """The live processes the node's process `pid` started (its raylet's workers and agents), pid: start time."""
        return {p: start for p, start in descendants([pid]).items() if p != pid}

    def raylet(self) -> int:
        """The PID of the node's raylet (its process whose command line starts with the raylet binary)."""
        for pid in self.processes():
            if cmdline(pid).split(" ", 1)[0].endswith("/raylet"):
                return pid
        raise AssertionError(f"the {self.name} node has no raylet")

    def stop(self) -> None:
        """Every process of the node seen so far, by PID: SIGTERM, a grace, then SIGKILL for what is left."""
        self.processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in alive(self.known):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + (5.0 if sig == signal.SIGTERM else WAIT_S)
            while alive(self.known) and time.monotonic() < deadline:
                time.sleep(0.2)


@dataclass
class RayCluster:
    """The head and the second node; `address` is what `hgbench sweep --address` takes."""

    address: str
    head: RayNode
    second: RayNode
    markers: Path  # where the second node says which run it holds still (`held`)


def _ray_start(node: RayNode, args: list[str], log: Path) -> None:
    ports = free_ports(len(NODE_PORTS))
    command = [
        str(RAY),
        "start",
        *args,
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        "1",
        "--num-gpus",
        "0",
        "--resources",
        json.dumps({node.resource: 1}),
        "--temp-dir",
        str(node.temp_dir),
        "--object-store-memory",
        str(80 * 2**20),
        "--min-worker-port",
        "0",  # 0 and 0: each worker binds a port the OS picks, not one of 10002-19999 that others' Ray may hold
        "--max-worker-port",
        "0",
        "--disable-usage-stats",
        *[str(a) for flag, port in zip(NODE_PORTS, ports, strict=True) for a in (flag, port)],
    ]
    with log.open("ab") as out:
        env = {**os.environ, **HEALTH_CHECKS, **KEEPALIVE, **AUTH, **node.env}
        proc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=WAIT_S, check=False)
    if proc.returncode != 0:
        node.stop()
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise AssertionError(f"`ray start` of the {node.name} node exited with {proc.returncode}:\n{tail}")


def _node_ids(address: str) -> dict[str, str]:
    """Each alive node's custom resources mapped to its Ray node id, asked of the cluster from a short-lived driver
    (a child process: this process stays free to be the sweep's driver)."""
    code = (
        "import json, sys, ray\n"
        "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR')\n"
        "print(json.dumps([[n['NodeID'], sorted(n['Resources'])] for n in ray.nodes() if n['Alive']]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, address],
        capture_output=True,
        text=True,
        env={**os.environ, **AUTH},
        timeout=WAIT_S,
        check=True,
    )
    return {name: node_id for node_id, names in json.loads(proc.stdout.splitlines()[-1]) for name in names}


def node_ids(cluster: RayCluster) -> dict[str, str]:
    """The alive nodes' ids by custom resource (`hgbench_head`, `hgbench_second`)."""
    return {
        k: v for k, v in _node_ids(cluster.address).items() if k in (cluster.head.resource, cluster.second.resource)
    }


@contextmanager
def ray_cluster(markers: Path) -> Iterator[RayCluster]:
    """A head and a second node, each with 1 CPU, the second holding its runs still after their first checkpoint
    (`helpers.hold`, which says so in `markers`); every process of both stopped by PID afterwards, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="hgb-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    head = RayNode("head", root / "head", "hgbench_head")
    second = RayNode("second", root / "second", "hgbench_second", env=hold_env(root / "hold", markers))
    log = root / "ray-start.log"
    try:
        gcs, dashboard = free_ports(2)
        head_flags = ["--head", "--port", str(gcs), "--dashboard-port", str(dashboard), "--include-dashboard", "false"]
        _ray_start(head, head_flags, log)
        address = f"127.0.0.1:{gcs}"
        _ray_start(second, ["--address", address], log)
        cluster = RayCluster(address, head, second, markers)
        deadline = time.monotonic() + WAIT_S
        while len(ids := node_ids(cluster)) < 2:
            assert time.monotonic() < deadline, f"the second node did not join in {WAIT_S:.0f} s: see {log}"
            time.sleep(1.0)
        head.node_id, second.node_id = ids[head.resource], ids[second.resource]
        head.processes()
        second.processes()
        yield cluster
    finally:
        second.stop()
        head.stop()
        shutil.rmtree(root, ignore_errors=True)
