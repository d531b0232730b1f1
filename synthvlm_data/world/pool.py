"""The world's caption pool: held-out renders with true captions, and captions damaged in known
ways, each row carrying its original render (what the caption-vs-image filters compare against).

Every scene contributes exactly one caption, clean or corrupted, so a caption's fate in curation
is attributable to its own kind (a clean twin could otherwise make a damaged caption look like a
near-duplicate).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np

from synthvlm_data.world.data import split_scenes
from synthvlm_data.world.render import render
from synthvlm_data.world.text import CORRUPTIONS, caption, corrupt

CLEAN = "clean"


def pool_rows(n_clean: int, n_per_corruption: int, seed: int = 0, kinds: tuple[str, ...] = CORRUPTIONS) -> Iterator[dict]:
    """Rows {id, caption, kind, image: {"bytes", "path"}, n_objects}: clean and corrupted captions
    interleaved in a seeded order, each from its own held-out ("pool" split) scene."""
    unknown = set(kinds) - set(CORRUPTIONS)
    if unknown:
        raise ValueError(f"unknown corruption kinds {sorted(unknown)}; known: {', '.join(CORRUPTIONS)}")
    plan = [CLEAN] * n_clean + [k for k in kinds for _ in range(n_per_corruption)]
    order = np.random.default_rng(seed).permutation(len(plan))
    scenes = split_scenes("pool", len(plan))
    for i, slot in enumerate(order):
        kind, scene = plan[int(slot)], scenes[i]
        rng = np.random.default_rng([seed, i])
        text = caption(scene, rng)
        if kind != CLEAN:
            text = corrupt(text, scene, kind, rng)
        buf = io.BytesIO()
        render(scene).save(buf, format="PNG", optimize=False, compress_level=6)
        yield {"id": f"pool-{i:06d}", "caption": text, "kind": kind, "n_objects": len(scene.objects),
               "image": {"bytes": buf.getvalue(), "path": None}, "scene_seed": scene.seed}
