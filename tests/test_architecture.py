"""The package's structure, read from its source with the standard library's `ast`: no import circles
(imports inside functions count too: a lazy import only hides a circle), models below the stages,
one owner for the dataset folder's file names, one table of backends."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synthvlm_data"


def module_names(root: Path) -> dict[str, Path]:
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (TYPE_CHECKING blocks aside).
    `from pkg import name` counts as importing `pkg.name` when that is a module, else `pkg`."""
    mods = module_names(root)
    top = root.name

    def resolve(name: str) -> str | None:
        while name:
            if name in mods:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        todo = [ast.parse(path.read_text(encoding="utf-8"))]
        while todo:
            node = todo.pop()
            for child in ast.iter_child_nodes(node):
                if _is_type_checking(child):
                    continue
                todo.append(child)
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join(anchor + ([base] if base else []))
                    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in child.names]
                for target in targets:
                    found = resolve(target) if target.split(".")[0] == top else None
                    if found is not None and found != mod:
                        graph[mod].add(found)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.sub": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.c"}, "pkg.c": set()}
    assert find_cycle(graph) is None  # a TYPE_CHECKING import is no circle
    (pkg / "c.py").write_text("def g():\n    import pkg.a\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_no_import_circles_in_the_package():
    graph = import_graph(PACKAGE)
    assert len(graph) > 100 and sum(map(len, graph.values())) > 300  # the whole tree was read
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


# Below the stages: what every layer above uses may not reach back up.
LOWER = {
    "synthvlm_data.models": ("stages", "build", "cli", "training", "presentation", "experiment", "evaluation", "world",
                             "captions", "decontam", "pilot", "hub", "backends", "rehearsal"),
    "synthvlm_data.dataset_dir": ("stages", "build", "cli", "presentation", "decontam", "outdir", "hub"),
    "synthvlm_data.backends": ("build", "cli", "presentation", "training"),
    "synthvlm_data.world": ("evaluation", "experiment", "stages", "build", "cli"),  # the suite reads the world
    "synthvlm_data.hub": ("training", "stages", "build", "cli"),  # training publishes through hub
    "synthvlm_data.clustering": ("captions", "stages"),
}


@pytest.mark.parametrize("lower", sorted(LOWER))
def test_lower_layers_never_import_upwards(lower):
    graph = import_graph(PACKAGE)
    upward = {
        (mod, target) for mod, targets in graph.items() if mod == lower or mod.startswith(lower + ".")
        for target in targets if target.split(".")[1] in LOWER[lower]
    }
    assert not upward, f"{lower} imports from above it: {sorted(upward)}"


def test_the_dataset_folder_file_names_have_one_owner():
    """`dataset_dir` names the published folder's files; package code asks it instead of spelling them
    (outdir's table of pre-marker layouts describes what older versions wrote and stays literal)."""
    from synthvlm_data import dataset_dir

    names = {dataset_dir.STATS_FILE, dataset_dir.CONTAMINATION_FILE, dataset_dir.SHARD_GLOB}
    allowed = {PACKAGE / "dataset_dir.py", PACKAGE / "outdir.py"}
    spelled = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                spelled.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
    assert not spelled, spelled


def test_backends_table_is_what_the_cli_offers():
    import argparse
    import importlib

    from synthvlm_data.backends import BACKENDS, Backend
    from synthvlm_data.cli import make_parser

    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("build", "decode"):
        backend = next(a for a in sub.choices[command]._actions if a.dest == "backend")
        assert list(backend.choices) == list(BACKENDS)
    protocol = {name for name in vars(Backend) if not name.startswith("_")} - {"name"}
    for name, (module, cls) in BACKENDS.items():
        klass = getattr(importlib.import_module(module), cls)
        assert klass.name == name and protocol <= set(dir(klass)), (name, protocol - set(dir(klass)))


GROUND_TRUTH = ("scene", "render", "text", "verify", "data", "pool", "questions")


def test_the_worlds_ground_truth_imports_no_model_code_and_no_torch():
    import subprocess
    import sys

    graph = import_graph(PACKAGE)
    truth = {f"synthvlm_data.world.{m}" for m in GROUND_TRUTH}
    reach, todo = set(), list(truth)
    while todo:  # everything the ground truth imports, transitively
        for nxt in graph[todo.pop()]:
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    allowed = truth | {"synthvlm_data.errors", "synthvlm_data.workunits", "synthvlm_data.world"}
    assert reach <= allowed, sorted(reach - allowed)
    code = "import sys\n" + "".join(f"import synthvlm_data.world.{m}\n" for m in GROUND_TRUTH) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
