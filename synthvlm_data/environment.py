"""The locked environment: which lock file this Python environment was installed from, whether the
installed packages still match it, and the library versions that decide the bytes of what the
project builds (world models, dataset cards).

`make venv` installs every package from the checkout's `requirements.lock` (exact versions, SHA-256
hashes) and then copies the lock into the environment as `<sys.prefix>/requirements.lock`. That
copy is how code knows it runs in a locked environment and which one: the checkout's lock may
have moved on since, and a wheel install has no checkout at all.
"""

from __future__ import annotations

import hashlib
import platform
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

LOCK_FILE = "requirements.lock"
# What decides the bytes of the world models (`python -m synthvlm_data.world build-models`):
# the numerics (torch, numpy), the renders (pillow), the model code and its serialisation.
WORLD_LIBRARIES = ("torch", "numpy", "pillow", "transformers", "tokenizers", "diffusers", "open_clip_torch",
                   "safetensors")

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;([^\\#]*))?")


def canonical(name: str) -> str:
    """A distribution name as PEP 503 compares them (`Open_Clip.Torch` == `open-clip-torch`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} of every `name==version` line of a pip requirements lock whose
    environment marker (if any) holds here; hash and comment lines are skipped."""
    from packaging.markers import Marker

    pins = {}
    for line in Path(path).read_text().splitlines():
        m = _PIN.match(line.strip())
        if m and (not m[3] or not m[3].strip() or Marker(m[3].strip()).evaluate()):
            pins[canonical(m[1])] = m[2]
    return pins


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def installed_versions() -> dict[str, str]:
    """{canonical name: version} of every distribution importable here (first on sys.path wins)."""
    out: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonical(name), dist.version)
    return out


def installed_lock() -> Path | None:
    """The lock this environment was installed from (`make venv` copies it in), or None."""
    path = Path(sys.prefix) / LOCK_FILE
    return path if path.is_file() else None


@dataclass(frozen=True)
class LockStatus:
    """This environment against the lock it was installed from."""

    path: Path
    sha256: str
    pinned: int  # packages the lock pins (for this platform)
    differences: list[str] = field(default_factory=list)  # "name: installed X, locked Y"

    def describe(self) -> str:
        """One line for a card or a log."""
        text = f"installed from `{LOCK_FILE}` (SHA-256 `{self.sha256}`, {self.pinned} packages pinned)"
        if self.differences:
            text += f"; not at the locked version ({len(self.differences)}): " + "; ".join(self.differences)
        return text


def lock_status(path: Path | None = None) -> LockStatus | None:
    """Compare the installed packages with the lock at `path` (default: the environment's own copy);
    None when the environment was not installed from a lock."""
    path = path or installed_lock()
    if path is None:
        return None
    pins, have = read_lock(path), installed_versions()
    diffs = [f"{name}: installed {have.get(name, 'nothing')}, locked {version}"
             for name, version in sorted(pins.items()) if have.get(name) != version]
    return LockStatus(path=path, sha256=sha256(path), pinned=len(pins), differences=diffs)


def world_environment() -> dict[str, str | None]:
    """What a world-model build's bytes depend on: Python, the CPU kind and the instruction set torch's
    kernels dispatch to, each library of `WORLD_LIBRARIES`, and the lock's hash (None if unlocked)."""
    import torch

    have = installed_versions()
    env: dict[str, str | None] = {"python": platform.python_version(), "machine": platform.machine(),
                                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    env.update({lib: have.get(canonical(lib)) for lib in WORLD_LIBRARIES})
    env["torch"] = torch.__version__  # with its build tag (+cu130, +cpu): another build, other kernels
    status = lock_status()
    env["lock_sha256"] = status.sha256 if status else None
    return env
