"""`hgbench evaluate`: score predictions with the MPII PCKh protocol, from a predictions file or a checkpoint.

Three sources, exactly one of them:
- ``--predictions PRED.mat`` (`preds` N x 16 x 2 or `pos_pred_src` 16 x 2 x N, image pixels, val order) against
  ``--ground-truth GT.mat`` (default: the `detections_our_format.mat` bundled with hgbench);
- ``--checkpoint CKPT``: run the model on the validation split (`hgbench.run.scoring.evaluate_checkpoint`) and score it;
  with ``--case C [--as-built]`` the file may hold another tool's weights for case C (anibali's released hg1/hg2/hg8,
  a pytorch-pose checkpoint), read by their keys and scored exactly as hgbench's own;
- ``--weights NAME|FILE``: published weights by name (``anibali:hg1|hg2|hg8``, fetched once into torch.hub's cache,
  hash-checked; the case is the name's) or a file, as ``--checkpoint``.

``--convention anibali`` crops and decodes as the publisher's evaluation does (whole-pixel crop, its ``coords -= 1``
offset) instead of hgbench's exact inverse. ``--reproduce`` (published weights only) runs both, flip test on, sets
them beside the published table joint by joint with bootstrap intervals and says whether the set-up reproduces it
(exit 1 when not).

Results go to stdout as the study's table, CSV (two lines, nothing else) or JSON; notes go to stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hgbench.commands._args import at_least
from hgbench.data.groundtruth import GroundTruth
from hgbench.errors import DataError, HGBenchError

if TYPE_CHECKING:
    from hgbench.eval.metrics import PCKhResult

EPILOG = """examples:
  hgbench evaluate --predictions preds_valid.mat                       the study's table, bundled ground truth
  hgbench evaluate --predictions preds.mat --format csv                two lines: header and values
  hgbench evaluate --predictions preds.mat --visualize 5 --out pics --data-dir ~/mpii
  hgbench evaluate --checkpoint ckpt.pt --data-dir ~/mpii --flip --save-predictions preds.mat
  hgbench evaluate --checkpoint hg2.pth --case hg2 --data-dir ~/mpii --flip
  hgbench evaluate --weights anibali:hg2 --data-dir ~/mpii --flip --convention anibali
  hgbench evaluate --weights anibali:hg2 --data-dir ~/mpii --reproduce
"""

ANNOTATION_NAMES = ("mpii_annotations.json", "mpii_annotations.json.gz")


POSITIVE_INT = at_least(1)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions (a file or a checkpoint) with the MPII PCKh protocol",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source (exactly one)").add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--predictions",
        type=Path,
        metavar="PRED",
        help="predictions file (.mat with preds or pos_pred_src, or .npy N x 16 x 2)",
    )
    src.add_argument("--checkpoint", type=Path, metavar="CKPT", help="model checkpoint to run on the val split")
    src.add_argument(
        "--weights",
        metavar="NAME|FILE",
        help="published weights (anibali:hg1, anibali:hg2, anibali:hg8: fetched once into torch.hub's cache) or a file",
    )
    p.add_argument(
        "--ground-truth",
        type=Path,
        metavar="GT",
        help="ground truth in detections_our_format.mat layout (default: the bundled MPII copy; --predictions only)",
    )
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    _add_checkpoint_options(p.add_argument_group("checkpoint evaluation"))
    out = p.add_argument_group("outputs")
    out.add_argument("--save-predictions", type=Path, metavar="P.mat", help="write predictions in the preds layout")
    out.add_argument("--visualize", type=POSITIVE_INT, metavar="N", help="draw the first N val people (needs --out)")
    out.add_argument("--out", type=Path, metavar="DIR", help="folder for the --visualize PNGs")
    p.set_defaults(func=cmd_evaluate, _parser=p)


def _add_checkpoint_options(ck: argparse._ArgumentGroup) -> None:
    """How a checkpoint or published weights are run over the validation people."""
    ck.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="MPII directory (images/ and mpii_annotations.json[.gz]); with --predictions, only for --visualize",
    )
    ck.add_argument(
        "--synthetic-people",
        type=POSITIVE_INT,
        metavar="N",
        help="size of the synthetic dataset used when no --data-dir is given (default: the checkpoint's)",
    )
    ck.add_argument(
        "--case",
        metavar="CASE",
        help="the network the weights belong to (id or variant .toml); needed for another tool's weights",
    )
    ck.add_argument("--as-built", action="store_true", help="with --case: the case as the study's code built it")
    ck.add_argument("--limit", type=POSITIVE_INT, metavar="N", help="only the first N val people")
    ck.add_argument("--flip", action="store_true", help="flip test: average with the mirrored image's heatmaps")
    ck.add_argument(
        "--convention",
        choices=("hgbench", "anibali"),
        default="hgbench",
        help="crop and decoding: hgbench's exact inverse (default) or the publisher's (anibali: whole-pixel crop, "
        "coords -= 1)",
    )
    ck.add_argument(
        "--reproduce",
        action="store_true",
        help="published weights: both conventions, flip test, beside the published table; a verdict (exit 1 if not)",
    )
    ck.add_argument("--batch", type=POSITIVE_INT, default=6, metavar="N", help="test batch size (default: 6)")
    ck.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available")
    ck.add_argument("--workers", type=at_least(0), default=2, metavar="N", help="data loader workers (default: 2)")
    ck.add_argument(
        "--input-res",
        type=POSITIVE_INT,
        default=None,
        metavar="PX",
        help="input side: with --case the one the weights run at (default 256); else a check of the checkpoint's",
    )


def _check_args(args: argparse.Namespace) -> None:
    """Misuse of the flags goes through `parser.error` (usage line, exit 2), as argparse's own errors."""
    p: argparse.ArgumentParser = args._parser
    sources = [args.predictions, args.checkpoint, getattr(args, "weights", None)]
    if sum(v is not None for v in sources) != 1:  # argparse's group checks this unless called directly
        p.error("give exactly one of --predictions, --checkpoint or --weights")
    if args.visualize is not None and args.out is None:
        p.error("--visualize needs --out DIR")
    if args.predictions is not None:
        if args.visualize is not None and args.data_dir is None:
            p.error("--visualize with --predictions needs --data-dir DIR (the images and mpii_annotations.json)")
        used = [
            f
            for f, v in [
                ("--synthetic-people", args.synthetic_people),
                ("--flip", args.flip or None),
                ("--input-res", args.input_res),
                ("--limit", args.limit),
                ("--case", args.case),
                ("--as-built", args.as_built or None),
                ("--reproduce", args.reproduce or None),
                ("--convention anibali", "anibali" if args.convention == "anibali" else None),
            ]
            if v is not None
        ]
        if used:
            p.error(f"{', '.join(used)}: only with --checkpoint or --weights")
    else:
        if args.ground_truth is not None:
            p.error("--ground-truth only applies to --predictions (a checkpoint is scored on its own val split)")
        if args.synthetic_people is not None and args.data_dir is not None:
            p.error("give --data-dir or --synthetic-people, not both")
        if args.as_built and args.case is None:
            p.error("--as-built needs --case (an hgbench checkpoint names its own case)")
        if args.reproduce:
            clash = [
                f
                for f, v in [
                    ("--convention", args.convention != "hgbench" or None),
                    ("--save-predictions", args.save_predictions),
                    ("--visualize", args.visualize),
                    ("--format csv", args.format == "csv" or None),
                ]
                if v is not None
            ]
            if clash:
                p.error(
                    f"--reproduce runs both conventions with the flip test and prints its report: not with "
                    f"{', '.join(clash)}"
                )
    if args.visualize is not None:
        from hgbench.run.plan import check_output_dir

        check_output_dir(args.out)  # before scoring, which can take a while: as `run` checks --out first


def val_image_paths(data_dir: Path) -> list[Path]:
    """Image paths of the val people (``isValidation == 1``) of ``DIR/mpii_annotations.json[.gz]``, in order.

    Read here directly (json/gzip) so evaluating a predictions file needs no data pipeline.
    """
    for name in ANNOTATION_NAMES:
        path = data_dir / name
        if path.is_file():
            break
    else:
        raise DataError(f"no {' or '.join(ANNOTATION_NAMES)} in {data_dir}")
    try:
        with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read annotation file {path}: {exc}") from exc
    if not isinstance(entries, list):
        raise DataError(f"annotation file {path} is not a list of person entries")
    try:
        return [data_dir / "images" / e["img_paths"] for e in entries if float(e["isValidation"]) == 1.0]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"annotation file {path}: an entry lacks img_paths/isValidation ({exc})") from exc


def _pose_items(
    images: list[Path], preds: np.ndarray, gt: GroundTruth
) -> Iterator[tuple[Path, np.ndarray, np.ndarray, np.ndarray, str]]:
    for i, image in enumerate(images[: len(preds)]):
        yield image, preds[i], gt.joints[i], gt.missing[i], f"val #{i} {image.name}"


@dataclass
class _Scored:
    """What one evaluation scores: the predictions, their ground truth, the val images (to draw) and what JSON output
    says of where they came from."""

    preds: np.ndarray
    gt: GroundTruth
    images: list[Path]
    extra: dict  # the JSON output's fields beside the result, in the order they are written
    timing: dict | None = None  # the inference pass's timing (a checkpoint scored by hgbench's own evaluation)


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_args(args)
    from hgbench.eval.metrics import evaluate_pckh

    if args.predictions is not None:
        scored = _from_predictions(args)
    else:
        published_name = _resolve_weights(args)
        if args.reproduce:
            return _reproduce(args, published_name)
        scored = _from_checkpoint(args, published_name)
    result = evaluate_pckh(scored.preds, scored.gt)
    _save_outputs(args, scored)
    _write_result(args, result, scored)
    return 0


def _from_predictions(args: argparse.Namespace) -> _Scored:
    """``--predictions``: the file's predictions against the ground truth (the bundled one unless named)."""
    from hgbench.data.groundtruth import bundled_ground_truth_path, load_ground_truth
    from hgbench.eval.predictions import load_predictions

    preds = load_predictions(args.predictions)
    gt_path = args.ground_truth or bundled_ground_truth_path()
    gt = load_ground_truth(gt_path)
    if len(preds) != len(gt):
        raise HGBenchError(
            f"{args.predictions} holds {len(preds)} people but the ground truth {gt_path} holds "
            f"{len(gt)}; both must list the same val people in the same order"
        )
    extra = dict(source="predictions", predictions=str(args.predictions), ground_truth=str(gt_path))
    images = val_image_paths(args.data_dir) if args.visualize is not None else []
    return _Scored(preds, gt, images, extra)


def _from_checkpoint(args: argparse.Namespace, published_name: str | None) -> _Scored:
    """``--checkpoint``/``--weights``: the model run over the val split, by hgbench's evaluation or the publisher's."""
    from hgbench.run.scoring import evaluate_checkpoint  # lazily: it pulls in torch, the model and the data
    from hgbench.spec.variants import resolve_case

    if args.convention == "anibali" and args.case is None:
        raise HGBenchError("--convention anibali needs --case (or published weights, which name their case)")
    kwargs: dict = dict(
        checkpoint=args.checkpoint,
        data_dir=args.data_dir,
        flip=args.flip,
        batch_size=args.batch,
        device=args.device,
        limit=args.limit,
        workers=args.workers,
        synthetic_people=args.synthetic_people,
        case=None if args.case is None else resolve_case(args.case, as_built=args.as_built),
        input_res=args.input_res,
    )
    timing: dict | None = None
    if args.convention == "anibali":
        from hgbench.run.reproduce import evaluate_anibali_convention

        # The same settings as hgbench's own evaluation, under the publisher's names for the weights and network.
        settings = {k: v for k, v in kwargs.items() if k not in ("checkpoint", "case")}
        conv = evaluate_anibali_convention(
            weights=args.checkpoint, spec=kwargs["case"], **{**settings, "input_res": args.input_res or 256}
        )
        preds, gt, images, described = conv.predictions, conv.ground_truth, conv.images, conv.weights
        run = None
    else:
        run = evaluate_checkpoint(**kwargs)
        preds, gt, timing = np.asarray(run.predictions), run.ground_truth, dict(run.timing)
        images, described = list(run.images), getattr(run, "weights", "hgbench checkpoint")
    data = str(args.data_dir) if args.data_dir else "synthetic"
    case = getattr(run, "case", None) or (kwargs["case"].label if kwargs["case"] is not None else None)
    extra = dict(
        source="checkpoint",
        checkpoint=str(args.checkpoint),
        case=case,
        weights=described,
        published=published_name,
        convention=args.convention,
        flip=args.flip,
        batch_size=args.batch,
        device=kwargs["device"],
        data_dir=data,
        timing=timing,
    )
    return _Scored(preds, gt, images, extra, timing)


def _save_outputs(args: argparse.Namespace, scored: _Scored) -> None:
    """``--save-predictions`` and ``--visualize``: write them, say so on stderr and name them in ``scored.extra``."""
    from hgbench.eval.predictions import save_predictions

    if args.save_predictions is not None:
        path = save_predictions(args.save_predictions, scored.preds)
        print(f"hgbench: wrote predictions of {len(scored.preds)} people to {path}", file=sys.stderr)
        scored.extra["saved_predictions"] = str(path)
    if args.visualize is not None:
        from hgbench.eval.visualize import save_pose_pngs

        if not scored.images:
            raise DataError("no val images to draw (the annotation file lists no val people)")
        pngs = save_pose_pngs(args.out, _pose_items(scored.images, scored.preds, scored.gt), args.visualize)
        print(f"hgbench: wrote {len(pngs)} PNGs to {args.out}", file=sys.stderr)
        scored.extra["pngs"] = [str(p) for p in pngs]


def _write_result(args: argparse.Namespace, result: PCKhResult, scored: _Scored) -> None:
    """The result on stdout as ``--format`` says: the table (with what was scored and its timing), CSV or JSON."""
    from hgbench.eval.predictions import format_csv, format_json, format_table

    extra, timing = scored.extra, scored.timing
    if args.format == "csv":
        sys.stdout.write(format_csv(result))
    elif args.format == "json":
        sys.stdout.write(format_json(result, extra))
    else:
        sys.stdout.write(format_table(result))
        if args.checkpoint is not None:
            sys.stdout.write(
                f"checkpoint {args.checkpoint} ({extra['weights']}): {extra['case']}, data {extra['data_dir']}, "
                f"flip test {'on' if args.flip else 'off'}, batch {args.batch}, {args.convention} convention\n"
            )
        if timing:
            sys.stdout.write("timing: " + ", ".join(f"{k} {_fmt_value(v)}" for k, v in timing.items()) + "\n")


def _fmt_value(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _resolve_weights(args: argparse.Namespace) -> str | None:
    """``--weights`` made local (a published name fetched or found in the cache) into ``args.checkpoint``, its case
    into ``args.case`` when none was given; returns the published name of the file (by name or by hash), or None."""
    from hgbench.models.published import PUBLISHED, identify, resolve

    if getattr(args, "weights", None) is None:
        return identify(args.checkpoint) if args.reproduce else None
    resolved = resolve(args.weights)
    args.checkpoint = resolved.path
    name = resolved.name or identify(resolved.path)
    if args.case is None and name is not None:
        args.case = PUBLISHED[name].case
    return name


def _reproduce(args: argparse.Namespace, name: str | None) -> int:
    """``--reproduce``: both conventions beside the published table; exit 1 when not reproduced."""
    from hgbench.models.published import PUBLISHED_PCKH
    from hgbench.run.reproduce import format_reproduction, reproduce
    from hgbench.spec.variants import resolve_case

    if name is None or name not in PUBLISHED_PCKH:
        raise HGBenchError(
            f"--reproduce needs published weights with a published table ({', '.join(PUBLISHED_PCKH)}); "
            f"{args.weights or args.checkpoint} is not one of them"
        )
    case = args.case
    rep = reproduce(
        name,
        PUBLISHED_PCKH[name],
        weights=args.checkpoint,
        spec=resolve_case(case, as_built=args.as_built),
        data_dir=args.data_dir,
        batch_size=args.batch,
        device=args.device,
        limit=args.limit,
        workers=args.workers,
        input_res=args.input_res or 256,
    )
    if args.format == "json":
        from hgbench.files.atomic_io import jsonable

        sys.stdout.write(json.dumps(jsonable(rep.to_dict()), indent=2) + "\n")
    else:
        sys.stdout.write(format_reproduction(rep))
    return 0 if rep.reproduced else 1
