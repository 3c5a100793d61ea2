"""The pictures a run's trackers show each epoch: the predicted joints of four fixed validation people.

The same people every epoch and in every run over the same validation split (spread evenly over it), drawn as
`hgbench evaluate --visualize` draws them (`hgbench.eval.visualize.render_pose`: prediction coloured by side, ground
truth in white), small enough that drawing them costs the epoch next to nothing (benchmarks/test_tracking.py): each
image is read once and kept, only four crops are drawn per epoch, and each is encoded once as a JPEG that every tracker
sends as it is (PNG took 60-240 ms a picture on the noisy textures of real and synthetic photos, JPEG about 1 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hgbench.errors import HGBenchError

PEOPLE = 4  # validation people drawn each epoch
MIN_SIDE = 192  # the drawn crop's shorter side, in pixels (render_pose's default of 480 is for a person to study)
JPEG_QUALITY = 90  # thin limbs stay sharp; about 50 KB a picture


@dataclass(frozen=True)
class Picture:
    """One drawn person: a stable name (the tracker's tag) and the RGB picture."""

    name: str  # "val_0" .. "val_3": the same person every epoch
    title: str  # which person: the image file and its position in the split
    rgb: np.ndarray  # [H, W, 3] uint8
    jpeg: bytes  # the same picture, encoded once for every tracker

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def encode_jpeg(rgb: np.ndarray) -> bytes:
    import cv2  # here, not at import: a run without OpenCV loses its pictures (one warning), never its figures

    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise HGBenchError(f"cannot encode a {rgb.shape} picture as JPEG")
    return data.tobytes()


def chosen_people(n: int, count: int = PEOPLE) -> list[int]:
    """Indices of `count` people spread evenly over a split of `n` (all of them when there are fewer)."""
    if n <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, min(count, n))})


class PictureSource:
    """Draws the chosen validation people from one validation pass's predictions.

    Args:
        val_ds: the run's validation dataset (`hgbench.data.mpii.MPIIDataset`: ``image_path``, ``position``).
        ground_truth: its ground truth, indexed as the dataset's people (`hgbench.data.groundtruth.GroundTruth`).
    """

    def __init__(self, val_ds, ground_truth) -> None:
        self.val_ds = val_ds
        self.gt = ground_truth
        self.people = chosen_people(len(val_ds))
        self._images: dict[int, np.ndarray] = {}

    def _image(self, i: int) -> np.ndarray:
        from hgbench.eval.visualize import read_rgb  # OpenCV: see encode_jpeg

        if i not in self._images:  # the same reader as --visualize (a missing file: DataError)
            self._images[i] = read_rgb(self.val_ds.image_path(i))
        return self._images[i]

    def draw(self, predictions: np.ndarray, index: np.ndarray) -> list[Picture]:
        """The chosen people's pictures from a pass's `predictions` ([N, 16, 2], ordered by `index`, split positions).

        A chosen person the pass left out (an undecodable image under --skip-bad-images) is not drawn.
        """
        from hgbench.eval.visualize import render_pose  # OpenCV: see encode_jpeg

        rows = {int(pos): r for r, pos in enumerate(np.asarray(index).tolist())}
        pictures = []
        for slot, i in enumerate(self.people):
            row = rows.get(self.val_ds.position(i))
            if row is None:
                continue
            image = self.val_ds.image_path(i)
            title = f"val #{self.val_ds.position(i)} {image.name}"
            rgb = render_pose(
                self._image(i), predictions[row], self.gt.joints[i], self.gt.missing[i], title, min_side=MIN_SIDE
            )
            pictures.append(Picture(f"val_{slot}", title, rgb, encode_jpeg(rgb)))
        return pictures
