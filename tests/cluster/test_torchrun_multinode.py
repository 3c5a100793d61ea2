"""`hgbench run` under two `torchrun --nnodes 2` on this machine (one process per node, gloo on 127.0.0.1): the job
computes one process's training with the same global batch and rank 0 alone writes its record; and one node lost
mid-run, killed (SIGKILL of its torchrun and worker) or frozen (both stopped, as a node cut off by the network looks):
the other node exits with one line, its run's record says interrupted, and the torchrun command that line names
continues the run to the record an uninterrupted job writes.

Node 1 holds its run still after epoch 1 (`helpers.hold`), so it is lost mid-run however slow the machine is; the
test never waits on a clock, only within generous liveness bounds.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers.hold import held, hold_env
from helpers.processes import alive
from helpers.torchrun_nodes import WAIT_S, TorchrunNode, torchrun_nodes

from hgbench.run.runner import run
from hgbench.spec.config import RunConfig

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds each node's processes in /proc"),
]

EPOCHS = 2


def _run_args(tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    """`hgbench run` of hg1 at 64 px: 4 training people, one global batch of 4 (2 per process), 6 validation people."""
    return [
        *("run", "--case", "hg1", "--epochs", str(EPOCHS), "--batch", "4", "--test-batch", "4", "--input-res", "64"),
        *("--device", "cpu", "--workers", "0", "--data-dir", str(data_dir), "--quiet"),
        *("--limit-train", "4", "--limit-val", "6", "--no-flip-test"),
        *("--out", str(tmp_path / "results"), "--checkpoint-dir", str(tmp_path / "runs")),
        *extra,
    ]


def _records(results: Path) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for p in sorted(results.rglob("*.json")) if p.stat().st_size]


def _learning(record: dict) -> list:
    """What a run computed, epoch by epoch (times excepted)."""
    keys = ("epoch", "lr", "train_loss", "val_loss", "heatmap_acc", "pckh", "steps", "images")
    return [tuple(e[k] for k in keys) for e in record["results"]["epochs"]] + [record["results"]["pckh"]]


def _hgbench_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("hgbench:")]


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    """One uninterrupted two-node job (c10d rendezvous), followed process by process: its record, where it is, the
    global rank of each node's worker and the PID that claimed the run."""
    folder = tmp_path_factory.mktemp("two-nodes")
    with torchrun_nodes(_run_args(folder, synthetic_root), folder / "torchrun", rendezvous="c10d") as nodes:
        ranks: dict[int, tuple[int, int]] = {}  # node: (global rank, worker PID), read while the workers run
        while any(node.agent.poll() is None for node in nodes):
            for node in nodes:
                if node.index not in ranks and (rank := node.rank()) is not None:
                    ranks[node.index] = (rank, node.worker())
            time.sleep(0.1)
        codes = [node.wait() for node in nodes]
        outputs = [node.worker_output("stdout") + node.worker_output("stderr") for node in nodes]
    assert codes == [0, 0], outputs
    [(path, record)] = _records(folder / "results")  # one record: only rank 0 writes
    [claim] = (folder / "runs").rglob("claim.lock")
    return {"path": path, "record": record, "ranks": ranks, "claimed_by": json.loads(claim.read_text())["pid"]}


def test_two_nodes_train_as_one_process_with_the_same_global_batch_and_rank_0_writes(
    two_nodes: dict, tmp_path: Path, synthetic_root: Path
) -> None:
    """One step per epoch: the first epoch's loss is computed before any update and agrees with one process's to
    float32 rounding; later epochs agree to the ~1% float32 gradients of these networks are good to
    (test_distributed.py checks the step itself in float64)."""
    record = two_nodes["record"]
    assert record["status"] == "finished"
    assert record["config"]["world_size"] == 2
    assert sorted(rank for rank, _ in two_nodes["ranks"].values()) == [0, 1]
    [rank_0_worker] = [pid for rank, pid in two_nodes["ranks"].values() if rank == 0]
    assert two_nodes["claimed_by"] == rank_0_worker  # the record's writer is global rank 0

    config = RunConfig(
        case="hg1",
        epochs=EPOCHS,
        batch_size=4,
        test_batch_size=4,
        input_res=64,
        device="cpu",
        workers=0,
        data_dir=str(synthetic_root),
        limit_train=4,
        limit_val=6,
        flip_test=False,
        out=str(tmp_path / "one"),
        checkpoint_dir=str(tmp_path / "one-runs"),
    )
    one = json.loads(run(config, progress=False).record_path.read_text())
    assert one["config"]["world_size"] == 1
    e1, e2 = one["results"]["epochs"], record["results"]["epochs"]
    assert [e["images"] for e in e2] == [e["images"] for e in e1] == [4] * EPOCHS
    assert [e["steps"] for e in e2] == [e["steps"] for e in e1] == [1] * EPOCHS  # the one global batch
    assert e2[0]["train_loss"] == pytest.approx(e1[0]["train_loss"], rel=1e-5)
    assert e2[1]["train_loss"] == pytest.approx(e1[1]["train_loss"], rel=2e-2)
    # Predictions are gathered from both nodes: the PCKh covers every validation person exactly once.
    assert record["results"]["pckh"]["count"] == one["results"]["pckh"]["count"] == 6


def _until_held(nodes: list[TorchrunNode], markers: Path, results: Path) -> int:
    """The PID of node 1's worker once it holds still after epoch 1 and rank 0 has written epoch 1's record."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = held(markers)
        written = [r for _, r in _records(results) if r["results"]["epochs"]]
        if found is not None and written:
            return found[1]
        ended = [node.index for node in nodes if node.agent.poll() is not None]
        assert not ended, f"node {ended} ended before node 1 held its run: {nodes[ended[0]].agent_output()[-3000:]}"
        assert time.monotonic() < deadline, f"node 1 did not reach epoch 1's end in {WAIT_S:.0f} s"
        time.sleep(0.2)


def _survivor_says_interrupted(node: TorchrunNode, results: Path, why: str) -> tuple[Path, dict]:
    """Node 0 (global rank 0) ended on its own, non-zero, with one line; its record says interrupted after epoch 1,
    and the stop line names the torchrun job that continues it."""
    assert node.wait() not in (0, None)
    assert not alive(node.known)  # its agent and its worker are gone
    err, out = node.worker_output("stderr"), node.worker_output("stdout")
    [line] = _hgbench_lines(err)
    assert line.startswith(f"hgbench: error: {why}")
    assert line.endswith("; the run is interrupted")
    assert "Traceback" not in err
    [(path, record)] = _records(results)
    assert record["status"] == "interrupted"
    assert record["status_reason"].startswith(why)
    assert [e["epoch"] for e in record["results"]["epochs"]] == [1]
    command = (
        f"continue with: torchrun <this job's own flags: 2 nodes, 1 process each> -m hgbench.cli run --case hg1 "
        f"--resume {path}"
    )
    assert any(command in line for line in _hgbench_lines(out))
    return path, record


def _resume(tmp_path: Path, data_dir: Path, path: Path, two_nodes: dict) -> None:
    """The command the line names, on both nodes: the same record finished, as the uninterrupted job's."""
    args = ["run", "--case", "hg1", "--resume", str(path), "--device", "cpu", "--workers", "0", "--quiet"]
    with torchrun_nodes(args, tmp_path / "resumed") as nodes:
        codes = [node.wait() for node in nodes]
        outputs = [node.worker_output("stdout") + node.worker_output("stderr") for node in nodes]
    assert codes == [0, 0], outputs
    assert "hgbench: resuming hg1 after epoch 1 from " in outputs[0]
    [(again, record)] = _records(tmp_path / "results")
    assert again == path  # the same record completed
    assert record["status"] == "finished"
    assert [e["warmup"] for e in record["results"]["epochs"]] == [True, True]  # new processes from epoch 2
    assert _learning(record) == _learning(two_nodes["record"])


def test_a_killed_node_leaves_the_other_to_stop_in_one_line_and_the_run_interrupted(
    two_nodes: dict, tmp_path: Path, synthetic_root: Path
) -> None:
    markers = tmp_path / "markers"
    hold = hold_env(tmp_path / "hold", markers)
    with torchrun_nodes(_run_args(tmp_path, synthetic_root), tmp_path / "torchrun", node_env=({}, hold)) as nodes:
        _until_held(nodes, markers, tmp_path / "results")
        nodes[1].signal(signal.SIGKILL)  # its torchrun and its worker
        path, _ = _survivor_says_interrupted(nodes[0], tmp_path / "results", "another process stopped (Connection")
    _resume(tmp_path, synthetic_root, path, two_nodes)


def test_a_frozen_node_leaves_the_other_to_stop_after_the_collective_timeout(
    tmp_path: Path, synthetic_root: Path
) -> None:
    """Node 1 stopped (SIGSTOP), its connections open: node 0 waits at its next collective for `--dist-timeout`
    (1 minute) and then stops as it does for a killed node, never hanging (its run resumes as the killed node's
    does: the test above)."""
    markers = tmp_path / "markers"
    hold = hold_env(tmp_path / "hold", markers)
    args = _run_args(tmp_path, synthetic_root, "--dist-timeout", "1")
    with torchrun_nodes(args, tmp_path / "torchrun", node_env=({}, hold)) as nodes:
        held_pid = _until_held(nodes, markers, tmp_path / "results")
        nodes[1].signal(signal.SIGSTOP)
        why = "no answer from another process within the collective timeout of 60 s"
        _survivor_says_interrupted(nodes[0], tmp_path / "results", why)
        assert alive({held_pid: nodes[1].known[held_pid]}) == [held_pid]  # the frozen node is still there
