"""The validation ground truth in the layout of MPII's `detections_our_format.mat`, shared by data and evaluation.

That file holds, for N validation people: `jnt_missing` 16xN, `pos_gt_src` 16x2xN (image pixels), `headboxes_src`
2x2xN (top-left and bottom-right corners). The synthetic generator writes the same layout, so one evaluator serves
both datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from hgbench.errors import DataError
from hgbench.spec.skeleton import MAX_PEOPLE, NUM_JOINTS

HEAD_SIZE_FACTOR = 0.6  # MPII: head size = 0.6 x head-box diagonal

GT_FILENAME = "detections_our_format.mat"


def bundled_ground_truth_path() -> Path:
    """The copy of the real MPII validation ground truth shipped inside the package."""
    return Path(str(resources.files("hgbench") / "assets" / GT_FILENAME))


@dataclass(frozen=True)
class GroundTruth:
    """Validation ground truth for N people, in split order."""

    joints: np.ndarray  # [N, 16, 2] joint positions in original-image pixels
    missing: np.ndarray  # [N, 16] bool, True where the joint is not annotated (MPII `jnt_missing`)
    headboxes: np.ndarray  # [N, 2, 2] head box corners: [top-left (x, y), bottom-right (x, y)]

    def __post_init__(self) -> None:
        n = self.joints.shape[0]
        if self.joints.shape[1:] != (16, 2) or self.missing.shape != (n, 16) or self.headboxes.shape != (n, 2, 2):
            raise DataError(
                f"ground truth shapes disagree: joints {self.joints.shape}, missing {self.missing.shape}, "
                f"headboxes {self.headboxes.shape} (expected [N,16,2], [N,16], [N,2,2])"
            )

    def __len__(self) -> int:
        return int(self.joints.shape[0])

    @property
    def head_size(self) -> np.ndarray:
        """[N] PCKh normaliser: 0.6 x the head-box diagonal."""
        return HEAD_SIZE_FACTOR * np.linalg.norm(self.headboxes[:, 1] - self.headboxes[:, 0], axis=-1)

    def subset(self, index: np.ndarray | list[int]) -> GroundTruth:
        """The ground truth of the people at `index` (positions in the split), in that order."""
        idx = np.asarray(index, dtype=np.int64)
        return GroundTruth(self.joints[idx], self.missing[idx], self.headboxes[idx])


def load_ground_truth(path: str | Path) -> GroundTruth:
    """Read a `detections_our_format.mat`-style file.

    Raises:
        DataError: the file is missing, unreadable, or lacks a field / has the wrong shapes (named in the message).
    """
    from scipy.io import loadmat, whosmat

    path = Path(path)
    if not path.is_file():
        raise DataError(f"ground-truth file not found: {path}")
    fields = ("jnt_missing", "pos_gt_src", "headboxes_src")
    try:
        # Headers first (whosmat reads no data): a file from elsewhere may declare gigabytes in a few megabytes.
        declared = {name: tuple(shape) for name, shape, _ in whosmat(str(path))}
        for key in fields:
            if key not in declared:
                raise DataError(f"ground-truth file {path} has no field {key!r}")
        pos, missing, boxes = (declared[k] for k in ("pos_gt_src", "jnt_missing", "headboxes_src"))
        n = pos[2] if len(pos) == 3 else -1
        if (pos[:2], missing, boxes) != ((NUM_JOINTS, 2), (NUM_JOINTS, n), (2, 2, n)) or not 0 < n <= MAX_PEOPLE:
            raise DataError(
                f"ground-truth file {path}: pos_gt_src {pos}, jnt_missing {missing}, headboxes_src {boxes}; "
                f"expected 16x2xN, 16xN, 2x2xN with 0 < N <= {MAX_PEOPLE:,}; not read"
            )
        mat = loadmat(str(path), variable_names=list(fields))
    except DataError:
        raise
    except Exception as exc:  # scipy raises several unrelated types for a damaged file
        raise DataError(f"cannot read ground-truth file {path}: {exc}") from exc
    pos, missing, boxes = mat["pos_gt_src"], mat["jnt_missing"], mat["headboxes_src"]
    return GroundTruth(
        joints=np.transpose(pos, (2, 0, 1)).astype(np.float64),
        missing=np.transpose(missing, (1, 0)).astype(bool),
        headboxes=np.transpose(boxes, (2, 0, 1)).astype(np.float64),
    )


def save_ground_truth(path: str | Path, gt: GroundTruth, *, joint_names: tuple[str, ...] | None = None) -> None:
    """Write `gt` in the `detections_our_format.mat` layout (readable by the common MPII evaluators)."""
    from scipy.io import savemat

    from hgbench.spec.skeleton import JOINT_NAMES

    names = joint_names or JOINT_NAMES
    savemat(
        str(path),
        {
            "jnt_missing": np.transpose(gt.missing.astype(np.uint8), (1, 0)),
            "pos_gt_src": np.transpose(gt.joints, (1, 2, 0)),
            "headboxes_src": np.transpose(gt.headboxes, (1, 2, 0)),
            "dataset_joints": np.array([[np.array([n]) for n in names]], dtype=object),
        },
    )
