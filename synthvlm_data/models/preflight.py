"""The preflight: whether a model can be loaded here, asked before any work. Loads and downloads nothing.

It sits above `refs`, `tiny` and `clip` (it asks each of them), so those never import it back.
"""

from __future__ import annotations

import importlib.util

from synthvlm_data.errors import ModelUnavailableError
from synthvlm_data.models.clip import check_open_clip_pretrained, is_open_clip_arch
from synthvlm_data.models.refs import (IDENTICAL_PACKAGED, PACKAGED, ModelRef, check_hub_repo, local_files,
                                       offline_hint)
from synthvlm_data.models.tiny import TINY_MODELS


def check_available(ref: ModelRef, role: str, hint: str | None = None) -> None:
    """Fail early, with one clear line, if `ref` cannot be loaded here. Loads and downloads nothing.

    Tiny ids must be known builders; packaged models must be installed; local paths must exist;
    an open_clip architecture needs a known pretrained tag; a Hub id must be cached or reachable
    (its metadata is asked for), or have an identical packaged copy installed.
    """
    if ref.is_tiny:
        if ref.id not in TINY_MODELS:
            raise ModelUnavailableError(f"{role}: unknown tiny model '{ref.id}' (known: {', '.join(TINY_MODELS)})")
        return
    if local_files(ref, role, hint) is not None:
        return
    if is_open_clip_arch(ref.id):
        check_open_clip_pretrained(ref, role)
        return
    try:
        check_hub_repo(ref.id, ref.revision, role, hint or offline_hint(role))
    except ModelUnavailableError:
        fallback = IDENTICAL_PACKAGED.get(ref.id)
        if fallback is None or importlib.util.find_spec(PACKAGED[fallback][0]) is None:
            raise
