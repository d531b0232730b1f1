"""Caption filters, one module each (SynthVLM appendix Table 1 and extras).

Every module of this package that defines a `Filter` subclass is a filter: the class is its recipe
entry (`type` and settings, validated when the recipe loads), knows how to build its step, and
names the models that step loads. This registry finds them, so adding a filter is adding a module:

- `FILTERS`: every filter class, by `type`;
- `FilterStep`: the recipe's `captions.filters[]` schema (a union discriminated on `type`);
- the model preflight and the dataset card's model list ask each entry (`Filter.models`).

Rule filters are pure text statistics (`text` holds the Data-Juicer definitions they share);
`perplexity` needs a causal LM; `clip_similarity` and `blip_itm` score a caption against its
original image.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Union

from pydantic import Field

from synthvlm_data.captions.filters.base import BuildContext, Filter, RuleFilter


def _discover() -> dict[str, type[Filter]]:
    """`type` -> class of every concrete filter defined in this package's modules."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found: dict[str, type[Filter]] = {}
    stack = list(Filter.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        tag = cls.model_fields.get("type")
        if tag is not None:
            (name,) = tag.annotation.__args__
            found[name] = cls
    return dict(sorted(found.items()))


FILTERS = _discover()
FilterStep = Annotated[Union[tuple(FILTERS.values())], Field(discriminator="type")]  # noqa: UP007

__all__ = ["FILTERS", "BuildContext", "Filter", "FilterStep", "RuleFilter"]
