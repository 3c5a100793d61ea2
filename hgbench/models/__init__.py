"""The network: one configurable Stacked Hourglass, built by case, filled with weights from anyone, counted.

- `hourglass`, `blocks`: the one `StackedHourglass` every case is built from, and its bottleneck and normalisations.
- `factory`: `create_model` (the Python API): a case or variant file to a network, with weights when given.
- `cost`: parameters, parameters that train, and forward FLOPs, cached per spec and torch.
- `weights`, `published`: weights saved by hgbench, anibali's or bearpaw's code mapped onto a case's network, and
  published weights by name, fetched once and hash-checked.
- `torch_file`, `pickle_scan`, `zip_directory`: reading a torch file from a stranger: ``weights_only``, with what it
  could make torch allocate bounded first.
"""

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
