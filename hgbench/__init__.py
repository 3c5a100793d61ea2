"""hgbench: a benchmarking harness for Stacked Hourglass human-pose networks (Newell et al., 2016) on MPII.

The package's top level is its Python API, above every other layer:

- ``hgbench.create_model(case, *, as_built=False, checkpoint=None)``: the network of a case (a registry id or a
  variant ``.toml`` file), with the weights of an hgbench, anibali/pytorch-stacked-hourglass or bearpaw/pytorch-pose
  file when one is given, or of published weights by name (``checkpoint="anibali:hg2"``: fetched once into torch.hub's
  cache and hash-checked, `hgbench.models.published`) (`hgbench.models.factory.create_model`).

It is imported on first use (module ``__getattr__``), so ``import hgbench`` (which every ``import hgbench.x`` runs)
stays cheap and pulls in no torch.
"""

from __future__ import annotations

from typing import Any

from hgbench._version import __version__

__all__ = ["__version__", "create_model"]


def __getattr__(name: str) -> Any:
    if name == "create_model":
        from hgbench.models.factory import create_model

        return create_model
    raise AttributeError(f"module 'hgbench' has no attribute {name!r}")
