"""The case registry: every hourglass variant of the study as a frozen `CaseSpec` (plain data), plus its published row.

A case is data, not a class: cases 1-8 are written as `replace(BASELINE, ...)` so each reads as its difference from the
original 8-stack network. Every numbered case has two forms: as the study *describes* it (the default) and as the
study's code *built* it (`as_built=True`); see shared/spec/cases.md for what differs and why both matter.

Pure data: this module imports no torch and nothing of hgbench, so anything may read the registry. Building a case's
network (`hgbench.models.create_model`) and counting its cost (`hgbench.models.measure_cost`) live in `hgbench.models`,
as timm keeps `_registry` apart from `_factory`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from hgbench.spec.geometry import HEATMAP_STRIDE

# Normalisation layers a spec may name (built by `hgbench.models.blocks.make_norm`): BatchNorm2d, InstanceNorm2d with
# affine parameters (case 5 as described) and GroupNorm with one group (case 5 as the study's code built it).
NORMS: tuple[str, ...] = ("batch", "instance", "group1")


@dataclass(frozen=True)
class PublishedRow:
    """The study's published figures for a case (Quadro RTX 6000, PyTorch 1.8.1, batch 6, 50 epochs)."""

    min_per_epoch: float  # training minutes per epoch
    val_acc: float  # validation accuracy (%), as reported
    inference_min: float  # minutes for one pass over the 2,958 validation people


PUBLISHED_HARDWARE = "Quadro RTX 6000, PyTorch 1.8.1, batch 6, 50 epochs (published)"


def case_label(name: str, as_built: bool = False, *, short: bool = False) -> str:
    """How a case is named to people: ``case 4``, ``case 4 (as built)``, ``hg2``.

    Args:
        name: the registry id (a record's ``spec.name``).
        as_built: the study's code as it ran (adds `` (as built)``).
        short: without the word "case" (``4 (as built)``), for a table column already headed "case".
    """
    head = f"case {name}" if name.isdigit() and not short else name
    return f"{head} (as built)" if as_built else head


@dataclass(frozen=True)
class CaseSpec:
    """Everything needed to build one hourglass variant. Only plain values, so `asdict` drops into a record as is."""

    name: str  # registry id: "1".."8", "hg1", "hg2", "hg8"
    description: str  # the study's wording
    num_stacks: int = 8  # stacks constructed
    run_stacks: int | None = None  # stacks the forward pass runs; None = all constructed (fewer only as built)
    num_feats: int = 128  # bottleneck planes p; the feature width is 2p
    num_blocks: int = 1  # bottlenecks per residual unit
    depths: tuple[int, ...] = (4,) * 8  # hourglass depth of each constructed stack
    norm: str = "batch"  # normalisation inside the bottlenecks: batch | instance | group1
    norm_in_stem: bool = True  # whether the stem's bottlenecks use `norm` too (the 7x7 stem BN stays BatchNorm)
    bottleneck_steps: int = 3  # BN-ReLU-Conv steps per bottleneck (4 in case 8)
    share_extra_step: bool = False  # the 4th step re-applies the 2nd step's modules (as-built case 8)
    level_units: int = 3  # residual units constructed per hourglass level (+1 innermost); forward uses 3
    num_joints: int = 16  # heatmaps per stack
    as_built: bool = False  # True: the study's code as it ran; False: the case as described
    expected_params: int | None = field(default=None, compare=False)  # checked by a test; None = not pinned

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(f"{self.label}: {problem}")

    def _problem(self) -> str | None:
        """What makes this spec unbuildable, naming the field and what it allows; None when it builds."""
        for key in ("num_stacks", "num_feats", "num_blocks", "num_joints"):
            if getattr(self, key) < 1:
                return f"{key} must be at least 1, got {getattr(self, key)}"
        if len(self.depths) != self.num_stacks:
            return f"depths has {len(self.depths)} entries for num_stacks = {self.num_stacks}; give one per stack"
        if min(self.depths) < 1:
            return f"every entry of depths must be at least 1, got {list(self.depths)}"
        if self.norm not in NORMS:
            return f"unknown norm {self.norm!r}; allowed: {', '.join(NORMS)}"
        if not 1 <= self.stacks_run <= self.num_stacks:
            return f"run_stacks = {self.run_stacks} is outside 1..num_stacks ({self.num_stacks})"
        if self.bottleneck_steps not in (3, 4):
            return f"bottleneck_steps must be 3 or 4, got {self.bottleneck_steps}"
        if self.share_extra_step and self.bottleneck_steps != 4:
            return "share_extra_step needs bottleneck_steps = 4 (it shares the fourth step's modules)"
        if self.level_units < 3:
            return f"level_units must be at least 3, got {self.level_units}"
        return None

    @property
    def stacks_run(self) -> int:
        """Stacks the forward pass runs."""
        return self.num_stacks if self.run_stacks is None else self.run_stacks

    def min_input_res(self) -> int:
        """Smallest square input this network can train at.

        Every hourglass level halves the heatmap (input / `HEATMAP_STRIDE`), so the input must be a multiple of
        ``HEATMAP_STRIDE * 2**depth``; instance norm cannot normalise the 1x1 innermost level in training, so it needs
        one more halving.
        """
        return self._input_multiple() * (2 if self.norm == "instance" else 1)

    def _input_multiple(self) -> int:
        """The input side must be a multiple of this: the heatmap must halve cleanly at every hourglass level."""
        return HEATMAP_STRIDE * 2 ** max(self.depths)

    def check_input_res(self, input_res: int) -> None:
        """Raise `ValueError` with a one-line reason if the network cannot train at this input size."""
        multiple = self._input_multiple()
        if input_res <= 0 or input_res % multiple:
            raise ValueError(
                f"{self.label}: input size {input_res} must be a positive multiple of {multiple} "
                f"(the input is {HEATMAP_STRIDE}x its heatmap, which the deepest hourglass, depth {max(self.depths)}, "
                "halves that many times)"
            )
        if input_res < self.min_input_res():
            raise ValueError(
                f"{self.label}: input size {input_res} is too small for {self.norm} norm "
                f"(the innermost level would be 1x1); use {self.min_input_res()} or more"
            )

    @property
    def label(self) -> str:
        """Human-readable id, e.g. ``case 4 (as built)``."""
        return case_label(self.name, self.as_built)

    def to_dict(self) -> dict:
        """Plain-dict form for records and checkpoints (tuples become lists)."""
        d = asdict(self)
        d["depths"] = list(self.depths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CaseSpec:
        """Inverse of `to_dict`; unknown keys are an error so foreign checkpoints are caught."""
        d = dict(d)
        d["depths"] = tuple(d["depths"])
        return cls(**d)

    def fingerprint(self) -> str:
        """Short hash of everything that shapes the network (not its name or wording)."""
        d = self.to_dict()
        for k in ("name", "description", "expected_params"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


BASELINE = CaseSpec(name="1", description="original", expected_params=25_594_624)

# Cases as the study describes them (the default form).
_DESCRIBED: dict[str, CaseSpec] = {
    "1": BASELINE,
    "2": replace(BASELINE, name="2", description="64 channels", num_feats=64, expected_params=6_725_248),
    "3": replace(BASELINE, name="3", description="6 stacks", num_stacks=6, depths=(4,) * 6, expected_params=19_306_720),
    "4": replace(
        BASELINE,
        name="4",
        description="6 stacks 64 channels 4 residual blocks",
        num_stacks=6,
        depths=(4,) * 6,
        num_feats=64,
        num_blocks=4,
        expected_params=18_749_792,
    ),
    "5": replace(
        BASELINE,
        name="5",
        description="8 stacks 64 channels, instance norm",
        num_feats=64,
        norm="instance",
        expected_params=6_725_248,
    ),
    "6": replace(
        BASELINE,
        name="6",
        description="8 stacks, depth [2x3,3x3,4x2] 64 channels",
        num_feats=64,
        depths=(2, 2, 2, 3, 3, 3, 4, 4),
        expected_params=5_266_816,
    ),
    "7": replace(
        BASELINE,
        name="7",
        description="8 stacks, depth [4x2,3x4,2x2] 64 channels",
        num_feats=64,
        depths=(4, 4, 3, 3, 3, 3, 2, 2),
        expected_params=5_428_864,
    ),
    "8": replace(
        BASELINE,
        name="8",
        description="4 blocks {of Conv, ReLU, BatchNorm} in each bottleneck module",
        bottleneck_steps=4,
        expected_params=42_485_440,
    ),
}

# What the study's code actually computed (shared/spec/cases.md, "as built"). Cases 2, 6 and 7 ran as described.
_AS_BUILT_CHANGES: dict[str, dict] = {
    "1": {},
    "2": {},
    "3": {"num_stacks": 8, "depths": (4,) * 8, "run_stacks": 6, "expected_params": 25_594_624},
    "4": {
        "num_stacks": 8,
        "depths": (4,) * 8,
        "run_stacks": 6,
        "num_blocks": 1,
        "level_units": 4,
        "expected_params": 8_453_760,
    },
    "5": {"norm": "group1", "expected_params": 6_725_248},
    "6": {},
    "7": {},
    "8": {"share_extra_step": True, "expected_params": 25_594_624},
}

# The public reference networks (anibali/pytorch-stacked-hourglass hg1/hg2/hg8); hg8 is case 1.
_REFERENCE: dict[str, CaseSpec] = {
    "hg1": replace(
        BASELINE, name="hg1", description="1-stack hourglass", num_stacks=1, depths=(4,), expected_params=3_586_960
    ),
    "hg2": replace(
        BASELINE, name="hg2", description="2-stack hourglass", num_stacks=2, depths=(4, 4), expected_params=6_730_912
    ),
    "hg8": replace(BASELINE, name="hg8", description="8-stack hourglass", expected_params=25_594_624),
}

PUBLISHED: dict[str, PublishedRow] = {
    "1": PublishedRow(18.0, 83.18, 1.2),
    "2": PublishedRow(14.3, 80.48, 1.03),
    "3": PublishedRow(14.4, 83.13, 1.05),
    "4": PublishedRow(14.3, 80.73, 1.08),
    "5": PublishedRow(14.7, 78.83, 1.1),
    "6": PublishedRow(14.3, 80.68, 1.1),
    "7": PublishedRow(14.8, 81.47, 1.15),
    "8": PublishedRow(14.6, 84.23, 1.06),
}

STUDY_CASES: tuple[str, ...] = tuple(_DESCRIBED)
REFERENCE_MODELS: tuple[str, ...] = tuple(_REFERENCE)


def list_cases() -> list[str]:
    """Every registry id: the study's cases 1-8, then hg1, hg2, hg8."""
    return [*STUDY_CASES, *REFERENCE_MODELS]


def _unknown(name: str) -> ValueError:
    valid = list_cases()
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ValueError(f"unknown case {name!r}.{hint} Valid cases: {', '.join(valid)}")


def get_spec(name: str | int, *, as_built: bool = False) -> CaseSpec:
    """Return the spec of a case by id.

    Args:
        name: a case id (``1``-``8``, ``hg1``, ``hg2``, ``hg8``); ints are accepted.
        as_built: the study's code as it ran instead of the case as described. Only the numbered cases have it.

    Raises:
        ValueError: unknown id (the message lists the valid ones), or ``as_built`` for a reference model.
    """
    key = str(name).strip().lower().removeprefix("case").strip()
    if key in _DESCRIBED:
        spec = _DESCRIBED[key]
        if as_built:
            spec = replace(spec, as_built=True, **_AS_BUILT_CHANGES[key])
        return spec
    if key in _REFERENCE:
        if as_built:
            raise ValueError(f"{key} is a reference model; only cases 1-8 have an as-built form")
        return _REFERENCE[key]
    raise _unknown(str(name))


def published_row(name: str) -> PublishedRow | None:
    """The study's published row for a numbered case, None for the reference models."""
    return PUBLISHED.get(str(name))
