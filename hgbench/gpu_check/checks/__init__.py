"""The measurements behind each GPU check: one function per `hgbench.gpu_check.catalogue` step.

Each runs in a subprocess of its own (`hgbench.gpu_check.step`), measures with hgbench's own code (the runner, the
StepTimer, the NVML sampler, the bench, the loaders), writes its figures as it goes and returns pass, fail (with the
measured figure against the claim's target) or skipped (no CUDA device, no pytest). Nothing is estimated: a figure
that could not be measured is absent or null, and the verdict says why.

- `env`: the environment (Python, packages, torch's range, the machine, CUDA or not);
- `runs`: whole processes (a default `hgbench run`, torchrun over NCCL, `pytest -m cuda`);
- `clocks`: CUDA events and NVML energy against references;
- `speed`: `--fast` against eager and against the conv peak;
- `data`: device-decoded batches and the data wait;
- `_common`: what they share (the skip without CUDA, `hgbench run` in this process).
"""

from __future__ import annotations

from collections.abc import Callable

from hgbench.gpu_check.checks.clocks import event_timer, nvml_energy
from hgbench.gpu_check.checks.data import data_wait, decode_crops
from hgbench.gpu_check.checks.env import environment
from hgbench.gpu_check.checks.runs import cuda_tests, tiny_run, torchrun_nccl
from hgbench.gpu_check.checks.speed import conv_peak, fast_vs_eager
from hgbench.gpu_check.protocol import Outcome, StepContext

CHECKS: dict[str, Callable[[StepContext], Outcome]] = {
    "environment": environment,
    "tiny_run": tiny_run,
    "event_timer": event_timer,
    "nvml_energy": nvml_energy,
    "fast_vs_eager": fast_vs_eager,
    "decode_crops": decode_crops,
    "data_wait": data_wait,
    "conv_peak": conv_peak,
    "torchrun_nccl": torchrun_nccl,
    "cuda_tests": cuda_tests,
}

__all__ = ["CHECKS"]
