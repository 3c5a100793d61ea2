"""Building a network by case: the registry or a variant file names a spec, `build_model` builds it, weights fill it.

timm keeps `_registry` (names to configs) apart from `_factory` (configs to modules); so does hgbench, so that the
registry stays plain data and never imports torch. `create_model` is also the package's top-level API
(``hgbench.create_model``).
"""

from __future__ import annotations

from pathlib import Path

from hgbench.models.hourglass import StackedHourglass, build_model
from hgbench.models.published import resolve
from hgbench.models.weights import read_weights
from hgbench.spec.cases import CaseSpec
from hgbench.spec.variants import resolve_case


def create_model(
    case: str | int | Path | CaseSpec, *, as_built: bool = False, checkpoint: str | Path | None = None
) -> StackedHourglass:
    """The network of a case, with the weights of `checkpoint` when one is given (keyword-only options, as
    torchvision's builders). Returned in training mode, as torch builds modules: call ``.eval()`` to predict.

    Args:
        case: a registry id (``1``-``8``, ``hg1``, ``hg2``, ``hg8``), a variant ``.toml`` file or a `CaseSpec`.
        as_built: the study's code as it ran (cases 1-8 only).
        checkpoint: weights in any layout `hgbench.models.weights` reads: hgbench's own checkpoints,
            anibali/pytorch-stacked-hourglass's released state dicts, bearpaw/pytorch-pose training checkpoints;
            or a published name (``"anibali:hg2"``), fetched once into torch.hub's cache and hash-checked
            (`hgbench.models.published`).

    Raises:
        CaseError (a ValueError): unknown case id (the message lists the valid ones), ``as_built`` for a reference
            model or a variant file, or a bad variant file.
        HGBenchError: a checkpoint that cannot be read or does not fit the case; an unknown published name or a
            failed fetch (one line: the URL and where to put the file).
    """
    spec = case if isinstance(case, CaseSpec) else resolve_case(case, as_built=as_built)
    model = build_model(spec)
    if checkpoint is not None:
        model.load_state_dict(read_weights(resolve(checkpoint).path, spec).state_dict)
    return model
