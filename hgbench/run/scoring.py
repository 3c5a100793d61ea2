"""`hgbench evaluate --checkpoint`: load a saved network and score it on the validation split, timed.

The network is a saved run's (its case, input size and settings come from its hgbench checkpoint) or, given a case,
that case's network filled with weights in any layout `hgbench.models.weights` reads (anibali's released files,
pytorch-pose checkpoints): both are scored by the same pass.

It sits above the loops (it opens the datasets and resolves the device as a run's plan does, and reads the
checkpoint), so the prediction passes in hgbench.train.inference never reach up to the runner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hgbench.data.groundtruth import GroundTruth
from hgbench.data.loader import make_loader
from hgbench.errors import HGBenchError
from hgbench.models import build_model, read_weights
from hgbench.run.plan import open_datasets, resolve_device
from hgbench.spec.cases import CaseSpec
from hgbench.spec.config import DEFAULT_SYNTHETIC_PEOPLE, RunConfig
from hgbench.train.checkpoint import NotAnHGBenchCheckpoint, load_checkpoint
from hgbench.train.inference import predict
from hgbench.train.training import StepOptions


@dataclass
class CheckpointEvaluation:
    """`hgbench evaluate --checkpoint`: predictions, their ground truth and how long the pass took."""

    predictions: np.ndarray  # [N, 16, 2] image pixels
    ground_truth: GroundTruth
    timing: dict
    images: list[Path]
    case: str
    weights: str = "hgbench checkpoint"  # the file's layout and container (`Weights.describe`)


def evaluate_checkpoint(
    *,
    checkpoint: Path,
    data_dir: Path | None,
    flip: bool,
    batch_size: int = 6,
    device: str = "auto",
    limit: int | None = None,
    workers: int = 2,
    synthetic_people: int | None = None,
    case: CaseSpec | None = None,
    input_res: int | None = None,
) -> CheckpointEvaluation:
    """Load a checkpoint, run it over the validation split of `data_dir` (or the synthetic default) and time it.

    Args:
        case: the network to fill with the file's weights (any layout); None: the hgbench checkpoint's own case.
        input_res: the input side; with `case` the one the weights run at (default 256, the study's), else a check
            of the checkpoint's own.
    """
    dev = resolve_device(device)
    if case is None:
        try:
            ckpt = load_checkpoint(checkpoint, map_location="cpu")
        except NotAnHGBenchCheckpoint as exc:
            raise HGBenchError(f"{exc}; for another tool's weights, name the network with --case") from None
        spec, config, state, described = ckpt.spec, ckpt.config, ckpt.state["model"], "hgbench checkpoint"
        if input_res is not None and input_res != ckpt.input_res:
            raise HGBenchError(f"checkpoint {checkpoint} was trained at input {ckpt.input_res}, not {input_res}")
    else:
        weights = read_weights(checkpoint, case)
        spec, state, described = case, weights.state_dict, weights.describe()
        config = {"input_res": input_res or RunConfig().input_res}
        try:
            spec.check_input_res(int(config["input_res"]))
        except ValueError as exc:
            raise HGBenchError(str(exc)) from None
    input_res = int(config["input_res"])
    people = synthetic_people or int(config.get("synthetic_people") or DEFAULT_SYNTHETIC_PEOPLE)
    _, val_ds = open_datasets(
        data_dir,
        input_res=input_res,
        limit_train=None,
        limit_val=limit,
        synthetic_people=people,
        sigma=float(config.get("sigma", 1.0)),
        need_train=False,
        # As the run decoded, where that pays: on a CPU the main process would decode serially (see device_decode).
        decode="device" if dev.type == "cuda" and config.get("decode") == "device" else "workers",
    )
    ground_truth = val_ds.ground_truth()  # before the pass: a damaged file is an error now, not after inference
    model = build_model(spec)
    model.load_state_dict(state)
    opts = StepOptions(dev, amp=bool(config.get("amp")), channels_last=bool(config.get("channels_last")))
    model.to(dev, memory_format=torch.channels_last if opts.channels_last else torch.contiguous_format)
    loader = make_loader(
        val_ds, batch_size, shuffle=False, workers=workers, pin_memory=dev.type == "cuda", drop_last=False, device=dev
    )
    t0 = time.perf_counter()
    result = predict(model, loader, opts, input_res=input_res, flip=flip, with_targets=False)
    kept = val_ds.indices_of(result.index)  # without images found undecodable (with skip_bad_images)
    timing = {**result.timing, "total_s": time.perf_counter() - t0, "flip": flip}
    return CheckpointEvaluation(
        predictions=result.predictions,
        ground_truth=ground_truth.subset(kept),  # in split order, as the predictions
        timing=timing,
        images=[val_ds.root / "images" / val_ds.people[i].image for i in kept],
        case=spec.label,
        weights=described,
    )
