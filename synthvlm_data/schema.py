"""The one schema vocabulary of every config file: recipes and training configs.

`ConfigBase` is every section's base (unknown keys are errors); recipes use `StrictModel` (values
are not coerced across types, sections are frozen: a recipe is data), training configs lax
sections (`--lr 1e-3` from a shell is a string). `load_yaml` and `validate` read and check either
kind of file, so both report a YAML error at its line and column, and a schema error as one
phrase per problem naming the key path (`generate.steps`) and the file.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable
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


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple, set, frozenset, dict):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    args = typing.get_args(field.annotation) if field is not None else ()
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _walk(cls: type[BaseModel] | None, loc: tuple) -> tuple[str, type[BaseModel] | None]:
    """The key path as a user reads it (list entries 1-based, with their `type`:
    `captions.filters #7 (perplexity).max_perplexity`) and the model that holds its last key."""
    text, current, candidates = "", cls, [cls] if cls else []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            text += f" #{part + 1}"
            continue
        tagged = {t: m for m in candidates if (t := _tag(m))}
        if isinstance(part, str) and part in tagged and i > 0 and isinstance(loc[i - 1], int):
            text += f" ({part})"
            current, candidates = tagged[part], [tagged[part]]
            continue
        text += ("." if text else "") + str(part)
        if i == len(loc) - 1:
            break
        field = current.model_fields.get(str(part)) if current is not None else None
        candidates = _models_in(field.annotation) if field is not None else []
        current = candidates[0] if len(candidates) == 1 else None
    return text, current


def validation_error_parts(err: ValidationError, cls: type[BaseModel] | None = None,
                           origin: Callable[[tuple], str | None] | None = None) -> list[str]:
    """One short phrase per problem, each naming the key path (`generate.steps`); with the
    validated class, an unknown key gets a "did you mean" from the keys allowed there. `origin`
    names the file a key came from when the document was merged from several (`extends`)."""
    parts = []
    for e in err.errors():
        shown, holder = _walk(cls, tuple(e["loc"]))
        loc = shown or "<root>"
        source = origin(tuple(e["loc"])) if origin is not None and e["loc"] else None
        where = f" (set in {source})" if source else ""
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1]) if e["loc"] else ""
            close = difflib.get_close_matches(key, list(holder.model_fields), n=1, cutoff=0.6) if holder else []
            parts.append(f"unknown key '{loc}'{where}" + (f" (did you mean '{close[0]}'?)" if close else ""))
        elif e["type"] == "missing":
            parts.append(f"missing key '{loc}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            got_s = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            parts.append(f"'{loc}'{where}: {msg}{got_s}" if loc != "<root>" else msg)
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


def validate(cls: type[BaseModel], data: object, where: str, kind: str, error: type[SynthVLMError],
             hint: str | Callable[[ValidationError], str] = "", origin: Callable[[tuple], str | None] | None = None):
    """`cls` validated from a document, or one `error` line naming every bad key and the file
    (`origin`: the file a key came from, for a document merged from several; `hint`: appended, or
    made from the validation error, so it can point at an example of the keys that failed)."""
    if not isinstance(data, dict):
        empty = " (the file is empty)" if data is None else ""
        raise error(f"invalid {kind} {where}: the top level must be a mapping of keys{empty}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        tail = hint(err) if callable(hint) else hint
        raise error(f"invalid {kind} {where}: " + "; ".join(validation_error_parts(err, cls, origin)) + tail) from None
