"""pytest-benchmark suite: one training step and one inference batch per case, on synthetic tensors.

The CPU variant runs every case at a small input (64x64, batch 2; case 5's instance norm needs 128) so the whole
suite stays within a couple of minutes on 2 cores; the CUDA variant runs the study's 256x256 at batch 6 and skips
without a GPU. The steps come from `hgbench.run.bench.make_workload`, the same code `hgbench bench` times, so the two
agree on what a "step" is. Run with ``make bench`` (``pytest benchmarks --benchmark-only``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from hgbench.run.bench import ModeSettings, make_workload
from hgbench.spec.cases import STUDY_CASES, get_spec

from .conftest import rounds

CASES: tuple[str, ...] = (*STUDY_CASES, "hg1")
SMOKE_CASES = ("2", "hg1")  # the smallest 8-stack case and the 1-stack reference: seconds on a CPU
CPU_RES, CPU_BATCH, CPU_ROUNDS = 64, 2, 3
CUDA_RES, CUDA_BATCH, CUDA_ROUNDS = 256, 6, 10


def _synced(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """pytest-benchmark times on the host: on CUDA the step must wait for its own kernels to count them."""
    if device.type != "cuda":
        return fn

    def run() -> None:
        fn()
        torch.cuda.synchronize(device)

    return run


def _bench(benchmark, case: str, phase: str, device: torch.device, *, res: int, batch: int, rounds: int) -> None:  # noqa: ANN001
    spec = get_spec(case)
    res = max(res, spec.min_input_res())
    work = make_workload(spec, ModeSettings(), batch=batch, input_res=res, device=device)
    if phase == "train":
        work.model.train()
        step = work.train_step
    else:
        work.model.eval()
        step = work.infer_step
    benchmark.group = f"{phase}-{device.type}"
    benchmark.extra_info.update(
        {
            "case": spec.name,
            "phase": phase,
            "batch": batch,
            "precision": "fp32",
            "device": str(device),
            "input_res": res,
            "threads": torch.get_num_threads(),
        }
    )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    benchmark.pedantic(_synced(step, device), warmup_rounds=1, rounds=rounds, iterations=1)


@pytest.mark.parametrize("phase", ["train", "infer"])
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.smoke) if c in SMOKE_CASES else c for c in CASES])
def test_step_cpu(benchmark, case: str, phase: str) -> None:  # noqa: ANN001
    _bench(benchmark, case, phase, torch.device("cpu"), res=CPU_RES, batch=CPU_BATCH, rounds=rounds(CPU_ROUNDS))


@pytest.mark.cuda
@pytest.mark.parametrize("phase", ["train", "infer"])
@pytest.mark.parametrize("case", CASES)
def test_step_cuda(benchmark, cuda_device: torch.device, case: str, phase: str) -> None:  # noqa: ANN001
    _bench(benchmark, case, phase, cuda_device, res=CUDA_RES, batch=CUDA_BATCH, rounds=CUDA_ROUNDS)
