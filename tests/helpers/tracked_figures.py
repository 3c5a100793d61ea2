"""The figures a tracker shows for a run, each read from the run's record by hand: what tests/test_tracking.py checks
in TensorBoard's event files and tests/test_tracking_mlflow.py in an MLflow server, written out here rather than taken
from hgbench.tracking.figures, so a figure that code leaves out or reads wrongly fails both."""

from __future__ import annotations

GROUPS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
# Name (a TensorBoard tag, an MLflow metric) -> how the record holds it: an epoch entry's figures, then the run's.
EPOCH_TAGS = {
    "loss/train": lambda e: e["train_loss"],
    "loss/val": lambda e: e["val_loss"],
    "accuracy/heatmap": lambda e: e["heatmap_acc"],
    "pckh_no_flip/Mean": lambda e: e["pckh"],
    **{f"pckh_no_flip/{g}": (lambda e, g=g: e["pckh_parts"][g]) for g in GROUPS},
    "time/min_per_epoch": lambda e: e["wall_s"] / 60,
    "time/compute_min": lambda e: e["compute_s"] / 60,
    "time/data_wait_min": lambda e: e["data_wait_s"] / 60,
    "time/validation_min": lambda e: e["val_wall_s"] / 60,
    "speed/images_per_s": lambda e: e["images_per_s"],
    "contention/others_cpu_share": lambda e: e["load"]["other_cpu_frac"],
    "train/lr": lambda e: e["lr"],
}
FINAL_TAGS = {
    "final/pckh_Mean": lambda r: r["results"]["pckh"]["Mean"],
    **{f"final/pckh_{g}": (lambda r, g=g: r["results"]["pckh"][g]) for g in GROUPS},
    "final/pckh_flip_Mean": lambda r: r["results"]["inference"]["flip"]["pckh_mean"],
    "final/pckh_no_flip_Mean": lambda r: r["results"]["inference"]["plain"]["pckh_mean"],
    "final/inference_min": lambda r: r["results"]["inference"]["plain"]["wall_min"],
    "final/min_per_epoch": lambda r: r["results"]["train"]["min_per_epoch"]["mean"],
    "final/images_per_s": lambda r: r["results"]["train"]["images_per_s"],
    "final/heatmap_acc": lambda r: r["results"]["heatmap_acc"],
}
