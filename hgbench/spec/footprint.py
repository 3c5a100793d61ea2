"""How much memory a case's network and one training batch take, computed from the spec before anything is built.

A variant file or a flag can ask for sizes no machine holds (``num_stacks = 10**9``, ``--input-res 1000000``);
building first would fail deep inside an allocator, or take the machine down. These formulas let the readers refuse
such a request in one line that says what fits. `param_count` is exact (a test checks it against every registry
case and built networks); `activation_bytes` estimates what one batch's forward pass keeps for the backward pass, the
tensors each bottleneck saves at each resolution, within a small factor of what PyTorch allocates.

Plain arithmetic: no torch, nothing of hgbench but the registry's spec, so the variant reader may use it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from hgbench.spec.geometry import HEATMAP_STRIDE

if TYPE_CHECKING:
    from hgbench.spec.cases import CaseSpec

FLOAT_BYTES = 4  # parameters, gradients, moments and activations are fp32 (bf16 activations under --amp)
_STEM = ((64, 64), (128, 128))  # layer1 and layer2 of the stem: (in channels, planes)
_STEM_CONV = 3 * 64 * 7 * 7 + 64 + 2 * 64  # the 7x7 stride-2 convolution and its BatchNorm


def _block_params(c_in: int, planes: int, steps: int, shared: bool) -> int:
    """One pre-activation bottleneck c_in -> planes -> 2*planes (every norm has a weight and a bias per channel)."""
    out = 2 * planes
    n = 2 * c_in + c_in * planes + planes  # bn1, conv1
    n += 2 * planes + 9 * planes * planes + planes  # bn2, conv2
    if steps == 4 and not shared:
        n += 2 * planes + 9 * planes * planes + planes  # bn2b, conv2b
    n += 2 * planes + planes * out + out  # bn3, conv3
    if c_in != out:
        n += c_in * out + out  # the projection skip
    return n


def _unit_params(c_in: int, planes: int, blocks: int, steps: int, shared: bool) -> int:
    """A residual unit: `blocks` bottlenecks, the first taking `c_in` channels."""
    return _block_params(c_in, planes, steps, shared) + (blocks - 1) * _block_params(2 * planes, planes, steps, shared)


def param_count(
    *,
    num_stacks: int,
    depth_sum: int,
    num_feats: int,
    num_blocks: int,
    level_units: int,
    bottleneck_steps: int,
    share_extra_step: bool,
    num_joints: int,
) -> int:
    """Parameters of the network these `CaseSpec` fields describe; `depth_sum` is the sum of every stack's depth
    (so that a variant's size can be checked before its ``depths`` are spelled out, one per stack)."""
    steps, shared, f, j, s = bottleneck_steps, share_extra_step, num_feats, num_joints, num_stacks
    ch = 2 * f
    n = _STEM_CONV + sum(_unit_params(c, p, 1, steps, shared) for c, p in _STEM)
    n += _unit_params(256, f, 1, steps, shared)  # layer3
    unit = _unit_params(ch, f, num_blocks, steps, shared)
    n += unit * (level_units * depth_sum + s)  # every hourglass level's units, one more at each innermost level
    n += s * unit  # res
    n += s * (ch * ch + ch + 2 * ch)  # fc: 1x1 conv and BatchNorm
    n += s * (ch * j + j)  # score
    n += (s - 1) * (ch * ch + ch + j * ch + ch)  # fc_ and score_
    return n


def spec_params(spec: CaseSpec) -> int:
    """`param_count` of a spec."""
    return param_count(
        num_stacks=spec.num_stacks,
        depth_sum=sum(spec.depths),
        num_feats=spec.num_feats,
        num_blocks=spec.num_blocks,
        level_units=spec.level_units,
        bottleneck_steps=spec.bottleneck_steps,
        share_extra_step=spec.share_extra_step,
        num_joints=spec.num_joints,
    )


def _unit_floats(c_in: int, planes: int, blocks: int, steps: int) -> int:
    """Floats per pixel a residual unit keeps for the backward pass: each step's norm input and convolution input,
    and each block's output."""
    first = 2 * c_in + 2 * (steps - 1) * planes + 2 * planes
    return first + (blocks - 1) * (4 * planes + 2 * (steps - 1) * planes + 2 * planes)


def activation_bytes(spec: CaseSpec, *, input_res: int, batch: int, amp: bool = False) -> int:
    """About what one training batch's forward pass keeps for the backward pass (input and targets included)."""
    steps, f, ch = spec.bottleneck_steps, spec.num_feats, 2 * spec.num_feats
    half, side = input_res // 2, input_res // HEATMAP_STRIDE
    floats = 3 * input_res**2 + 3 * 64 * half**2  # the input; the 7x7 convolution, its norm and ReLU
    floats += _unit_floats(64, 64, 1, steps) * half**2  # layer1, before the pooling
    floats += (_unit_floats(128, 128, 1, steps) + _unit_floats(256, f, 1, steps)) * side**2
    unit = _unit_floats(ch, f, spec.num_blocks, steps)
    for depth in spec.depths[: spec.stacks_run]:
        pixels = sum((side >> level) ** 2 + 2 * (side >> (level + 1)) ** 2 for level in range(depth))
        pixels += (side >> depth) ** 2  # the innermost level's extra unit
        floats += unit * (pixels + side**2)  # the hourglass, then res
        floats += (4 * ch + 2 * spec.num_joints) * side**2  # fc, the merge, the scores and their targets
    per_float = FLOAT_BYTES // 2 if amp else FLOAT_BYTES
    return batch * floats * per_float


def training_bytes(spec: CaseSpec, *, input_res: int, batch: int, optimizer: str, amp: bool = False) -> int:
    """Weights, gradients and optimiser moments (Adam two per parameter, RMSprop one), and one batch's activations."""
    moments = 2 if optimizer == "adam" else 1
    weights = spec_params(spec) * FLOAT_BYTES * (2 + moments)
    return weights + activation_bytes(spec, input_res=input_res, batch=batch, amp=amp)


def host_memory_bytes() -> int | None:
    """This machine's physical memory (None where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def host_available_bytes() -> int | None:
    """Memory the host can give a new allocation now: Linux's MemAvailable, else the free pages (None: unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:  # noqa: PTH123
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def gib(n: float) -> str:
    """Bytes as GiB for a message: ``3.2 GiB``, ``1.5e+06 GiB``."""
    value = n / 2**30
    return f"{value:.1f} GiB" if value < 1e5 else f"{value:.1e} GiB"
