"""Zero-shot attribute accuracy of a CLIP on held-out world renders.

For each held-out scene with one or two objects and each attribute, the candidates are the true
canonical caption and every caption that differs from it in that attribute only (6 colours,
4 shapes, 2 sizes, 4 relations, 3 tones, 4 patterns, minus values another object already has);
the CLIP is right when the true caption scores highest. Chance is 1 / (number of candidates).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from synthvlm_data.world.scene import COLOURS, PATTERNS, RELATIONS, SHAPES, SIZES, TONES, Scene
from synthvlm_data.world.text import Claims, canonical, truth_claims


def _variants(claims: Claims, attribute: str) -> list[Claims]:
    """The true claims first, then each single-attribute alternative."""
    out = [claims]
    obj = claims.objects[0]
    taken = {(o["colour"], o["shape"]) for o in claims.objects[1:]}
    if attribute in ("colour", "shape", "size"):
        values = {"colour": COLOURS, "shape": SHAPES, "size": SIZES}[attribute]
        for v in values:
            if v == obj[attribute]:
                continue
            alt = copy.deepcopy(claims)
            alt.objects[0][attribute] = v
            if (alt.objects[0]["colour"], alt.objects[0]["shape"]) in taken:
                continue
            out.append(alt)
    elif attribute == "relation":
        i, rel, j = claims.relations[0]
        for v in RELATIONS:
            if v != rel:
                alt = copy.deepcopy(claims)
                alt.relations = [(i, v, j)]
                out.append(alt)
    else:
        values = {"tone": TONES, "pattern": PATTERNS}[attribute]
        for v in values:
            if v != getattr(claims, attribute):
                alt = copy.deepcopy(claims)
                setattr(alt, attribute, v)
                out.append(alt)
    return out


@torch.inference_mode()
def zero_shot_accuracy(model, preprocess, tokenizer, scenes: list[Scene], images) -> dict[str, dict]:
    """Per attribute: accuracy, number of items, chance level, and per-item correctness."""
    results: dict[str, list[bool]] = {a: [] for a in ("colour", "shape", "size", "relation", "tone", "pattern")}
    chance: dict[str, list[float]] = {a: [] for a in results}
    for scene, image in zip(scenes, images):
        if len(scene.objects) > 2:
            continue
        claims = truth_claims(scene)
        fi = model.encode_image(preprocess(image).unsqueeze(0)).float()
        fi = torch.nn.functional.normalize(fi, dim=-1)
        for attribute in results:
            if attribute == "relation" and not claims.relations:
                continue
            options = [canonical(c) for c in _variants(claims, attribute)]
            ft = torch.nn.functional.normalize(model.encode_text(tokenizer(options)).float(), dim=-1)
            sims = (fi @ ft.T)[0]
            results[attribute].append(int(torch.argmax(sims)) == 0)
            chance[attribute].append(1.0 / len(options))
    return {a: {"accuracy": float(np.mean(v)) if v else float("nan"), "n": len(v),
                "chance": float(np.mean(chance[a])) if v else float("nan"), "correct": v}
            for a, v in results.items()}
