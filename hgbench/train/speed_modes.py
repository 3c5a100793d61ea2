"""Speed modes: the ladder of settings `hgbench bench` compares, and the rule for `hgbench run --fast` where it does not
measure (`hgbench.train.mode_probe` measures them on the CPU).

    eager (fp32, the study's setting) -> + channels_last -> + bf16 autocast -> + torch.compile -> + CUDA graphs

Each rung adds one setting to the one below where the device supports it; a rung that does not apply is skipped with
its reason (no native bf16, no C++ compiler for inductor on the CPU, no CUDA for graphs). Pure decisions about the
device: nothing here runs a model (on a GPU, whether torch.compile works is found by compiling a tiny function:
`hgbench.train.compile_probe`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from hgbench.errors import HGBenchError
from hgbench.measure.environment import cpu_has_native_bf16
from hgbench.train import compile_probe

MODES: tuple[str, ...] = ("eager", "channels_last", "bf16", "compile", "cudagraphs")
# Warm-up calls a mode needs before its times mean anything: compile traces on the first call (and again for
# backward), and CUDA graphs (torch.compile mode="reduce-overhead") record on a later call than the first.
MIN_WARMUP: dict[str, int] = {"eager": 1, "channels_last": 1, "bf16": 1, "compile": 2, "cudagraphs": 3}


@dataclass(frozen=True)
class ModeSettings:
    """What one benchmark mode turns on."""

    channels_last: bool = False  # model and input in NHWC memory format
    amp: bool = False  # bf16 autocast around the forward pass
    compile: bool = False  # torch.compile(model)
    cudagraphs: bool = False  # torch.compile(model, mode="reduce-overhead"): CUDA graphs (CUDA only)

    def label(self, float32: str = "fp32") -> str:
        """E.g. ``fp32`` or ``channels_last+bf16+compile``; `float32` names what float32 convolutions compute in
        (`hgbench.measure.environment.float32_label`): on a TF32 GPU ``tf32`` or ``channels_last+tf32``."""
        on = [k if k != "amp" else "bf16" for k, v in asdict(self).items() if v]
        if self.cudagraphs and "compile" in on:
            on.remove("compile")  # "cudagraphs" already implies compile(mode="reduce-overhead")
        if not self.amp and float32 != "fp32":
            on.append(float32)  # without autocast the convolutions are float32 ones, computed as `float32` says
        return "+".join(on) if on else "fp32"


@dataclass(frozen=True)
class ModePlan:
    """A requested mode resolved for a device: the settings to run, or why it does not apply."""

    mode: str  # one of MODES
    settings: ModeSettings | None  # None when skipped
    skip_reason: str | None = None  # one line; set exactly when settings is None


def parse_modes(text: str | Sequence[str]) -> list[str]:
    """Split and check a comma-separated mode list; ``all`` means every mode.

    Raises:
        HGBenchError: an unknown or empty mode list (one line, listing the valid modes).
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    modes = [m.strip().lower().replace("-", "_") for m in items if m.strip()]
    if modes == ["all"]:
        return list(MODES)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        what = f"unknown mode {bad[0]!r}" if bad else "no mode given"
        raise HGBenchError(f"{what}; valid modes: {', '.join(MODES)} (or all)")
    return list(dict.fromkeys(modes))  # keep the user's order, drop repeats


def _bf16_reason(device: torch.device) -> str | None:
    """None if bf16 autocast runs natively on the device, else why the bf16 rung does not apply."""
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)  # the keyword since torch 2.3
        return None if native else "this GPU has no native bf16 (needs compute capability 8.0+)"
    if cpu_has_native_bf16():
        return None
    return "this CPU has no native bf16 (AVX512-BF16/AMX); autocast would emulate it and only measure the emulation"


def _compile_reason(device: torch.device) -> str | None:
    """None if torch.compile can run here, else why not: inductor on the CPU needs a C++ compiler; on a GPU, Triton
    needs a C compiler and Python.h, which `hgbench.train.compile_probe` finds out by compiling a tiny function
    (seconds, once per process). Where the GPU is absent (a sweep's driver planning for its workers) compile is assumed
    to work.
    """
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "torch.compile on the CPU needs a C++ compiler (none found on PATH)"
    if device.type == "cuda" and torch.cuda.is_available():
        return compile_probe.probe_compile(device).reason
    return None


def plan_modes(modes: Sequence[str], device: str | torch.device) -> list[ModePlan]:
    """Resolve each requested mode to the settings it runs on this device (the ladder, minus what does not apply).

    The ladder is cumulative: ``bf16`` = channels_last + bf16, ``compile`` = channels_last + bf16 + compile,
    ``cudagraphs`` = all of them with CUDA graphs. A setting the device lacks is dropped from the higher rungs (so
    ``compile`` on a CPU without native bf16 is channels_last + compile), and the rung that introduces it is skipped.
    """
    dev = torch.device(device)
    bf16_why = _bf16_reason(dev)
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise HGBenchError(f"unknown mode {bad[0]!r}; valid modes: {', '.join(MODES)}")
    # Probed only where a compiled mode is asked for (on a GPU the probe compiles a function).
    compile_why = _compile_reason(dev) if {"compile", "cudagraphs"} & set(modes) else None
    plans = []
    for mode in modes:
        rung = MODES.index(mode)
        amp = rung >= 2 and bf16_why is None
        why = None
        if mode == "bf16":
            why = bf16_why
        elif mode == "compile":
            why = compile_why
        elif mode == "cudagraphs":
            why = "CUDA graphs need a CUDA device" if dev.type != "cuda" else compile_why
        if why is not None:
            plans.append(ModePlan(mode, None, why))
            continue
        settings = ModeSettings(channels_last=rung >= 1, amp=amp, compile=rung >= 3, cudagraphs=rung >= 4)
        plans.append(ModePlan(mode, settings))
    return plans


def best_mode(device: str | torch.device) -> dict[str, bool | str]:
    """The fast-path settings by rule: what ``hgbench run --fast`` uses where it does not measure.

    CUDA: channels_last + bf16 autocast (where native) + torch.compile, and JPEGs decoded and cropped on the GPU in
    batches (nvjpeg), which takes the decode, the study's bottleneck, off the few host cores. CPU (only where the
    probe of `hgbench.train.mode_probe`, which measures the modes, is off or cannot run): channels_last, plus bf16
    autocast where the CPU computes bf16 natively (emulated bf16 is slower); compile's first step costs minutes
    for an 8-stack model (see shared/spec/environment.md), which a run of a few epochs never earns back, and
    decoding in the main process would only serialise what the workers do in parallel.

    Planned where the GPU is absent (a sweep's driver on a login node, for its GPU workers), CUDA's rule assumes
    native bf16: the GPUs it runs on (Ampere and newer) have it.

    Returns:
        ``{"channels_last": bool, "amp": bool, "compile": bool, "decode": "workers" | "device"}``.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        amp = _bf16_reason(dev) is None if torch.cuda.is_available() else True
        compile_ = _compile_reason(dev) is None
        return {"channels_last": True, "amp": amp, "compile": compile_, "decode": "device"}
    return {"channels_last": True, "amp": _bf16_reason(dev) is None, "compile": False, "decode": "workers"}
