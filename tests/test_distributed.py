"""DDP on CPU (gloo): synchronised BatchNorm and global-batch sampling make W processes compute one process's step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hgbench import distributed
from hgbench.distributed import DistContext, all_gather_objects, all_reduce_sum, init_distributed
from hgbench.sampling import GlobalBatchSampler, ShardSampler

SCRIPT = Path(__file__).parent / "helpers" / "ddp_gradients.py"


def test_global_batches_are_the_same_on_one_or_two_processes() -> None:
    one = GlobalBatchSampler(22, 4, seed=3)
    ranks = [GlobalBatchSampler(22, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    for epoch in (1, 2):
        for s in (one, *ranks):
            s.set_epoch(epoch)
        whole = list(one)
        parts = [list(s) for s in ranks]
        assert len(whole) == 20
        assert all(len(p) == 10 for p in parts)
        for b in range(5):
            assert whole[4 * b : 4 * b + 4] == parts[0][2 * b : 2 * b + 2] + parts[1][2 * b : 2 * b + 2]
    one.set_epoch(1)
    first = list(one)
    one.set_epoch(2)
    assert list(one) != first  # a new order every epoch


def test_sampler_rejects_batches_that_do_not_split() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(10, 3, world_size=2)


def test_evaluation_shards_cover_every_sample_once() -> None:
    shards = [list(ShardSampler(7, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))


def test_single_process_helpers_are_identities() -> None:
    ctx = init_distributed("cpu") if "RANK" not in os.environ else DistContext()
    assert not ctx.enabled
    assert ctx.is_main
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(all_reduce_sum(ctx, t), t)
    assert all_gather_objects(ctx, {"a": 1}) == [{"a": 1}]


@pytest.mark.slow
def test_two_gloo_processes_compute_the_single_process_gradient(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, double = tmp_path / "one.pt", tmp_path / "two.pt"
    subprocess.run([sys.executable, str(SCRIPT), str(single)], env=env, check=True, timeout=600)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # a free port: another suite on the machine may hold any fixed one
            str(SCRIPT),
            str(double),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # liveness only: two processes importing torch on a loaded machine take minutes
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = torch.load(single), torch.load(double)
    overall = max(g.abs().max().item() for g in a["grads"].values())
    for name, grad in a["grads"].items():
        # Biases that feed a BatchNorm have a true gradient of zero: floor the scale at the model's overall scale.
        scale = max(grad.abs().max().item(), 1e-3 * overall)
        assert (grad - b["grads"][name]).abs().max().item() / scale < 1e-6, name  # a wrong formula is off by ~1e-2
    for name, buf in a["buffers"].items():  # running statistics move the same way too
        assert torch.allclose(buf.double(), b["buffers"][name].double(), rtol=1e-6, atol=1e-9), name


def test_the_process_group_outwaits_rank_0s_final_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other ranks wait at a barrier while rank 0 alone times the inference passes: torch's default 10 minutes
    can run out on a slow host and kill a run whose training is done."""
    from datetime import timedelta

    calls: list[dict] = []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    init_distributed("cpu")
    assert calls[0]["backend"] == "gloo"
    assert calls[0]["timeout"] >= timedelta(minutes=30)


def test_the_cpu_conversion_keeps_the_parameters_and_buffers() -> None:
    """As `nn.SyncBatchNorm.convert_sync_batchnorm` does: an optimiser or a reference made before the conversion
    still points at what the network trains and updates."""
    from hgbench.cases import get_spec
    from hgbench.distributed import convert_sync_batchnorm
    from hgbench.models import build_model

    model = build_model(get_spec("hg1"))
    params = {n: p for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    converted = convert_sync_batchnorm(model, "cpu")
    assert any(isinstance(m, distributed.AllReduceBatchNorm2d) for m in converted.modules())
    assert all(p is params[n] for n, p in converted.named_parameters())
    assert all(b is buffers[n] for n, b in converted.named_buffers())


def _step_changes(ctx: DistContext) -> dict[str, bool]:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from ddp_step import step_changes
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return step_changes(ctx)


def _assert_every_one_moved(changed: dict[str, bool]) -> None:
    assert changed
    assert all(changed.values()), [n for n, c in changed.items() if not c]


def test_one_step_moves_every_parameter_with_a_gradient_in_one_process() -> None:
    changed = _step_changes(DistContext())
    _assert_every_one_moved(changed)


def test_one_step_moves_every_parameter_with_a_gradient_under_ddp(tmp_path: Path) -> None:
    """`build_state`'s DDP path (BatchNorm converted, the network wrapped) in a one-process gloo group: the optimiser
    must hold the parameters of the converted network."""
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        changed = _step_changes(DistContext(rank=0, world_size=2))  # enabled: build_state converts and wraps
    finally:
        dist.destroy_process_group()
    _assert_every_one_moved(changed)


@pytest.mark.slow
def test_one_step_moves_every_parameter_with_a_gradient_on_two_gloo_processes(tmp_path: Path) -> None:
    out = tmp_path / "changed.pt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            str(SCRIPT.parent / "ddp_step.py"),
            str(out),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    changed = torch.load(out)
    _assert_every_one_moved(changed)
