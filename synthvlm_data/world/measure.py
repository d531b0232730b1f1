"""What a `profile: world` build measured, read from its work dir: the numbers SynthVLM claims,
checked against the world's exact ground truth.

- **curation**: per caption kind of the pool (clean, or a known corruption), the share the
  caption stage removed (clean: the share it kept), with Wilson 95% intervals;
- **selection**: for every caption with all k images scored, the verifier's alignment of the image
  each selection rule picks (random pick, best CLIPScore, best SSIM, the recipe's clip + w*ssim,
  the oracle), against the caption's own real render; bootstrap 95% intervals over captions;
- **reference**: held-out renders ("eval" split) with a true caption, the real-data row of the
  quality table (what COCO is in the paper).

The pool is regenerated from the recipe (it is a pure function of its settings), so the kind of
every caption is known without storing it in the dataset.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image

from synthvlm_data.world.analysis import curation_table, selection_table
from synthvlm_data.world.data import split_scenes
from synthvlm_data.world.pool import pool_rows
from synthvlm_data.world.render import render
from synthvlm_data.world.text import caption
from synthvlm_data.world.verify import verify

REFERENCE_N = 64
SSIM_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def world_sources(recipe) -> list:
    return [s for s in recipe.captions.sources if s.type == "world"]


def pool_index(recipe) -> dict[tuple[str, str], dict]:
    """(source name, source_id) -> the pool row (kind, caption, original image bytes)."""
    out = {}
    for src in world_sources(recipe):
        w = src.world_pool
        for row in pool_rows(w.n_clean, w.n_per_corruption, seed=w.seed):
            out[(src.name, row["id"])] = row
    return out


def reference_entries(n: int = REFERENCE_N, seed: int = 0) -> list[dict]:
    """Held-out renders with one true caption each: the world's real image-caption pairs."""
    rng = np.random.default_rng(seed)
    return [{"id": f"eval-{i:04d}", "image": render(s), "caption": caption(s, rng), "credit": "world renders (eval split)"}
            for i, s in enumerate(split_scenes("eval", n))]


def curation(recipe, kept: pa.Table, index: dict | None = None) -> dict:
    """The curation table; `kept` holds the caption stage's (source, source_id) rows; `index`:
    the recipe's `pool_index`, when the caller already has it."""
    index = pool_index(recipe) if index is None else index
    kinds = {f"{src}\x1f{sid}": row["kind"] for (src, sid), row in index.items()}
    kept_ids = {f"{s}\x1f{i}" for s, i in zip(kept["source"].to_pylist(), kept["source_id"].to_pylist(), strict=True)}
    return {"rows": curation_table(kinds, kept_ids), "n_pool": len(kinds), "n_kept": len(kept_ids & set(kinds))}


def selection(recipe, work, pool: pa.Table, image_stage: str, captions: pa.Table, index: dict | None = None) -> dict:
    """The selection table over every caption whose k images were all scored.

    `pool`: the work dir's scored pool (id, repeat, clip_score, ssim, _unit, _row);
    `captions`: the caption stage's (id, caption, source, source_id)."""
    k = recipe.generate.images_per_caption
    text = dict(zip(captions["id"].to_pylist(), captions["caption"].to_pylist(), strict=True))
    origin = {i: (s, sid) for i, s, sid in zip(captions["id"].to_pylist(), captions["source"].to_pylist(),
                                                captions["source_id"].to_pylist(), strict=True)}
    by_id: dict[str, dict[int, tuple[float, float, int, int]]] = {}
    for i, r, c, s, u, row in zip(*(pool[col].to_pylist() for col in ("id", "repeat", "clip_score", "ssim", "_unit", "_row")), strict=True):
        by_id.setdefault(i, {})[r] = (c, s, u, row)
    complete = sorted(i for i, reps in by_id.items() if len(reps) == k and i in text)
    wanted: dict[int, list[int]] = {}
    for i in complete:
        for _, _, u, row in by_id[i].values():
            wanted.setdefault(u, []).append(row)
    images = {u: work.images(image_stage, u, rows) for u, rows in wanted.items()}
    index = pool_index(recipe) if index is None else index
    groups, real = [], []
    per_attr: dict[str, dict[str, list[bool]]] = {"random pick": {}, "recipe rule": {}, "real render": {}}
    for i in complete:
        reps = [by_id[i][r] for r in sorted(by_id[i])]
        verdicts = [verify(images[u][row], text[i]) for _, _, u, row in reps]
        clip = [c for c, _, _, _ in reps]
        ssim = [s for _, s, _, _ in reps]
        groups.append({"alignment": [v.alignment for v in verdicts], "exact": [float(v.exact) for v in verdicts],
                       "clip": clip, "ssim": ssim})
        pick = int(np.argmax(recipe.select.w_clip * np.asarray(clip) + recipe.select.w_ssim * np.asarray(ssim)))
        for v in verdicts:
            for attr, checks in v.checks.items():
                per_attr["random pick"].setdefault(attr, []).extend(checks)
        for attr, checks in verdicts[pick].checks.items():
            per_attr["recipe rule"].setdefault(attr, []).extend(checks)
        row = index.get(origin[i])
        if row is not None:
            verdict = verify(Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB"), text[i])
            real.append(verdict.alignment)
            for attr, checks in verdict.checks.items():
                per_attr["real render"].setdefault(attr, []).extend(checks)
    table = selection_table(groups, recipe.select.w_clip, recipe.select.w_ssim, real=real or None, seed=recipe.seed)
    table["per_attribute"] = {who: {a: float(np.mean(v)) for a, v in sorted(attrs.items())} for who, attrs in per_attr.items()}
    # how the SSIM weight moves the pick (SynthVLM uses 0.5): alignment of best-of-k by clip + w * ssim
    table["w_ssim_sweep"] = []
    for w in SSIM_WEIGHTS:
        row = selection_table(groups, 1.0, w, seed=recipe.seed)
        pick = next(r for r in row["rows"] if r["rule"] == "best clip + w*ssim")
        table["w_ssim_sweep"].append({"w_ssim": w, "alignment": pick["alignment"], "alignment_ci": pick["alignment_ci"]})
    table["n_captions"] = len(groups)
    return table
