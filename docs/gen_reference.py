"""Generate the recipe and command-line reference pages from the code, at docs build time.

The recipe reference walks the pydantic schema (`synthvlm_data.config.Recipe` and every model it
nests): field, type, default, description. The command-line reference asks each command's
argparse parser for its usage and arguments. Both are generated on every `mkdocs build` / `mkdocs
serve` (the mkdocs-gen-files plugin runs this file), so they cannot drift from the code; nothing
generated is committed.

Standalone: `python docs/gen_reference.py OUTDIR` writes the two pages into OUTDIR.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The repository's own packages (builders/ is not installed) win over an installed copy.
sys.path.insert(0, str(ROOT))
# argparse wraps usage lines at the terminal width: fix it so the pages do not depend on who builds.
os.environ["COLUMNS"] = "100"

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

RECIPE_PAGE = "reference/recipe.md"
CLI_PAGE = "reference/cli.md"


# --- recipe schema ---------------------------------------------------------------------------

def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models an annotation mentions (through list, Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        for m in _models_in(arg):
            if m not in found:
                found.append(m)
    return found


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _type_text(annotation: object) -> str:
    """A reader's spelling of a field's type; nested models link to their section."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin is typing.Literal:
        return " or ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args)
    if origin in (list, tuple, set):
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is dict or annotation is dict:
        return "mapping"
    if isinstance(annotation, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__)
    return str(annotation).replace("typing.", "")


def _constraints(field) -> str:
    """ge/le/gt/lt/min_length constraints of a field, as they read in a recipe."""
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length", "max_length": "max length"}
    out = []
    for meta in field.metadata:
        for attr, word in words.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{word} {value}")
    return ", ".join(out)


def _default_text(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "**required**"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=False)
        if len(value) > 2:
            return "its fields' defaults"
    text = json.dumps(value, default=str)
    if len(text) > 100:
        text = text[:97] + "..."
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _doc(model: type[BaseModel]) -> str:
    doc = inspect.cleandoc(model.__dict__.get("__doc__") or "")  # its own, not a base class's
    return " ".join(doc.split("\n\n")[0].split())


def recipe_reference() -> str:
    """Every section of a recipe, in the order a recipe file is read, one table per model."""
    from synthvlm_data.config import Recipe

    order: list[type[BaseModel]] = []
    paths: dict[type[BaseModel], list[str]] = {}  # every key path a model appears at

    def walk(model: type[BaseModel], path: str) -> None:
        paths.setdefault(model, []).append(path)
        if len(paths[model]) > 1:
            return
        order.append(model)
        for name, field in model.model_fields.items():
            kids = _models_in(field.annotation)
            for kid in kids:
                sub = f"{path}.{name}" if path else name
                if typing.get_origin(field.annotation) is list or "list of" in _type_text(field.annotation):
                    sub += "[]"
                type_field = kid.model_fields.get("type")
                if len(kids) > 1 and type_field is not None and typing.get_origin(type_field.annotation) is typing.Literal:
                    sub += f" (type: {typing.get_args(type_field.annotation)[0]})"
                walk(kid, sub)

    walk(Recipe, "")
    lines = [
        "# Recipe reference",
        "",
        "Every key a recipe can set, generated from the schema (`synthvlm_data/config.py` and the models it",
        "nests) when the documentation is built. A key that is not listed is an error; **required** keys",
        "have no default. How recipes are written and extended: [Recipes](../recipes.md); what the",
        "model references (`pkg:`, `tiny:`, `world:`) mean: [model references](../recipes.md).",
        "",
    ]
    for model in order:
        where = paths[model]
        if len(where) == 1:
            title = f"`{where[0]}`" if where[0] else "The recipe (top level)"
        else:
            title = model.__name__
        lines += [f"## {title} {{#{_anchor(model)}}}", ""]
        if len(where) > 1:
            lines += ["At " + ", ".join(f"`{w}`" for w in where) + ".", ""]
        doc = _doc(model)
        if doc:
            lines += [doc, ""]
        lines += [f"Schema class: `{model.__module__}.{model.__name__}`.", ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            kind = _type_text(field.annotation)
            limits = _constraints(field)
            if limits:
                kind += f" ({limits})"
            lines.append(f"| `{name}` | {_cell(kind)} | {_cell(_default_text(field))} | {_cell(field.description or '')} |")
        lines.append("")
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------

class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _parser_of(main: Callable[..., object]) -> argparse.ArgumentParser:
    """The parser a `main(argv)` builds, taken as it starts parsing (nothing after that runs)."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        main([])
    except _Captured as got:
        return got.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise RuntimeError(f"{main.__module__}.main did not parse arguments")


def _entry_points() -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(title, parser, how to run it) of every command a user runs."""
    cli = importlib.import_module("synthvlm_data.cli")
    builders = importlib.import_module("builders.__main__")
    world = importlib.import_module("synthvlm_data.world.build_models")
    experiment = importlib.import_module("synthvlm_data.experiment.run")
    perplexity = importlib.import_module("synthvlm_data.captions.perplexity")
    return [
        ("synthvlm", cli.make_parser(), "Installed with the package as `synthvlm`"),
        ("python -m builders", builders.make_parser(), "`make build-dataset` runs it"),
        ("python -m synthvlm_data.world", _parser_of(world.main), "`make world-models` runs `build-models`"),
        ("python -m synthvlm_data.experiment", _parser_of(lambda argv: experiment.parse(argv)), "`make experiment` runs it"),
        ("python -m synthvlm_data.captions.perplexity", _parser_of(perplexity.main),
         "Recalibrates the perplexity filter for another LM"),
    ]


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return []


def _arguments_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | default | description |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(f"`{o}`" + (f" `{action.metavar or action.dest.upper()}`" if action.nargs != 0 else "")
                             for o in action.option_strings)
        else:
            name = f"`{action.metavar or action.dest}`"
        default = action.default
        if action.nargs == 0 or default in (None, argparse.SUPPRESS) or default == []:
            default_text = ""
        else:
            default_text = f"`{default}`"
        text = action.help or ""
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            text += (" " if text else "") + "(one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
        if action.required:
            text += " **required**"
        rows.append(f"| {_cell(name)} | {_cell(default_text)} | {_cell(text)} |")
    return rows if len(rows) > 2 else []


def _command_section(title: str, parser: argparse.ArgumentParser, level: int, intro: str) -> list[str]:
    lines = [f"{'#' * level} `{title}`", ""]
    if intro:
        lines += [intro[0].upper() + intro[1:] + ("" if intro.endswith(".") else "."), ""]
    lines += ["```", parser.format_usage().strip(), "```", ""]
    table = _arguments_table(parser)
    if table:
        lines += table + [""]
    for name, sub, help_text in _subcommands(parser):
        lines += _command_section(f"{title} {name}", sub, level + 1, help_text)
    return lines


def cli_reference() -> str:
    lines = [
        "# Command-line reference",
        "",
        "Every command's usage and arguments, generated from its argparse parser when the documentation",
        "is built (`--help` prints the same). An overview with examples: [Command line](../cli.md).",
        "The training scripts (`train/pretrain.py`, `train/finetune.py`) take one option per config value:",
        "`train/pretrain.py --help` lists them ([Training](../training.md)).",
        "",
    ]
    for title, parser, how in _entry_points():
        description = parser.description or ""
        lines += _command_section(title, parser, 2, "")
        if description or how:
            # the description goes under the usage's heading, before the usage block
            at = lines.index(f"## `{title}`") + 2
            lines[at:at] = [" ".join(x.rstrip(".") + "." for x in (description, how) if x), ""]
    return "\n".join(lines) + "\n"


# --- output ----------------------------------------------------------------------------------

def _pages() -> dict[str, str]:
    return {RECIPE_PAGE: recipe_reference(), CLI_PAGE: cli_reference()}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site-reference")
    for page, text in _pages().items():
        target = out / page
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(target)
else:  # run by the mkdocs-gen-files plugin during `mkdocs build` / `mkdocs serve`
    import mkdocs_gen_files

    for page, text in _pages().items():
        with mkdocs_gen_files.open(page, "w") as f:
            f.write(text)
        mkdocs_gen_files.set_edit_path(page, "docs/gen_reference.py")
