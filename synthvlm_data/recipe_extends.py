"""Recipe composition: `extends: <base>` resolved into one mapping before validation.

A recipe file may name a base (a shipped recipe name, or a path relative to the extending file)
and write only what differs. The merge is deliberately small and predictable:
- mappings merge key by key, recursively; any other value (a scalar, a list) replaces the base's
  whole, so a list of filters is always read in one place;
- a model reference (a mapping with an `id`: `model: {id: ..., revision: ...}`) replaces the base's
  whole too: a new `id` never inherits the old model's `revision`, `variant` or `subfolder`;
- `null` is a value like any other, as in a recipe without a base: it turns an inherited optional
  section off (`refiner: null`, `judge: null`). There is no separate "delete": null is the default
  of nearly every optional field, and where a field has another default, writing that value is
  explicit (a delete that silently picked the default would turn `id_column: null`, row numbers,
  into `id`);
- chains are allowed (a base may extend another); a cycle is an error naming the chain.

Only the merged mapping is validated, and only it is recorded (work dir, dataset card): it has no
`extends`, so fingerprints and provenance describe the recipe that ran, not the files it came from.
Each key remembers the file that set it, so a schema error can name that file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from synthvlm_data.errors import RecipeError
from synthvlm_data.schema import load_yaml, read_text

RECIPES_PACKAGE = "synthvlm_data.recipes"
EXTENDS = "extends"
MODEL_ID = "id"


@dataclass(frozen=True)
class RecipeFile:
    """Where a recipe's text comes from: a shipped recipe (by name) or a file on disk."""

    shipped: str | None = None
    path: Path | None = None

    @property
    def where(self) -> str:
        """How errors name it."""
        return f"'{self.shipped}' (shipped)" if self.shipped else str(self.path)

    @property
    def key(self) -> str:
        """Identity for cycle detection."""
        return f"shipped:{self.shipped}" if self.shipped else str(self.path.resolve())

    @property
    def label(self) -> str:
        """Short name in a chain (`synthvlm-sd3 -> synthvlm-100k`)."""
        return self.shipped or str(self.path)

    def read(self) -> str:
        if self.shipped:
            return (resources.files(RECIPES_PACKAGE) / f"{self.shipped}.yaml").read_text(encoding="utf-8")
        return read_text(self.path, "recipe", RecipeError)


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped inside the package."""
    root = resources.files(RECIPES_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def locate(name_or_path: str, relative_to: RecipeFile | None = None) -> RecipeFile:
    """A shipped recipe name (`tiny`) or a YAML path; a base path is relative to the file naming it
    (for a shipped recipe: to the shipped folder, so shipped recipes may only extend shipped ones)."""
    looks_like_path = Path(name_or_path).suffix in {".yaml", ".yml"} or "/" in name_or_path
    if not looks_like_path:
        if not (resources.files(RECIPES_PACKAGE) / f"{name_or_path}.yaml").is_file():
            raise RecipeError(
                f"unknown recipe '{name_or_path}'{_named_by(relative_to)}. Shipped recipes: "
                f"{', '.join(shipped_recipes())}; or pass a path to your own YAML file."
            )
        return RecipeFile(shipped=name_or_path)
    path = Path(name_or_path).expanduser()
    if relative_to is not None and not path.is_absolute():
        if relative_to.path is None:
            raise RecipeError(f"shipped recipe {relative_to.where} extends a path ({name_or_path}); "
                              "shipped recipes extend shipped recipes by name")
        path = relative_to.path.parent / path
    if not path.is_file():
        raise RecipeError(
            f"recipe file {path} does not exist{_named_by(relative_to)}. Pass a shipped recipe name "
            f"({', '.join(shipped_recipes())}) or a path to a YAML file."
        )
    return RecipeFile(path=path)


def _named_by(parent: RecipeFile | None) -> str:
    return f" (the `extends` of {parent.where})" if parent is not None else ""


@dataclass
class Resolved:
    """A recipe mapping with `extends` resolved, the chain of files it came from (the named file
    first) and, per key path, the file that set it."""

    data: object
    chain: list[RecipeFile]
    origins: dict[tuple[str, ...], RecipeFile] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The named file, and its bases when there are any (errors name both)."""
        first = self.chain[0].where
        bases = " -> ".join(f.label for f in self.chain[1:])
        return f"{first} (extends {bases})" if bases else first

    def origin(self, loc: tuple) -> RecipeFile | None:
        """The file that set the key at `loc` (pydantic's error location), or its nearest parent."""
        keys = tuple(str(p) for p in loc if isinstance(p, str))
        for n in range(len(keys), 0, -1):
            if keys[:n] in self.origins:
                return self.origins[keys[:n]]
        return None


def resolve(file: RecipeFile, _seen: tuple[RecipeFile, ...] = ()) -> Resolved:
    """Read `file` and merge it onto its `extends` chain (a cycle is refused in one line)."""
    if any(f.key == file.key for f in _seen):
        chain = " -> ".join(f.label for f in (*_seen, file))
        raise RecipeError(f"recipe {_seen[0].where}: `extends` forms a cycle ({chain}); "
                          "a recipe cannot extend itself, directly or through its bases")
    return resolve_data(load_yaml(file.read(), file.where, "recipe", RecipeError), file, _seen)


def resolve_data(data: object, file: RecipeFile, _seen: tuple[RecipeFile, ...] = ()) -> Resolved:
    """`resolve` for a mapping already read (`file` names it; a relative base is relative to its path)."""
    if not isinstance(data, dict) or EXTENDS not in data:
        return Resolved(data, [file], _origins(data, file))
    base_name = data[EXTENDS]
    if not isinstance(base_name, str) or not base_name.strip():
        raise RecipeError(f"invalid recipe {file.where}: 'extends' must name a shipped recipe or a YAML path "
                          f"(got {base_name!r})")
    base = resolve(locate(base_name.strip(), relative_to=file), (*_seen, file))
    if not isinstance(base.data, dict):
        raise RecipeError(f"invalid recipe {base.chain[0].where} (the base of {file.where}): "
                          "the top level must be a mapping of keys")
    child = {k: v for k, v in data.items() if k != EXTENDS}
    origins = dict(base.origins)
    _drop_replaced(origins, child)
    origins.update(_origins(child, file))
    return Resolved(merge(base.data, child), [file, *base.chain], origins)


def _whole(value: object) -> bool:
    """A value that replaces the base's whole: anything but a mapping, and a model reference (a
    mapping naming an `id`: another model's `revision` or `variant` must not carry over)."""
    return not isinstance(value, dict) or MODEL_ID in value


def merge(base: dict, child: dict) -> dict:
    """`child` over `base`: mappings merge recursively, any other value (lists, null) and a model
    reference (a mapping with an `id`) replace."""
    out = dict(base)
    for key, value in child.items():
        if not _whole(value) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _origins(data: object, file: RecipeFile, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], RecipeFile]:
    out: dict[tuple[str, ...], RecipeFile] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            path = (*prefix, str(key))
            out[path] = file
            out.update(_origins(value, file, path))
    return out


def _drop_replaced(origins: dict, child: dict, prefix: tuple[str, ...] = ()) -> None:
    """Forget the origins of what `child` replaces (a list, a scalar, null)."""
    for key, value in child.items():
        path = (*prefix, str(key))
        if not _whole(value):
            _drop_replaced(origins, value, path)
        else:
            for p in [p for p in origins if p[: len(path)] == path]:
                del origins[p]
