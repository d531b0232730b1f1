"""The one schema vocabulary of every config file: recipes and training configs.

`ConfigBase` is every section's base (unknown keys are errors); recipes use `StrictModel` (values
are not coerced across types, sections are frozen: a recipe is data), training configs lax
sections (`--lr 1e-3` from a shell is a string). `load_yaml` and `validate` read and check either
kind of file, so both report a YAML error at its line and column, and a schema error as one
phrase per problem naming the key path (`generate.steps`) and the file.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from synthvlm_data.errors import SynthVLMError


class ConfigBase(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class StrictModel(ConfigBase):
    """A recipe section: unknown keys are errors, values are not coerced across types."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


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


def read_text(path: Path, kind: str, error: type[SynthVLMError]) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{kind} file {path} is not UTF-8 text") from None


def load_yaml(text: str, where: str, kind: str, error: type[SynthVLMError]) -> object:
    """The YAML document of a `kind` file ("recipe", "training config"); a syntax error names its place."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(f"{kind} {where} is not valid YAML{at}: {getattr(err, 'problem', None) or err}") from None


def validate(cls: type[BaseModel], data: object, where: str, kind: str, error: type[SynthVLMError], hint: str = ""):
    """`cls` validated from a document, or one `error` line naming every bad key and the file."""
    if not isinstance(data, dict):
        empty = " (the file is empty)" if data is None else ""
        raise error(f"invalid {kind} {where}: the top level must be a mapping of keys{empty}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise error(f"invalid {kind} {where}: " + "; ".join(validation_error_parts(err)) + hint) from None
