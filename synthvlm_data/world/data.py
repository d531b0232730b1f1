"""Splits of the world and the arrays models train on.

Scenes are indexed by (world seed, index); each split is a disjoint index range, so the scenes the
models were trained on never appear in evaluation or in the caption pool of the `shapes` recipe.
"""

from __future__ import annotations

import numpy as np

from synthvlm_data.world.render import render
from synthvlm_data.world.scene import Scene, sample_scenes

WORLD_SEED = 0
# test: the held-out scenes `synthvlm eval` scores trained VLMs on (no model or dataset is built from them)
SPLIT_OFFSET = {"train": 0, "eval": 10_000_000, "pool": 20_000_000, "test": 30_000_000}


def split_scenes(split: str, n: int, world_seed: int = WORLD_SEED) -> list[Scene]:
    if split not in SPLIT_OFFSET:
        raise ValueError(f"unknown world split {split!r}; known: {', '.join(SPLIT_OFFSET)}")
    return sample_scenes(world_seed, n, offset=SPLIT_OFFSET[split])


def render_array(scenes: list[Scene]) -> np.ndarray:
    """(N, H, W, 3) uint8 renders."""
    return np.stack([np.asarray(render(s)) for s in scenes])
