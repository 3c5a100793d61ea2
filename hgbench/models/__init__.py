"""Model definitions: one configurable StackedHourglass and its blocks."""

from hgbench.models.blocks import Bottleneck, make_norm
from hgbench.models.hourglass import Hourglass, StackedHourglass, build_model

__all__ = ["Bottleneck", "Hourglass", "StackedHourglass", "build_model", "make_norm"]
