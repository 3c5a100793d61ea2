"""Model definitions: one configurable StackedHourglass and its blocks, building by case, foreign weights, cost."""

from hgbench.models.blocks import Bottleneck, make_norm
from hgbench.models.cost import ModelCost, count_params, count_used_params, measure_cost
from hgbench.models.factory import create_model
from hgbench.models.hourglass import Hourglass, StackedHourglass, build_model
from hgbench.models.weights import Weights, read_weights

__all__ = [
    "Bottleneck",
    "Hourglass",
    "ModelCost",
    "StackedHourglass",
    "Weights",
    "build_model",
    "count_params",
    "count_used_params",
    "create_model",
    "make_norm",
    "measure_cost",
    "read_weights",
]
