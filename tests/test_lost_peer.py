"""A torchrun job that loses a process: the others stop with one line, the run's record says interrupted (never
failed) with the torchrun command that continues it, and a process lost after the run finished leaves its record as
it is. gloo's own errors are recognised from a real two-process group; the runner's handling runs as rank 0 of two
(`NcclLikeGroup` on the CPU mirrors the other rank). tests/cluster/test_torchrun_multinode.py runs the real thing:
two `torchrun --nnodes 2` on this machine, one of them killed or frozen."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from hgbench.cli import main
from hgbench.spec.config import RunConfig
from hgbench.train import distributed
from hgbench.train.distributed import DistContext, peer_lost

TWO = DistContext(rank=0, world_size=2, timeout=timedelta(minutes=1))
# gloo's words in torch 2.14 (tcp/pair.cc, unbound_buffer.cc), as a collective raises them.
CLOSED = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
    "[10.0.0.2]:1966. This is typically caused by a remote worker crashing. Check the logs of the remote worker."
)
TIMED_OUT = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 60000ms for "
    "recv operation to complete"
)

RANK_1 = """
import os, sys, datetime, torch, torch.distributed as dist
store = dist.FileStore(sys.argv[1], 2)
dist.init_process_group("gloo", store=store, rank=1, world_size=2, timeout=datetime.timedelta(minutes=5))
dist.all_reduce(torch.ones(1))
os._exit(9)  # gone, as a killed process or node is: its connections close
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a second process joins a gloo group")
def test_gloos_error_for_a_process_that_died_is_a_lost_peer(tmp_path: Path) -> None:
    """A real gloo group of two: rank 1 dies after one all-reduce; rank 0's next one fails, and `peer_lost` says so."""
    rank_1 = subprocess.Popen([sys.executable, "-c", RANK_1, str(tmp_path / "store")])
    store = dist.FileStore(str(tmp_path / "store"), 2)
    dist.init_process_group("gloo", store=store, rank=0, world_size=2, timeout=timedelta(minutes=5))
    try:
        dist.all_reduce(torch.ones(1))
        with pytest.raises(RuntimeError) as raised:
            dist.all_reduce(torch.ones(1))  # fails once rank 1 is gone (waits for it to go: no race)
    finally:
        dist.destroy_process_group()
        rank_1.wait(timeout=300)
    said = peer_lost(TWO, raised.value)
    assert said is not None
    assert said.startswith("another process stopped (Connection ")


def test_a_lost_peer_is_told_from_other_errors() -> None:
    assert peer_lost(TWO, RuntimeError(CLOSED)) == "another process stopped (Connection closed by peer [10.0.0.2]:1966)"
    assert peer_lost(TWO, RuntimeError(TIMED_OUT)) == (
        "no answer from another process within the collective timeout of 60 s "
        "(Timed out waiting 60000ms for recv operation to complete)"
    )
    assert peer_lost(TWO, RuntimeError("Application timeout caused pair closure")).startswith("no answer")
    assert peer_lost(TWO, dist.DistNetworkError("failed to recv, got 0 bytes")).startswith("another process stopped")
    assert peer_lost(DistContext(), RuntimeError(CLOSED)) is None  # one process has no peers
    assert peer_lost(TWO, ConnectionResetError(104, "Connection reset by peer")) is None  # this process's own pipe
    assert peer_lost(TWO, RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


def test_the_collective_timeout_is_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """`hgbench run --dist-timeout 2` reaches the process group; without it, the default outwaits rank 0's final
    inference pass (test_distributed.py)."""
    calls: list[dict] = []
    for key, value in {"RANK": "0", "WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(distributed, "_first_collective", lambda ctx, backend: None)  # no group was made to reduce in
    ctx = distributed.init_distributed("cpu", timeout=timedelta(minutes=2))
    assert calls[0]["timeout"] == ctx.timeout == timedelta(minutes=2)
    assert distributed.init_distributed("cpu").timeout == distributed.GROUP_TIMEOUT


@pytest.fixture
def rank_0_of_two(monkeypatch: pytest.MonkeyPatch):
    """This process as rank 0 of a two-node torchrun job (one process per node), the other rank mirrored."""
    from helpers.cuda_standin import NcclLikeGroup

    group = NcclLikeGroup(torch.device("cpu")).install(monkeypatch)
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_WORLD_SIZE": "2"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return group


def _argv(tiny: RunConfig, *extra: str) -> list[str]:
    return [
        *("run", "--case", "hg1", "--device", "cpu", "--workers", "0", "--data-dir", tiny.data_dir),
        *("--out", tiny.out, "--checkpoint-dir", tiny.checkpoint_dir, "--quiet"),
        *("--batch", "4", "--input-res", "64", "--limit-train", "8", "--limit-val", "6", "--no-flip-test"),
        *extra,
    ]


def test_a_peer_lost_mid_run_interrupts_the_run_with_one_line_and_the_torchrun_to_continue(
    tiny: RunConfig, rank_0_of_two, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """gloo's error in epoch 2 (the other node killed): not a failed run but an interrupted one, epoch 1 kept, and the
    line names the torchrun job that continues it, since one process alone would refuse its checkpoint."""
    import hgbench.run.runner as runner

    real = runner.train_one_epoch

    def peer_dies_in_epoch_2(*args: object, epoch: int, **kwargs: object):
        if epoch == 2:
            raise RuntimeError(CLOSED)  # as DDP's all-reduce in backward raises it
        return real(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(runner, "train_one_epoch", peer_dies_in_epoch_2)
    assert main(_argv(tiny, "--epochs", "2", "--dist-timeout", "1.5")) == 5
    out, err = capsys.readouterr()
    assert rank_0_of_two.inits[0]["timeout"] == timedelta(minutes=1.5)
    [path] = Path(tiny.out).rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "interrupted"
    assert record["config"]["world_size"] == 2
    assert [e["epoch"] for e in record["results"]["epochs"]] == [1]
    why = "another process stopped (Connection closed by peer [10.0.0.2]:1966) during epoch 2"
    assert record["status_reason"] == f"{why}; epochs 1-1 are checkpointed; continue with --resume"
    assert err == f"hgbench: error: {why}; the run is interrupted\n"  # one line, no traceback
    assert (
        f"record {path}; continue with: torchrun <this job's own flags: 2 nodes, 1 process each> -m hgbench.cli run "
        f"--case hg1 --resume {path}\n"
    ) in out


def test_a_peer_lost_after_the_run_finished_leaves_the_finished_record(
    tiny: RunConfig, rank_0_of_two, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The other rank waits at the last barrier while rank 0 alone runs the final pass; lost then, it takes nothing
    from a run that finished: rank 0's record stays finished and it exits as a finished run does."""
    lost_at: list[str] = []

    def barrier(*args: object, **kwargs: object) -> None:
        records = [json.loads(p.read_text()) for p in Path(tiny.out).rglob("*.json")]
        if any(r["status"] == "finished" for r in records):  # the first barrier after rank 0 finished the record
            lost_at.append("after the finished record")
            raise RuntimeError(CLOSED)

    monkeypatch.setattr(dist, "barrier", barrier)
    assert main(_argv(tiny, "--epochs", "1")) == 0
    capsys.readouterr()
    [path] = Path(tiny.out).rglob("*.json")
    assert lost_at == ["after the finished record"]  # the peer was lost, and only once: at the job's last barrier
    assert json.loads(path.read_text())["status"] == "finished"
