"""The README and the documentation pages refer only to things that exist.

The strict MkDocs build (`make docs-build`) checks the links between documentation pages; these
tests check what it cannot: the README's links into docs/ (with their anchors), and that every
command the text shows names a real Makefile target, `synthvlm` subcommand, module or file. The
generated reference pages are checked to cover every recipe section and every subcommand.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WRITTEN_BY_COMMANDS = ("bench/wheels",)  # `make gpu-wheels` writes it


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (what MkDocs uses for a heading's anchor)."""
    text = re.sub(r"\{#([^}]+)\}\s*$", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = _without_fences(page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)}


def _without_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _code(text: str) -> list[str]:
    """Fenced blocks, indented blocks and inline code spans: where the text shows commands."""
    spans = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    prose = _without_fences(text)
    spans += [m.group(1) for m in re.finditer(r"^(?: {4}|\t)(.+)$", prose, flags=re.M)]
    spans += re.findall(r"`([^`\n]+)`", prose)
    return spans


def _links(page: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"\]\(([^)\s]+)\)", _without_fences(page.read_text()))]


def test_readme_links_into_the_docs_resolve():
    """Every relative link of the README names an existing file, and a `#anchor` a heading of it."""
    readme = ROOT / "README.md"
    checked = 0
    for link in _links(readme):
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (readme.parent / path) if path else readme
        assert target.exists(), f"README.md links to {link}: no such file"
        if anchor:
            assert anchor in _anchors(target), f"README.md links to {link}: {target.name} has no heading #{anchor}"
        checked += 1
    assert checked >= 10  # the README's map of the documentation


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([a-z][a-z0-9-]*):", text, flags=re.M)}


def test_make_targets_named_in_the_text_exist():
    targets = _make_targets()
    seen = set()
    for page in PAGES:
        for span in _code(page.read_text()):
            for name in re.findall(r"(?:^|[\s;(&|])make ([a-z][a-z0-9-]*)", span):
                assert name in targets, f"{page.relative_to(ROOT)}: `make {name}` is not a Makefile target"
                seen.add(name)
    assert {"venv", "demo", "test", "build-dataset", "docs", "docs-build"} <= seen


def test_synthvlm_subcommands_named_in_the_text_exist():
    from synthvlm_data.cli import make_parser

    parser = make_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    seen = set()
    for page in PAGES:
        for span in _code(page.read_text()):
            for name in re.findall(r"(?:^|[\s;(&|/])synthvlm ([a-z][a-z-]*)", span):
                assert name in sub.choices, f"{page.relative_to(ROOT)}: `synthvlm {name}` is not a subcommand"
                seen.add(name)
    assert {"build", "report", "eval", "export", "publish"} <= seen


def test_modules_and_repository_files_named_in_the_text_exist():
    sys.path.insert(0, str(ROOT))
    try:
        for page in PAGES:
            for span in _code(page.read_text()):
                for module in re.findall(r"python -m ([A-Za-z_][\w.]*)", span):
                    assert importlib.util.find_spec(module) is not None, (
                        f"{page.relative_to(ROOT)}: `python -m {module}`: no such module")
                for path in re.findall(r"(?<![\w/.-])((?:train|bench|builders|cards|\.ci|tests)/[\w./-]*\w)", span):
                    if any(c in path for c in "*{<") or path.startswith(WRITTEN_BY_COMMANDS):
                        continue
                    assert (ROOT / path).exists(), f"{page.relative_to(ROOT)}: `{path}` does not exist"
    finally:
        sys.path.remove(str(ROOT))


@pytest.fixture
def generated_pages(monkeypatch):
    """The pages docs/gen_reference.py writes when MkDocs runs it (through mkdocs-gen-files)."""
    written: dict[str, str] = {}

    class _File:
        def __init__(self, name):
            self.name, self.parts = name, []

        def write(self, text):
            self.parts.append(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            written[self.name] = "".join(self.parts)

    fake = types.ModuleType("mkdocs_gen_files")
    fake.open = lambda name, mode="r": _File(name)
    fake.set_edit_path = lambda *args: None
    monkeypatch.setitem(sys.modules, "mkdocs_gen_files", fake)
    spec = importlib.util.spec_from_file_location("gen_reference_under_mkdocs", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return written


def test_generated_reference_covers_every_recipe_key_and_subcommand(generated_pages):
    from synthvlm_data.cli import make_parser
    from synthvlm_data.config import GenerateConfig, Recipe

    recipe = generated_pages["reference/recipe.md"]
    for name in Recipe.model_fields:
        assert f"| `{name}` |" in recipe
    for name in GenerateConfig.model_fields:  # a nested section, each of its keys
        assert f"| `{name}` |" in recipe
    assert "| `steps` | integer (>= 1) | `60` |" in recipe or "| `steps` | integer" in recipe

    cli = generated_pages["reference/cli.md"]
    (sub,) = [a for a in make_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    for name in sub.choices:
        assert f"### `synthvlm {name}`" in cli
    assert "`--recipe` `RECIPE`" in cli
    for command in ("python -m builders", "python -m synthvlm_data.world", "python -m synthvlm_data.experiment"):
        assert f"## `{command}`" in cli
