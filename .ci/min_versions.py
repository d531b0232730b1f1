"""Write pip constraints that pin every declared dependency to its floor (`name>=X` -> `name==X`).

pip has no "lowest versions" resolution, so the minimum-versions job installs the package under
these constraints: if a floor in pyproject.toml is too low for the code, the tests run against that
version and fail; if floors cannot be installed together, pip says so. torch/torchvision are left
out: the job installs the Makefile's TORCH_SPEC build, as the main environment does.

    python .ci/min_versions.py [EXTRA ...] > constraints.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's vendored copy
    from pip._vendor import tomli as tomllib

from packaging.requirements import Requirement

SKIP = {"torch", "torchvision"}  # the TORCH_SPEC build
# The libraries whose APIs the code calls in version-dependent ways; the others (numpy, pillow,
# pyyaml, ...) resolve to whatever pip picks next to these.
PINNED = {"transformers", "trl", "diffusers", "accelerate", "datasets", "huggingface-hub", "open-clip-torch",
          "safetensors", "deepspeed"}


def floors(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for line in requirements:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        if name in SKIP or name not in PINNED or name == project["name"]:
            continue
        for spec in req.specifier:
            if spec.operator in (">=", "=="):
                pins[name] = spec.version
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    print("\n".join(floors(root / "pyproject.toml", argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
