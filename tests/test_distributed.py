"""DDP on CPU (gloo): synchronised BatchNorm and global-batch sampling make W processes compute one process's step."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from hgbench.errors import HGBenchError
from hgbench.spec.cases import get_spec
from hgbench.spec.config import RunConfig
from hgbench.train import distributed
from hgbench.train.distributed import DistContext, all_gather_objects, all_reduce_sum, init_distributed
from hgbench.train.sampling import GlobalBatchSampler, ShardSampler

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


def _torchrun_gradients(out: Path, *extra: str) -> None:
    """`ddp_gradients.py` on two gloo processes (rank 0 writes `out`)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",  # a free port: another suite on the machine may hold any fixed one
            str(SCRIPT),
            str(out),
            *extra,
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,  # liveness only: two processes importing torch on a loaded machine take minutes
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process_step(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One process's float64 step on the whole global batch: what every DDP form must compute."""
    out = tmp_path_factory.mktemp("one") / "one.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(SCRIPT), str(out)], env=env, check=True, timeout=600)
    return torch.load(out)


@pytest.fixture(scope="module")
def standin_gpu_step(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two gloo processes, each on a stand-in GPU of its own: the BatchNorm and DDP a CUDA run takes."""
    out = tmp_path_factory.mktemp("two-gpus") / "two.pt"
    _torchrun_gradients(out, "--standin")
    return torch.load(out)


def _assert_same_step(a: dict, b: dict) -> None:
    overall = max(g.abs().max().item() for g in a["grads"].values())
    for name, grad in a["grads"].items():
        # Biases that feed a BatchNorm have a true gradient of zero: floor the scale at the model's overall scale.
        scale = max(grad.abs().max().item(), 1e-3 * overall)
        assert (grad - b["grads"][name]).abs().max().item() / scale < 1e-6, name  # a wrong formula is off by ~1e-2
    for name, buf in a["buffers"].items():  # running statistics move the same way too
        assert torch.allclose(buf.double(), b["buffers"][name].double(), rtol=1e-6, atol=1e-9), name


@pytest.mark.slow
def test_two_gloo_processes_compute_the_single_process_gradient(tmp_path: Path, one_process_step: dict) -> None:
    _torchrun_gradients(tmp_path / "two.pt")
    _assert_same_step(one_process_step, torch.load(tmp_path / "two.pt"))


@pytest.mark.slow
def test_two_processes_on_gpus_compute_the_single_process_gradient(
    one_process_step: dict, standin_gpu_step: dict
) -> None:
    """The BatchNorm a CUDA run uses: its batch statistics over both ranks, running statistics and gradients are one
    process's with the same global batch."""
    assert not any(standin_gpu_step["violations"]), standin_gpu_step["violations"]
    _assert_same_step(one_process_step, standin_gpu_step)


@pytest.mark.slow
def test_a_ddp_training_step_on_gpus_never_synchronises_the_host(standin_gpu_step: dict) -> None:
    """torch's SyncBatchNorm reads the gathered counts back to the host at every BatchNorm (a boolean-mask index):
    the GPU queue drained hundreds of times a step. hgbench's all-reduce BatchNorm must not, nor anything else in a
    DDP step (forward, loss, backward with DDP's all-reduce, Adam), on either rank."""
    assert standin_gpu_step["syncs"] == []  # rank 0's float64 forward and backward
    for rank, steps in enumerate(standin_gpu_step["steps"]):
        assert [len(step) for step in steps["per_step"]] == [0, 0], (rank, steps["per_step"][0][:3])
        assert steps["loop_error"] is None, (rank, steps["loop_error"])
        # The epoch's own, after its loop: the timer's synchronisation and the mean loss read once.
        assert len(steps["epoch"]) <= 2, (rank, steps["epoch"])


@pytest.mark.slow
def test_the_standin_sees_torchs_sync_batchnorm_synchronise_the_host(
    one_process_step: dict, standin_gpu_step: dict
) -> None:
    """What the test above would catch: torch's SyncBatchNorm, its CUDA kernels run on the CPU by the stand-in,
    computes the same step and synchronises the host at every BatchNorm of every forward: its three boolean-mask
    indices (counts, means, inverse deviations) each size their output by a nonzero read back to the host."""
    torch_bn = standin_gpu_step["torch_sync_batchnorm"]
    _assert_same_step(one_process_step, torch_bn)
    assert torch_bn["norms"] > 20
    assert torch_bn["syncs"] == ["Tensor.__getitem__ with a boolean mask (a nonzero)"] * 3 * torch_bn["norms"]


def test_the_process_group_outwaits_rank_0s_final_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other ranks wait at a barrier while rank 0 alone times the inference passes: torch's default 10 minutes
    can run out on a slow host and kill a run whose training is done."""
    from datetime import timedelta

    calls: list[dict] = []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda t, **kwargs: t.mul_(2))  # the other rank's 1
    init_distributed("cpu")
    assert calls[0]["backend"] == "gloo"
    assert calls[0]["timeout"] >= timedelta(minutes=30)


def test_compile_under_torchrun_is_dropped_before_the_run_is_named(
    tiny: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--compile` on several processes runs without torch.compile (as --fast does there): the config the record
    stores and the identity a sweep's skip check computes both say so, so the run is the one without --compile."""
    from hgbench.run.plan import planned_identity, resolve_config
    from hgbench.train.mode_probe import choose_fast_mode

    cpu = torch.device("cpu")
    assert resolve_config(replace(tiny, compile=True, world_size=2), cpu).compile is False
    assert resolve_config(replace(tiny, compile=True), cpu).compile is True  # one process compiles as asked
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert planned_identity(replace(tiny, compile=True)) == planned_identity(tiny)
    fast = choose_fast_mode(torch.device("cuda"), get_spec("hg1"), batch=2, input_res=64, world_size=2)
    assert fast.probe["reason"] == distributed.COMPILE_UNDER_DDP  # the one reason, for --fast and --compile


def _torchrun_env(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    """What torchrun sets for rank 0 of `world` processes, with a free port for the group's store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "WORLD_SIZE": str(world), "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)


def test_a_one_process_torchrun_job_joins_its_group_and_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`torchrun --nproc_per_node 1` (gpu-check's NCCL step): the process group is created and a collective goes
    through its backend, though the run itself needs none; the group is left when the run ends."""
    import torch.distributed as dist

    _torchrun_env(monkeypatch, 1)
    reduced: list[torch.Tensor] = []
    real = dist.all_reduce
    monkeypatch.setattr(distributed.dist, "all_reduce", lambda t, **kw: (reduced.append(t), real(t, **kw))[1])
    ctx = init_distributed("cpu")
    try:
        assert dist.is_initialized()
        assert dist.get_backend() == "gloo"
        assert [t.tolist() for t in reduced] == [[1.0]]
        assert not ctx.enabled  # one process: no DDP, no synchronised BatchNorm
    finally:
        distributed.shutdown(ctx)
    assert not dist.is_initialized()


def test_a_group_whose_first_all_reduce_is_wrong_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.cuda_standin import NcclLikeGroup

    NcclLikeGroup(torch.device("cpu")).install(monkeypatch)  # answers as if there were two ranks
    _torchrun_env(monkeypatch, 3)
    with pytest.raises(HGBenchError, match=r"^the gloo process group's first all-reduce gave 2, not 3$"):
        init_distributed("cpu")


def test_the_cpu_conversion_keeps_the_parameters_and_buffers() -> None:
    """As `nn.SyncBatchNorm.convert_sync_batchnorm` does: an optimiser or a reference made before the conversion
    still points at what the network trains and updates."""
    from hgbench.models import build_model
    from hgbench.spec.cases import get_spec
    from hgbench.train.distributed import convert_sync_batchnorm

    model = build_model(get_spec("hg1"))
    params = {n: p for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    converted = convert_sync_batchnorm(model)
    assert any(isinstance(m, distributed.AllReduceBatchNorm2d) for m in converted.modules())
    assert all(p is params[n] for n, p in converted.named_parameters())
    assert all(b is buffers[n] for n, b in converted.named_buffers())


@pytest.fixture
def one_process_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A real gloo group of one process, its BatchNorms made to synchronise as if there were more (the all-reduce
    then sums one row): the global BatchNorm's arithmetic, in one process."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    monkeypatch.setattr(distributed, "_sync_world", lambda: 2)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_the_all_reduce_batchnorm_is_batchnorm(one_process_group: None, momentum: float | None) -> None:
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(5, momentum=momentum).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 2)
        ref.bias.uniform_(-1, 1)
    ours = distributed.convert_sync_batchnorm(nn.Sequential(copy.deepcopy(ref)))[0]
    assert isinstance(ours, distributed.AllReduceBatchNorm2d)
    for _ in range(2):  # the running statistics of two steps (the cumulative average without momentum)
        x = (torch.randn(4, 5, 6, 6, dtype=torch.float64) * 3 + 50).requires_grad_()  # far from zero: no cancellation
        dy = torch.randn(4, 5, 6, 6, dtype=torch.float64)
        a, b = ref(x), ours(x)
        torch.testing.assert_close(b, a)
        ga = torch.autograd.grad(a, (x, ref.weight, ref.bias), dy)
        gb = torch.autograd.grad(b, (x, ours.weight, ours.bias), dy)
        for u, v in zip(ga, gb, strict=True):
            torch.testing.assert_close(v, u)
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(getattr(ours, name), buf)


def test_the_all_reduce_batchnorm_under_bf16_keeps_dtype_and_layout(one_process_group: None) -> None:
    """Under autocast a BatchNorm gets bf16 activations: statistics in float32, output and gradient in bf16, in the
    input's memory layout (channels_last)."""
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(8)
    ours = distributed.convert_sync_batchnorm(nn.Sequential(copy.deepcopy(ref)))[0]
    x = torch.randn(4, 8, 6, 6).to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = ours(x)
    assert y.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=torch.channels_last)
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert gx.dtype == torch.bfloat16
    assert gx.is_contiguous(memory_format=torch.channels_last)
    expected = ref(x.detach().float())
    torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.02)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-3, rtol=1e-2)


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


def test_the_group_is_left_only_once_ddp_wrappers_in_reference_cycles_are_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DDP wrapper kept alive by a reference cycle (its hooks, a closure) would otherwise be destroyed after its
    process group, at the interpreter's exit, where a torchrun rank once died of a C++ terminate (SIGABRT) after a
    finished run and failed the job."""
    import gc
    import weakref

    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    wrapped = nn.parallel.DistributedDataParallel(nn.Linear(2, 2))
    wrapped.cycle = [wrapped]  # unreachable once dropped, freed only by the cycle collector
    alive = weakref.ref(wrapped)
    del wrapped
    seen_at_destroy: list[bool] = []
    destroy = dist.destroy_process_group
    monkeypatch.setattr(distributed, "launched_by_torchrun", lambda: True)
    def destroy_and_note() -> None:
        seen_at_destroy.append(alive() is not None)
        destroy()

    monkeypatch.setattr(distributed.dist, "destroy_process_group", destroy_and_note)
    gc.disable()  # the collector must not run by chance between the del and the shutdown
    try:
        distributed.shutdown(DistContext())
    finally:
        gc.enable()
    assert seen_at_destroy == [False]
    assert not dist.is_initialized()
