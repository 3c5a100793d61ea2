"""`hgbench evaluate --weights anibali:hg2 --reproduce`: does this set-up reproduce the publisher's figures?

A careful benchmarker first evaluates a known checkpoint: if the published figure does not come out, the data or
the evaluation is wrong, and no number of one's own can be trusted yet. Two passes over the validation split, both
with the flip test (the publisher's protocol):

- the **publisher's convention** (`evaluate_anibali_convention`): anibali's whole-pixel crop
  (`hgbench.data.anibali`) and decoding (`hgbench.eval.decoding.anibali_decode`). This is the figure that must match the
  published table: its decoding puts predictions about one heatmap pixel up and left of the truth (its ``coords -=
  1`` and whole-pixel truncation), and its figures were measured that way;
- **hgbench's own protocol** (`hgbench.run.scoring.evaluate_checkpoint`): the exact crop and its exact inverse. On the
same
  weights it differs, and the report says by how much and why.

The verdict is "reproduced" when the published Mean lies inside the bootstrap interval of the publisher-convention
Mean (1,000 resamples of the people, `hgbench.eval.metrics`); otherwise the report lists the likely causes with the
figures that point at each: fewer people than the split (missing or skipped images), another annotation file,
another protocol.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hgbench.data.anibali import AnibaliValSet
from hgbench.data.annotations import bundled_annotations_path
from hgbench.data.groundtruth import GroundTruth, bundled_ground_truth_path, load_ground_truth
from hgbench.errors import HGBenchError
from hgbench.eval.decoding import anibali_decode, flip_back
from hgbench.eval.metrics import PCKhResult, evaluate_pckh, pckh_mean_of_sums
from hgbench.measure.stats import bootstrap_weights, percentile_interval
from hgbench.models import build_model, read_weights
from hgbench.run.plan import open_datasets, resolve_device
from hgbench.spec.cases import CaseSpec
from hgbench.spec.config import DEFAULT_SYNTHETIC_PEOPLE
from hgbench.spec.skeleton import PCKH_PARTS

ROWS = (*PCKH_PARTS, "Mean")
DIFFERENCE_NOTE = (
    "anibali's decoding puts each prediction about one heatmap pixel up and left (its `coords -= 1` and whole-pixel "
    "truncation) and rounds its crop window to whole pixels; hgbench maps each peak back through the exact inverse "
    "of its crop"
)


@dataclass
class ConventionEvaluation:
    """Predictions under the publisher's convention and their ground truth."""

    predictions: np.ndarray  # [N, 16, 2] image pixels, split order
    ground_truth: GroundTruth
    annotation_file: Path
    images: list[Path]  # of the predictions, in order
    weights: str  # the file's layout and container (`Weights.describe`)


def evaluate_anibali_convention(
    *,
    weights: Path,
    spec: CaseSpec,
    data_dir: Path | None,
    flip: bool = True,
    batch_size: int = 6,
    device: str = "auto",
    limit: int | None = None,
    workers: int = 2,
    input_res: int = 256,
    synthetic_people: int | None = None,
) -> ConventionEvaluation:
    """Run `weights` (any layout `read_weights` knows, on `spec`'s network) over the val split with anibali's crop
    and decoding (see the module docstring)."""
    dev = resolve_device(device)
    read = read_weights(weights, spec)
    try:
        spec.check_input_res(input_res)
    except ValueError as exc:
        raise HGBenchError(str(exc)) from None
    _, val = open_datasets(
        data_dir,
        input_res=input_res,
        limit_train=None,
        limit_val=limit,
        synthetic_people=synthetic_people or DEFAULT_SYNTHETIC_PEOPLE,
        need_train=False,
    )
    ground_truth = val.ground_truth()
    model = build_model(spec)
    model.load_state_dict(read.state_dict)
    model.to(dev).eval()
    loader = torch.utils.data.DataLoader(
        AnibaliValSet(val), batch_size=batch_size, shuffle=False, num_workers=workers, drop_last=False
    )
    preds, index = [], []
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(dev)
            heatmaps = model(x)[-1].float()
            if flip:  # as its do_validation_step: the mirror's heatmaps mirrored back and swapped, then averaged
                heatmaps = (heatmaps + flip_back(model(torch.flip(x, dims=[3]))[-1].float())) / 2
            preds.append(anibali_decode(heatmaps.cpu().numpy(), batch["center"].numpy(), batch["scale"].numpy()))
            index.append(batch["index"].numpy())
    kept = val.indices_of(np.concatenate(index))
    return ConventionEvaluation(
        np.concatenate(preds),
        ground_truth.subset(kept),
        val.annotation_file,
        [val.image_path(i) for i in kept],
        read.describe(),
    )


# ------------------------------------------------------------------------------------------------- the report


def row_intervals(result: PCKhResult) -> dict[str, tuple[float, float] | None]:
    """Bootstrap interval (people resampled, `hgbench.measure.stats`' fixed seed) of every part and of the Mean."""
    if result.person_scored is None or result.person_correct is None or result.count == 0:
        return dict.fromkeys(ROWS)
    w = bootstrap_weights(result.count).astype(np.float64)
    correct = w @ result.person_correct.astype(np.float64)  # [B, 16]
    scored = w @ result.person_scored.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(scored > 0, 100.0 * correct / np.maximum(scored, 1), np.nan)
    out: dict[str, tuple[float, float] | None] = {}
    for name, joints in PCKH_PARTS.items():
        with warnings.catch_warnings():  # a part never annotated in a resample is nan there, and left out
            warnings.simplefilter("ignore", RuntimeWarning)
            out[name] = percentile_interval(np.nanmean(pct[:, list(joints)], axis=1))
    out["Mean"] = percentile_interval(pckh_mean_of_sums(correct, scored))
    return out


def values(result: PCKhResult) -> dict[str, float]:
    return {**result.parts, "Mean": result.mean}


@dataclass
class Reproduction:
    """The publisher-convention and hgbench figures beside the published ones, and the verdict."""

    name: str  # "anibali:hg2"
    published: dict[str, float]
    theirs: PCKhResult  # under the publisher's convention
    ours: PCKhResult  # under hgbench's protocol
    reproduced: bool
    causes: list[str] = field(default_factory=list)
    people_expected: int = 0

    def to_dict(self) -> dict:
        ti, oi = row_intervals(self.theirs), row_intervals(self.ours)
        return {
            "weights": self.name,
            "reproduced": self.reproduced,
            "causes": self.causes,
            "people": self.theirs.count,
            "people_expected": self.people_expected,
            "rows": {
                r: {
                    "published": self.published.get(r),
                    "publisher_convention": values(self.theirs)[r],
                    "publisher_convention_ci95": ti[r],
                    "hgbench": values(self.ours)[r],
                    "hgbench_ci95": oi[r],
                }
                for r in ROWS
            },
            "difference": DIFFERENCE_NOTE,
        }


def _inside(x: float, ci: tuple[float, float] | None) -> bool:
    return ci is not None and ci[0] <= x <= ci[1]


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else "[n/a]"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def judge(
    name: str,
    published: dict[str, float],
    theirs: PCKhResult,
    ours: PCKhResult,
    *,
    people_expected: int,
    annotation_file: Path | None = None,
    reference_annotation_file: Path | None = None,
) -> Reproduction:
    """The verdict: reproduced when the published Mean lies in the publisher-convention Mean's interval; else the
    likely causes, each with the figures that point at it."""
    ti, oi = row_intervals(theirs), row_intervals(ours)
    reproduced = _inside(published["Mean"], ti["Mean"])
    causes: list[str] = []
    if not reproduced:
        if theirs.count < people_expected:
            causes.append(
                f"missing images: {theirs.count:,} of the split's {people_expected:,} validation people were scored "
                "(missing or skipped images, or --limit); check the folder with: hgbench data mpii DIR --verify"
            )
        ref = reference_annotation_file or bundled_annotations_path()
        if annotation_file is not None and file_sha256(annotation_file) != file_sha256(ref):
            causes.append(
                f"another annotation file: {annotation_file} is not the one the publisher evaluated with "
                f"({ref.name}, SHA-256 {file_sha256(ref)[:12]}); remove it to use the bundled copy"
            )
        if _inside(published["Mean"], oi["Mean"]):
            causes.append(
                f"another protocol: the published Mean {published['Mean']:.2f} lies in hgbench's interval "
                f"{_fmt_ci(oi['Mean'])}, not in the publisher convention's {_fmt_ci(ti['Mean'])}"
            )
        off = [
            f"{r} {values(theirs)[r]:.2f} {_fmt_ci(ti[r])} vs {published[r]:.2f}"
            for r in PCKH_PARTS
            if r in published and not _inside(published[r], ti[r])
        ]
        if off:
            causes.append("another protocol or other data: parts outside their interval: " + "; ".join(off))
    return Reproduction(name, published, theirs, ours, reproduced, causes, people_expected)


def format_reproduction(rep: Reproduction) -> str:
    """The report: one row per part and the Mean, then the verdict, the causes and the difference in one line."""
    ti, oi = row_intervals(rep.theirs), row_intervals(rep.ours)
    lines = [
        f"{rep.name} on {rep.theirs.count:,} validation people, flip test "
        f"(published: anibali/pytorch-stacked-hourglass README)",
        f"{'':9}{'published':>10}  {'anibali convention [95% CI]':<30}hgbench [95% CI]",
    ]
    for r in ROWS:
        pub = f"{rep.published[r]:.2f}" if r in rep.published else "-"
        lines.append(
            f"{r:<9}{pub:>10}  {values(rep.theirs)[r]:6.2f} {_fmt_ci(ti[r]):<23}"
            f"{values(rep.ours)[r]:6.2f} {_fmt_ci(oi[r])}"
        )
    mean = rep.published["Mean"]
    if rep.reproduced:
        lines.append(f"verdict: reproduced (the published Mean {mean:.2f} lies in {_fmt_ci(ti['Mean'])})")
    else:
        lines.append(f"verdict: not reproduced (the published Mean {mean:.2f} lies outside {_fmt_ci(ti['Mean'])})")
        lines += [f"  likely cause: {c}" for c in rep.causes] or ["  likely cause: none of the known ones shows"]
    diff = rep.ours.mean - rep.theirs.mean
    lines.append(f"hgbench's protocol differs by {diff:+.2f} Mean: {DIFFERENCE_NOTE}")
    return "\n".join(lines) + "\n"


def reproduce(
    name: str,
    published: dict[str, float],
    *,
    weights: Path,
    spec: CaseSpec,
    data_dir: Path | None,
    batch_size: int = 6,
    device: str = "auto",
    limit: int | None = None,
    workers: int = 2,
    input_res: int = 256,
) -> Reproduction:
    """Both passes (flip test on), scored and judged against `published`."""
    from hgbench.run.scoring import evaluate_checkpoint

    common = dict(data_dir=data_dir, batch_size=batch_size, device=device, limit=limit, workers=workers)
    theirs = evaluate_anibali_convention(weights=weights, spec=spec, flip=True, input_res=input_res, **common)
    ours = evaluate_checkpoint(checkpoint=weights, case=spec, flip=True, input_res=input_res, **common)
    return judge(
        name,
        published,
        evaluate_pckh(theirs.predictions, theirs.ground_truth),
        evaluate_pckh(ours.predictions, ours.ground_truth),
        people_expected=len(load_ground_truth(bundled_ground_truth_path())),
        annotation_file=theirs.annotation_file,
    )
