"""Building a network by case name: the registry (`hgbench.cases`) looks a spec up, `build_model` builds it.

timm keeps `_registry` (names to configs) apart from `_factory` (configs to modules); so does hgbench, so that the
registry stays plain data and never imports torch.
"""

from __future__ import annotations

from hgbench.cases import get_spec
from hgbench.models.hourglass import StackedHourglass, build_model


def create_model(name: str | int, *, as_built: bool = False) -> StackedHourglass:
    """Build the network of a registered case (keyword-only options, as torchvision's builders).

    Raises:
        ValueError: unknown case id (the message lists the valid ones), or ``as_built`` for a reference model.
    """
    return build_model(get_spec(name, as_built=as_built))
