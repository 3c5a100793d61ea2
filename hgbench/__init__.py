"""hgbench: a benchmarking harness for Stacked Hourglass human-pose networks (Newell et al., 2016) on MPII.

The package's top level is its Python API, above every other layer:

- ``hgbench.create_model(case, *, as_built=False, checkpoint=None)``: the network of a case (a registry id or a
  variant ``.toml`` file), with the weights of an hgbench, anibali/pytorch-stacked-hourglass or bearpaw/pytorch-pose
  file when one is given, or of published weights by name (``checkpoint="anibali:hg2"``: fetched once into torch.hub's
  cache and hash-checked, `hgbench.models.published`) (`hgbench.models.factory.create_model`).
- ``hgbench.load_records(sources)``: the `RunSummary` of every run record under files, folders or globs, and a warning
  line for each one skipped (`hgbench.run.results.load_records`); ``hgbench.read_record(path)`` one record, validated.
- ``hgbench.RunSummary``, ``hgbench.summarize(record, path)``, ``hgbench.validate_record(record)``: the record's
  figures as readers use them (`hgbench.run.run_summary`), and the schema's check (`hgbench.run.record`,
  docs/record.md).

Each name is imported on first use (module ``__getattr__``), so ``import hgbench`` (which every ``import hgbench.x``
runs) stays cheap and pulls in no torch. Everything else lives in the folders below, one per layer
(docs/architecture.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from hgbench._version import __version__

# Public name -> the module that defines it.
_API = {
    "create_model": "hgbench.models.factory",
    "load_records": "hgbench.run.results",
    "read_record": "hgbench.run.results",
    "RunSummary": "hgbench.run.run_summary",
    "summarize": "hgbench.run.run_summary",
    "validate_record": "hgbench.run.record",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'hgbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
