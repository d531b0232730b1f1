"""Static checks over the source tree: no unpickling of untrusted files, no remote code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for d in ("synthvlm_data", "train", "builders") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize(
    "pattern, why",
    [
        (r"trust_remote_code\s*=\s*True", "remote code must never run"),
        (r"\bpickle\.loads?\(", "nothing is unpickled"),
        (r"\bjoblib\.load\(", "nothing is unpickled"),
        (r"torch\.load\((?![^)]*weights_only\s*=\s*True)", "torch.load only with weights_only=True"),
    ],
)
def test_no_unsafe_loading(pattern, why):
    assert FILES
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in FILES for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not hits, f"{why}: {hits}"
