"""The data checks: `--decode device` batches against the worker path's under load, and the data-wait share of a
`--fast --decode device` run against the manual's target, both on synthetic frames of MPII's size (1280x720: the
default 320x240 JPEGs decode an order of magnitude faster than real frames and would flatter either path)."""

from __future__ import annotations

from hgbench.gpu_check.checks._common import hgbench_run, no_cuda
from hgbench.gpu_check.protocol import Outcome, StepContext

CROP_MEAN_LEVELS = 3.0  # nvjpeg vs libjpeg differ by a level or two in IDCT and chroma upsampling; a wrong crop: tens
DATA_WAIT_PCT_TARGET = 5.0


def decode_crops(ctx: StepContext) -> Outcome:
    """`--decode device` batches (nvjpeg, side stream) against the worker path's, while the GPU is kept busy."""
    if skip := no_cuda():
        return skip
    import torch

    from hgbench.data.loader import make_loader
    from hgbench.data.mpii import MPIIDataset
    from hgbench.data.synthetic import MPII_IMAGE_SIZE, default_dataset

    dev = torch.device("cuda", torch.cuda.current_device())
    root = default_dataset(people=120, image_size=MPII_IMAGE_SIZE)  # cached: data_wait reads it too
    common = {"input_res": 256, "seed": 0}
    by_workers = MPIIDataset(root, "train", **common)
    by_device = MPIIDataset(root, "train", decode="device", **common)
    on_cpu = make_loader(by_workers, 6, shuffle=True, workers=2, pin_memory=False, drop_last=True, seed=1)
    on_gpu = make_loader(by_device, 6, shuffle=True, workers=2, pin_memory=True, drop_last=True, seed=1, device=dev)
    load = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
    means, maxes, targets_equal, batches = [], [], True, 0
    for epoch in (1, 2):
        on_cpu.set_epoch(epoch)
        on_gpu.set_epoch(epoch)
        for a, b in zip(on_cpu, on_gpu, strict=True):
            # Read at once on the default stream, as a training step would: a batch handed over before the side
            # stream finished it shows here.
            seen = b["image"].clone()
            for _ in range(30):  # then the GPU busy while the side stream decodes and crops the next batch
                load = (load @ load).clamp_(-1, 1)
            # And the batch again after that: memory the side stream reused too early shows here.
            for image in (seen, b["image"]):
                levels = (image.cpu() - a["image"]).abs() * 255
                means.append(levels.mean().item())
                maxes.append(levels.max().item())
            targets_equal &= torch.allclose(b["target"].cpu(), a["target"], rtol=1.3e-6, atol=1e-5)
            batches += 1
    worst = max(means)
    ctx.update(batches=batches, mean_levels=means, max_levels=maxes, targets_equal=targets_equal)
    summary = f"{batches} batches under load: worst batch mean {worst:.2f} grey levels, max {max(maxes):.0f}"
    summary += ", targets equal" if targets_equal else ", targets differ"
    if worst >= CROP_MEAN_LEVELS or not targets_equal:
        return Outcome("fail", "device batches differ from the worker path's", summary)
    return Outcome("pass", None, summary)


def first_epoch_extra_s(epochs: list[dict]) -> float | None:
    """How much longer the first epoch (training and validation) took than the median later one: in a compiled run
    the first compile of the training and validation graphs, with cuDNN's autotuning and the workers' start."""
    totals = [e["wall_s"] + (e.get("val_wall_s") or 0.0) for e in epochs]
    if len(totals) < 2:
        return None
    later = sorted(totals[1:])
    return max(0.0, totals[0] - later[len(later) // 2])


def data_wait(ctx: StepContext) -> Outcome:
    """The data-wait share of the epochs after warm-up of a `--fast --decode device` run of case 1 at 256 px."""
    if skip := no_cuda():
        return skip
    from hgbench.data.synthetic import MPII_IMAGE_SIZE, default_dataset

    root = default_dataset(people=120, image_size=MPII_IMAGE_SIZE)
    args = ["--case", "1", "--fast", "--decode", "device", "--device", "cuda", "--epochs", "3", "--data-dir", str(root)]
    args += ["--limit-val", "12", "--no-flip-test", "--workers", "4"]
    rc, record = hgbench_run(ctx, "data_wait", args)
    if record is None:
        return Outcome("fail", f"hgbench run exited with code {rc} and wrote no record")
    train = record["results"].get("train") or {}
    epochs = record["results"]["epochs"]
    fraction = train.get("data_wait_fraction")
    steady = [e for e in epochs if not e.get("warmup")] or epochs
    decode = [e.get("decode_host_s") for e in steady]
    wall = sum(e["wall_s"] for e in steady)
    decode_pct = 100 * sum(decode) / wall if decode and None not in decode and wall > 0 else None
    extra = first_epoch_extra_s(epochs)
    keys = ("wall_s", "val_wall_s", "compute_s", "data_wait_s", "decode_host_s", "device_idle_s", "warmup")
    ctx.update(
        exit_code=rc,
        status=record["status"],
        decode=record["config"].get("decode"),
        settings={k: record["config"].get(k) for k in ("amp", "channels_last", "compile")},
        fast_mode=record.get("fast_mode"),
        frames=list(MPII_IMAGE_SIZE),
        epochs=[{k: e.get(k) for k in keys} for e in epochs],
        data_wait_pct=None if fraction is None else 100 * fraction,
        decode_host_pct=decode_pct,
        compile_s=extra,
    )
    if rc != 0 or record["status"] != "finished" or fraction is None:
        return Outcome("fail", f"run {record['status']} (exit {rc}): {record.get('status_reason')}")
    summary = f"data wait {100 * fraction:.1f}% of the epochs after warm-up ({len(epochs)} epochs, 1280x720 frames"
    summary += f"; the decode held the host {decode_pct:.1f}%)" if decode_pct is not None else ")"
    if extra is not None:
        summary += f"; first epoch's compile and warm-up {extra:.0f} s apart"
    if 100 * fraction >= DATA_WAIT_PCT_TARGET:
        return Outcome("fail", f"data wait {100 * fraction:.1f}%, above the 5% target", summary)
    return Outcome("pass", None, summary)
