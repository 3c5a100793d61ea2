"""`hgbench synth`: write a synthetic dataset in MPII's on-disk format (what a run uses without --data-dir)."""

from __future__ import annotations

import argparse
import time

from hgbench.commands._args import at_least
from hgbench.data.synthetic import DEFAULT_IMAGE_SIZE, DEFAULT_PEOPLE, DEFAULT_VAL_FRACTION, MPII_IMAGE_SIZE

EXAMPLES = """examples:
  hgbench synth --out data/synth --people 2000 --seed 1
  hgbench synth --out data/synth-hd --image-size mpii    MPII-sized frames, to time --decode device on
  hgbench run --case 2 --data-dir data/synth
"""


def _image_size(text: str) -> tuple[int, int]:
    if text.strip().lower() == "mpii":
        return MPII_IMAGE_SIZE
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, or mpii, got {text!r}") from None
    if w < 32 or h < 32:
        raise argparse.ArgumentTypeError(f"image size {w}x{h} is too small (32x32 at least)")
    return w, h


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic MPII-format dataset",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to create (must not exist or be empty)")
    p.add_argument("--people", type=at_least(2), default=DEFAULT_PEOPLE, help=f"people (default {DEFAULT_PEOPLE})")
    p.add_argument("--seed", type=at_least(0), default=0, help="the dataset is a function of the seed (default 0)")
    (w, h), (mw, mh) = DEFAULT_IMAGE_SIZE, MPII_IMAGE_SIZE
    p.add_argument(
        "--image-size",
        type=_image_size,
        default=DEFAULT_IMAGE_SIZE,
        metavar="WxH",
        help=f"image width x height, or mpii for MPII's {mw}x{mh} frames, JPEGs as costly to decode as real ones "
        f"(default {w}x{h})",
    )
    p.add_argument(
        "--val-fraction",
        type=_fraction,
        default=DEFAULT_VAL_FRACTION,
        help=f"share of people in the val split (default {DEFAULT_VAL_FRACTION})",
    )
    p.add_argument("--force", action="store_true", help="replace DIR if it is not empty")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    import json

    from hgbench.data.synthetic import MARKER_FILENAME, generate

    start = time.perf_counter()
    out = generate(
        args.out,
        people=args.people,
        seed=args.seed,
        image_size=args.image_size,
        val_fraction=args.val_fraction,
        overwrite=args.force,
    )
    info = json.loads((out / MARKER_FILENAME).read_text())
    print(
        f"wrote {info['people']} people ({info['train']} train, {info['val']} val) in {info['images']} images of "
        f"{args.image_size[0]}x{args.image_size[1]} to {out} in {time.perf_counter() - start:.1f} s"
    )
    return 0
