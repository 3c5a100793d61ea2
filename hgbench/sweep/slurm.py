"""What a sweep asks Slurm for: each job's resources (`SlurmRequest`) and the submitit parameters they become.

Everything a real cluster needs besides the run itself: the partition, the GPUs (as ``--gpus-per-node=N``, or as
``--gres=gpu:N`` where a cluster has no ``--gpus-per-node``), CPUs, memory, the time limit, and any other sbatch
option a site requires (account, QOS, constraint...) passed through as given (``--slurm-extra KEY=VALUE``, submitit's
``slurm_additional_parameters``). The job runs the driver's own Python (submitit's default: ``sys.executable``), so a
shared filesystem must hold the driver's virtual environment at the same path on every node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hgbench.errors import HGBenchError

GPU_FLAGS = ("gpus-per-node", "gres")
# sbatch options --slurm-extra may not set: those hgbench's own flags set (the flag to use instead), and those submitit
# needs as it writes them (its job array, log files, open mode and checkpoint signal).
OWN_OPTIONS = {
    "partition": "--slurm-partition",
    "time": "--slurm-time",
    "gpus-per-node": "--slurm-gpus-per-run",
    "cpus-per-task": "--cpus-per-run",
    "mem": "--slurm-mem",
}
SUBMITIT_OPTIONS = ("array", "output", "error", "open-mode", "signal", "job-name", "wrap")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_MEMORY = re.compile(r"^[0-9]+[KMGTkmgt]?$")
# Slurm's job states in which a job whose run was interrupted runs (or will run) it again: requeued.
RUNS_AGAIN = frozenset(
    {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RUNNING", "CONFIGURING", "RESIZING", "SUSPENDED"}
)


@dataclass(frozen=True)
class SlurmRequest:
    """What each job of a sweep asks Slurm for."""

    partition: str | None = None  # None: the cluster's default partition
    time_min: int = 1440
    gpus: int = 1
    gpus_as: str = "gpus-per-node"  # or "gres": --gres=gpu:N
    cpus: int = 1  # --cpus-per-task, and the torch threads the run uses
    memory: str | None = None  # --mem as sbatch takes it (16G, 500M); None: the partition's default
    extra: tuple[tuple[str, str], ...] = ()  # other sbatch options, (key, value), as --slurm-extra gave them
    array_parallelism: int = 16

    def __post_init__(self) -> None:
        if self.gpus_as not in GPU_FLAGS:
            raise HGBenchError(f"--slurm-gpus-as {self.gpus_as!r}: use one of {', '.join(GPU_FLAGS)}")
        if self.gpus and self.gpus_as == "gres" and any(key == "gres" for key, _ in self.extra):
            raise HGBenchError(
                "--slurm-extra gres=...: with --slurm-gpus-as gres the GPUs are already --gres=gpu:N; give every "
                "resource in the one --slurm-extra gres=... with --slurm-gpus-per-run 0, or ask for the GPUs alone"
            )

    def parameters(self) -> dict[str, Any]:
        """submitit's parameters (`AutoExecutor.update_parameters`) for these jobs on Slurm."""
        params: dict[str, Any] = {
            "name": "hgbench-sweep",
            "timeout_min": self.time_min,
            "cpus_per_task": self.cpus,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.gpus and self.gpus_as == "gres":
            params["slurm_gres"] = f"gpu:{self.gpus}"
        elif self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.memory:
            params["slurm_mem"] = self.memory
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        return params

    def describe(self) -> str:
        """``each asking for 1 GPU (--gres=gpu:1), 2 CPU, 16G memory and 60 min, account=lab``: the request in words."""
        gpus = f"{self.gpus} GPU" + (f" (--gres=gpu:{self.gpus})" if self.gpus and self.gpus_as == "gres" else "")
        memory = f", {self.memory} memory" if self.memory else ""
        extra = "".join(f", {key}={value}" for key, value in self.extra)
        return f"each asking for {gpus}, {self.cpus} CPU{memory} and {self.time_min} min{extra}"


def parse_memory(text: str | None) -> str | None:
    """``--slurm-mem`` as sbatch's ``--mem`` takes it (an integer and a unit K, M, G or T; megabytes without one)."""
    if text is None:
        return None
    if not _MEMORY.match(text):
        raise HGBenchError(f"--slurm-mem {text!r}: give a size as sbatch's --mem takes it, such as 16G or 500M")
    return text.upper()


def parse_extra(texts: Sequence[str] | None) -> tuple[tuple[str, str], ...]:
    """``--slurm-extra KEY=VALUE`` options as (key, value) pairs, the key as sbatch spells it (``qos``, ``account``).

    Raises:
        HGBenchError: not KEY=VALUE, a key that is not an option name, the same key twice, or an option hgbench or
            submitit sets itself (a hint names hgbench's own flag for it).
    """
    pairs: dict[str, str] = {}
    for text in texts or ():
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key) or not value or "\n" in value:
            raise HGBenchError(f"--slurm-extra {text!r}: give KEY=VALUE, an sbatch option and its value (qos=high)")
        name = key.lower().replace("_", "-")
        if name in OWN_OPTIONS:
            raise HGBenchError(f"--slurm-extra {text!r}: use {OWN_OPTIONS[name]} for the job's {name}")
        if name in SUBMITIT_OPTIONS:
            raise HGBenchError(f"--slurm-extra {text!r}: submitit sets --{name} itself (its array, logs, signal)")
        if name in pairs:
            raise HGBenchError(f"--slurm-extra {key} is given twice")
        pairs[name] = value
    return tuple(pairs.items())


def sbatch_error(exc: BaseException) -> str:
    """sbatch's first error line (the most precise) out of submitit's report of a refused submission, else its last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("sbatch: error")]
    return said[0] if said else lines[-1] if lines else type(exc).__name__
