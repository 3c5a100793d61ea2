"""The GPU checks: each one's name, the manual's claim it measures (quoted), its time budget and whether it needs CUDA.

The budgets add up to `TOTAL_BUDGET_S` (8 minutes on one H100/H200, torch import and CUDA start-up included); the
runner also holds the whole check to that total. Three steps compile case 1 with torch.compile (`compiles`), whose
first compile of an 8-stack network is most of their time: they share one compile cache (the runner points inductor
and Triton at a folder of the check's own, so `data_wait` finds `fast_vs_eager`'s batch-6 graphs compiled), report
their compile seconds apart from their figures, and besides their own budget get the seconds the steps before them
left unspent (`conv_peak`, which compiles batch 32 afresh, comes last of them and gets the most). Standard library
only: the runner reads this before it knows whether torch imports.
"""

from __future__ import annotations

from dataclasses import dataclass

TOTAL_BUDGET_S = 480.0  # the whole check, every step included


@dataclass(frozen=True)
class Step:
    """One check, run as ``python -m hgbench.gpu_check.step <name>`` (or `command`) under its own budget."""

    name: str
    claim: str  # README's or the manual's words, quoted (tests/test_gpu_check.py checks they say them)
    budget_s: float  # wall seconds, process start to exit; then the step is killed and reported "timeout"
    needs_cuda: bool = True  # skipped, "no CUDA device", when the environment step found none
    command: tuple[str, ...] | None = None  # None: this package's own step entry (tests give fake commands)
    compiles: bool = False  # mostly torch.compile's first compile: also gets what earlier steps left of their budgets


STEPS: tuple[Step, ...] = (
    Step(
        "environment",
        "hgbench supports torch 2.11 to 2.14 (torchvision 0.26 to 0.29)",
        25,
        needs_cuda=False,
    ),
    Step(
        "tiny_run",
        "evaluates a case while timing data loading and compute apart (CUDA events on GPU) and sampling the GPU "
        "through NVML",
        40,
    ),
    Step(
        "event_timer",
        "compute seconds are the forward, loss, backward and optimiser step on the device's own clock (CUDA events "
        "recorded without synchronising and read once at the end of the epoch",
        20,
    ),
    Step(
        "nvml_energy",
        "energy per epoch from the GPU's total-energy counter (or the integral of power where the counter is missing)",
        30,
    ),
    Step("fast_vs_eager", "case 1 at batch 6, fast vs eager >= 3x images/s", 95, compiles=True),
    Step(
        "decode_crops",
        "The samples are the worker path's own (same random draws, same crop matrix, same targets)",
        30,
    ),
    Step("data_wait", "data wait < 5% of an epoch", 70, compiles=True),
    Step("conv_peak", ">= 40% of the measured bf16 convolution peak at batch 32", 60, compiles=True),
    Step(
        "torchrun_nccl",
        "The runner runs under `torchrun` with DistributedDataParallel (NCCL on GPU, gloo on CPU)",
        35,
    ),
    Step(
        "cuda_tests",
        "The CUDA-event timing, NVML telemetry, nvjpeg decoding and CUDA benchmark paths are written and tested for "
        "their CPU fallbacks; their CUDA tests skip without a GPU",
        75,
    ),
)


def step_named(name: str) -> Step:
    """The catalogue's step of that name (KeyError naming the known ones otherwise)."""
    for step in STEPS:
        if step.name == name:
            return step
    raise KeyError(f"no GPU check named {name!r}; known: {', '.join(s.name for s in STEPS)}")
