"""`hgbench sweep --engine ray --address` on a real Ray cluster of two nodes (a head and a second node, both on this
machine, started by `ray start` in `helpers.ray_nodes`): runs placed on both nodes, and the second node lost mid-run,
killed (its raylet, by PID) or frozen (every process of it stopped, as a node cut off by the network looks).

The sweep is the `hgbench sweep` command, a process of its own, as a user starts it. What is asserted comes from the
records, the runs' logs (each attempt's first line names its Ray node) and the processes, never from timing: the
second node holds its run still after the first epoch's checkpoint (`helpers.hold`), so the node is always
lost mid-run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds each Ray node's processes in /proc"),
]
pytest.importorskip("ray")

from helpers.hold import held  # noqa: E402
from helpers.processes import alive  # noqa: E402
from helpers.ray_nodes import KEEPALIVE, WAIT_S, RayCluster, ray_cluster  # noqa: E402

from hgbench.spec.config import RunConfig  # noqa: E402

EPOCHS = 3
ATTEMPT = re.compile(r"^hgbench: attempt on Ray node (\w+) \(.*\), pid (\d+)$", re.MULTILINE)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """A fresh two-node cluster for each test (a test loses its second node); every process stopped by PID after."""
    with ray_cluster(tmp_path / "markers") as started:
        yield started


def _sweep(tmp_path: Path, data_dir: Path, address: str) -> subprocess.Popen:
    """`hgbench sweep` of seeds 0 and 1 of hg1 on the cluster, each run asking for 1 CPU, one retry."""
    argv = [
        *(sys.executable, "-m", "hgbench.cli", "sweep", "--quiet"),
        *("--device", "cpu", "--workers", "0", "--data-dir", str(data_dir)),
        *("--epochs", str(EPOCHS), "--batch", "4", "--test-batch", "4", "--input-res", "64"),
        *("--limit-train", "8", "--limit-val", "6", "--no-flip-test"),
        *("--out", str(tmp_path / "results"), "--checkpoint-dir", str(tmp_path / "runs")),
        *("--cases", "hg1", "--seeds", "0,1", "--engine", "ray", "--address", address, "--retries", "1"),
    ]
    env = {**os.environ, **KEEPALIVE}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _ended(sweep: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = sweep.communicate(timeout=WAIT_S)  # liveness only
    except subprocess.TimeoutExpired:
        sweep.kill()
        out, err = sweep.communicate()
        pytest.fail(f"the sweep did not end in {WAIT_S:.0f} s:\n{out[-3000:]}\n{err[-3000:]}")
    return sweep.returncode, out, err


def _when_held(cluster: RayCluster, sweep: subprocess.Popen) -> tuple[int, int]:
    """(seed, PID) of the run the second node holds still, once it does."""
    deadline = time.monotonic() + WAIT_S
    while (found := held(cluster.markers)) is None:
        if sweep.poll() is not None or time.monotonic() > deadline:
            sweep.kill()
            out, err = sweep.communicate()
            pytest.fail(f"no run reached its first checkpoint on the second node:\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.2)
    return found


def _records(tmp_path: Path) -> dict[int, dict]:
    found = [json.loads(p.read_text()) for p in sorted((tmp_path / "results").rglob("*.json"))]
    by_seed = {r["config"]["seed"]: r for r in found}
    assert len(by_seed) == len(found), "one record per run"
    return by_seed


def _log(tmp_path: Path, seed: int) -> str:
    [log] = (tmp_path / "runs" / "sweep-logs").glob(f"hg1-seed-{seed}-*.log")
    return log.read_text()


def _nodes(log: str) -> list[str]:
    """The Ray node of each attempt of a run, in order, from its log."""
    return [node for node, _ in ATTEMPT.findall(log)]


def _learning(record: dict) -> list:
    """What a run computed, epoch by epoch: what resuming must reproduce exactly (times excepted)."""
    keys = ("epoch", "lr", "train_loss", "val_loss", "heatmap_acc", "pckh", "steps", "images")
    return [tuple(e[k] for k in keys) for e in record["results"]["epochs"]] + [record["results"]["pckh"]]


def _uninterrupted(tmp_path: Path, data_dir: Path, seed: int) -> dict:
    """The same run trained in one go in this process, on one thread as the Ray task trains it."""
    import torch

    from hgbench.run.runner import run

    config = RunConfig(
        case="hg1",
        seed=seed,
        epochs=EPOCHS,
        batch_size=4,
        test_batch_size=4,
        input_res=64,
        device="cpu",
        workers=0,
        data_dir=str(data_dir),
        limit_train=8,
        limit_val=6,
        flip_test=False,
        out=str(tmp_path / "reference"),
        checkpoint_dir=str(tmp_path / "reference-runs"),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcome = run(config, progress=False)
    finally:
        torch.set_num_threads(threads)
    return json.loads(outcome.record_path.read_text())


def test_runs_go_to_both_nodes_and_a_lost_nodes_run_resumes_on_the_head(
    cluster: RayCluster, tmp_path: Path, synthetic_root: Path
) -> None:
    """Two runs of one CPU each on two nodes of one CPU each: one on each node. The second node's raylet is killed
    while its run is mid-run: Ray reports the node dead, the sweep retries the run, which can only go to the head,
    and it resumes there after epoch 1 (never from epoch 1), one trainer at a time, to the record an uninterrupted
    run writes."""
    sweep = _sweep(tmp_path, synthetic_root, cluster.address)
    seed, pid = _when_held(cluster, sweep)
    raylet = cluster.second.raylet()
    started = cluster.second.started_by(raylet)
    assert pid in started  # the run trains in a worker the second node's raylet started
    os.kill(raylet, signal.SIGKILL)
    code, out, err = _ended(sweep)
    assert code == 0, out[-3000:] + err[-3000:]
    head, second = cluster.head.node_id, cluster.second.node_id

    # Placed on both nodes: each run's first attempt names its node.
    assert {s: _nodes(_log(tmp_path, s))[0] for s in (0, 1)} == {seed: second, 1 - seed: head}
    # The lost node's run: died with its node, retried once, on the head, from its checkpoint.
    assert f"hg1 seed {seed}: worker died (NodeDiedError" in out
    assert "retry 1 of 1, from its checkpoint" in out
    log = _log(tmp_path, seed)
    assert _nodes(log) == [second, head]
    first, retry = log.split(f"hgbench: attempt on Ray node {head}")
    assert f"pid {pid}" in first
    assert "starting hg1 from scratch" in first
    assert retry.count("hgbench: resuming hg1 after epoch 1 from ") == 1
    assert "from scratch" not in retry
    # The node's processes went with its raylet: the agents it started and the worker that trained the run.
    assert not alive(started)

    records = _records(tmp_path)
    assert {s: r["status"] for s, r in records.items()} == {0: "finished", 1: "finished"}
    resumed = records[seed]
    assert [e["epoch"] for e in resumed["results"]["epochs"]] == [1, 2, 3]  # each epoch trained once
    assert [e["warmup"] for e in resumed["results"]["epochs"]] == [True, True, False]  # a new process from epoch 2
    assert _learning(resumed) == _learning(_uninterrupted(tmp_path, synthetic_root, seed))


def test_a_frozen_nodes_run_is_never_trained_twice_and_the_same_sweep_resumes_it(
    cluster: RayCluster, tmp_path: Path, synthetic_root: Path
) -> None:
    """Every process of the second node is stopped (SIGSTOP) mid-run, as a node cut off by the network: the sweep
    retries its run on the head, but the frozen trainer still holds the run's claim, so the retry trains nothing and
    says who holds it. Once that node is gone for good, the same sweep again resumes the run from its checkpoint to an
    uninterrupted run's record."""
    sweep = _sweep(tmp_path, synthetic_root, cluster.address)
    seed, pid = _when_held(cluster, sweep)
    processes = cluster.second.processes()
    for process in processes:
        os.kill(process, signal.SIGSTOP)
    code, out, err = _ended(sweep)
    assert code == 1, out[-3000:] + err[-3000:]
    head, second = cluster.head.node_id, cluster.second.node_id
    assert f"hg1 seed {seed}: worker died (" in out
    assert f"being trained by host {os.uname().nodename} pid {pid} since" in out  # the retry found the claim held
    assert err.strip().endswith(f"1 of 2 runs are being trained by other processes (left to them): hg1 seed {seed}")
    log = _log(tmp_path, seed)
    assert _nodes(log) == [second, head]
    assert "resuming" not in log  # the retry trained nothing
    records = _records(tmp_path)
    assert records[1 - seed]["status"] == "finished"
    assert records[seed]["status"] == "interrupted"
    assert [e["epoch"] for e in records[seed]["results"]["epochs"]] == [1]
    assert alive({pid: processes[pid]}) == [pid]  # the frozen trainer is still there

    cluster.second.stop()  # the node is lost for good (SIGKILL reaches stopped processes)
    assert not alive(processes)
    code, out, err = _ended(_sweep(tmp_path, synthetic_root, cluster.address))
    assert code == 0, out[-3000:] + err[-3000:]
    assert "sweep of 2 runs, 1 to run" in out
    log = _log(tmp_path, seed)
    assert _nodes(log) == [second, head, head]
    assert log.count("hgbench: resuming hg1 after epoch 1 from ") == 1
    records = _records(tmp_path)
    assert records[seed]["status"] == "finished"
    assert [e["epoch"] for e in records[seed]["results"]["epochs"]] == [1, 2, 3]
    assert _learning(records[seed]) == _learning(_uninterrupted(tmp_path, synthetic_root, seed))
