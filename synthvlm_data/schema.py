"""Shared pieces of the recipe schema (kept apart from config.py so sub-packages can use them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class StrictModel(BaseModel):
    """A recipe section: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelRef(StrictModel):
    """A model named in a recipe.

    `id` is a Hub id (`stabilityai/stable-diffusion-xl-base-1.0`), a local directory, or
    `tiny:<name>` for the offline builders in `synthvlm_data.models`. Pin `revision` for
    reproducible full-scale runs; it is recorded in the dataset card.
    """

    id: str = Field(min_length=1)
    revision: str | None = None

    @property
    def is_tiny(self) -> bool:
        return self.id.startswith("tiny:")


def validation_error_parts(err: ValidationError) -> list[str]:
    """One short phrase per problem, each naming the key path (`generate.steps`)."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        elif e["type"] == "missing":
            parts.append(f"missing key '{loc}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            got_s = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            parts.append(f"'{loc}': {msg}{got_s}" if loc != "<root>" else msg)
    return parts
