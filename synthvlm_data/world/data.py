"""Splits of the world and the arrays models train on.

Scenes are indexed by (world seed, index); each split is a disjoint index range, so the scenes the
models were trained on never appear in evaluation or in the caption pool of the `shapes` recipe.
"""

from __future__ import annotations

import numpy as np

from synthvlm_data.world.render import render, render_layers
from synthvlm_data.world.scene import Scene, sample_scenes

WORLD_SEED = 0
# test: the held-out scenes `synthvlm eval` scores trained VLMs on (no model or dataset is built from them);
# validation: the scenes every design decision of the world models is made on (guidance, steps,
# thresholds, the VAE gate), so that `test` is touched only by final measurements
SPLIT_OFFSET = {"train": 0, "eval": 10_000_000, "pool": 20_000_000, "test": 30_000_000, "validation": 40_000_000}


def split_scenes(split: str, n: int, world_seed: int = WORLD_SEED) -> list[Scene]:
    if split not in SPLIT_OFFSET:
        raise ValueError(f"unknown world split {split!r}; known: {', '.join(SPLIT_OFFSET)}")
    return sample_scenes(world_seed, n, offset=SPLIT_OFFSET[split])


def render_array(scenes: list[Scene]) -> np.ndarray:
    """(N, H, W, 3) uint8 renders."""
    return np.stack([np.asarray(render(s)) for s in scenes])


def render_layers_array(scenes: list[Scene]) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 renders and (N, H, W) float32 object coverage (the renderer's own
    anti-aliased mask), from one rendering of each scene."""
    layers = [render_layers(s) for s in scenes]
    return np.stack([im for im, _ in layers]), np.stack([a for _, a in layers]).astype(np.float32)
