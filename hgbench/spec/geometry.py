"""The output stride: every network of the study predicts heatmaps at a quarter of its input's resolution.

The stem (a stride-2 7x7 convolution, then a 2x2 max-pool) halves the input twice before the first hourglass, and
every hourglass returns what it was given. The targets, the crop-to-heatmap mapping, the decoding of predictions and
the smallest trainable input all follow from this one number. A leaf: it imports nothing.
"""

from __future__ import annotations

HEATMAP_STRIDE = 4  # input pixels per heatmap pixel


def heatmap_res(input_res: int) -> int:
    """Side of the heatmaps a network predicts for a square input of side `input_res` (``input_res // 4``)."""
    return input_res // HEATMAP_STRIDE
