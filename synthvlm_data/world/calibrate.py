"""Calibrate the `clip_similarity` caption filter for the world CLIP.

SynthVLM filters captions by CLIP similarity to their original image; the threshold depends on
the CLIP. As for the perplexity filter, the shipped value is the *largest* round threshold that
still keeps >= 99% of true captions of held-out renders (the validation split); the report states how
many wrong-attribute captions (the corruption this filter exists for) it then removes. Run with
`python -m synthvlm_data.world calibrate [--models DIR]`.
"""

from __future__ import annotations

import numpy as np
import torch

from synthvlm_data.world.data import split_scenes
from synthvlm_data.world.render import render
from synthvlm_data.world.text import caption, wrong_attribute


@torch.inference_mode()
def cosines(model, preprocess, tokenizer, images, texts, batch: int = 128) -> np.ndarray:
    out = []
    for s in range(0, len(texts), batch):
        x = torch.stack([preprocess(im) for im in images[s : s + batch]])
        fi = torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1)
        ft = torch.nn.functional.normalize(model.encode_text(tokenizer(list(texts[s : s + batch]))).float(), dim=-1)
        out.append((fi * ft).sum(-1).numpy())
    return np.concatenate(out)


def calibrate_clip_similarity(model, preprocess, tokenizer, n: int = 600, keep: float = 0.99, step: float = 0.01,
                              seed: int = 0, split: str = "validation") -> dict:
    """Threshold and its measured effect on held-out true vs wrong-attribute captions (the validation
    split: a threshold is a design decision)."""
    scenes = split_scenes(split, n)
    rng = np.random.default_rng(seed)
    images = [render(s) for s in scenes]
    good_t = [caption(s, rng) for s in scenes]
    bad_t = [wrong_attribute(t, s, rng) for t, s in zip(good_t, scenes)]
    good = cosines(model, preprocess, tokenizer, images, good_t)
    bad = cosines(model, preprocess, tokenizer, images, bad_t)
    threshold = float(np.floor(np.quantile(good, 1 - keep) / step) * step)
    return {"min_similarity": round(threshold, 4), "n": n, "split": split, "keep_target": keep,
            "kept_true": float(np.mean(good >= threshold)), "removed_wrong_attribute": float(np.mean(bad < threshold)),
            "true_median": float(np.median(good)), "wrong_median": float(np.median(bad)),
            "pairwise_true_higher": float(np.mean(good > bad))}
