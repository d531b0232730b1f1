"""Files shipped with the package (concept lists, word lists, caption samples), named in recipes as
`package://NAME`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resolve_path(path: str) -> Path:
    """`package://NAME` names a file shipped in synthvlm_data/data/; anything else is a path."""
    if path.startswith("package://"):
        return Path(str(resources.files("synthvlm_data.data") / path[len("package://") :]))
    return Path(path).expanduser()
