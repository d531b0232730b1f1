"""Selection: score = w_clip * clip + w_ssim * ssim, best image per caption, then top-N.

SynthVLM keeps the top 100K of ~1M by CLIPScore + 0.5 * SSIM (the recipe holds the weights and
size). Ties are broken deterministically: within a caption by the lower repeat index, across
captions by the sample id, so the selection never depends on input order.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synthvlm_data.config import SelectConfig

SELECTION_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("repeat", pa.int32()),
        ("clip_score", pa.float64()),
        ("ssim", pa.float64()),
        ("score", pa.float64()),
        ("rank", pa.int64()),
    ]
)


def combined_score(clip: np.ndarray, ssim: np.ndarray, cfg: SelectConfig) -> np.ndarray:
    return cfg.w_clip * np.asarray(clip, dtype=np.float64) + cfg.w_ssim * np.asarray(ssim, dtype=np.float64)


def _summary(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"count": 0}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def select_best(scores: pa.Table, cfg: SelectConfig) -> tuple[pa.Table, dict]:
    """Return the selected rows (ordered by rank) and selection statistics."""
    ids = np.asarray(scores["id"].to_pylist(), dtype=object)
    repeat = pc.cast(scores["repeat"], pa.int64()).to_numpy()
    clip = scores["clip_score"].to_numpy()
    ssim = scores["ssim"].to_numpy()
    score = combined_score(clip, ssim, cfg)
    if not np.all(np.isfinite(score)):
        bad = ids[~np.isfinite(score)][:3].tolist()
        raise ValueError(f"non-finite scores for samples {bad}: the score stage must not produce NaN")

    # Best of k per caption: sort by (id, -score, repeat) and keep the first row of each id.
    order = np.lexsort((repeat, -score, ids.astype(str)))
    first = np.ones(order.size, dtype=bool)
    first[1:] = ids[order][1:] != ids[order][:-1]
    best = order[first]

    keep = np.ones(best.size, dtype=bool)
    if cfg.min_clip is not None:
        keep &= clip[best] >= cfg.min_clip
    if cfg.min_ssim is not None:
        keep &= ssim[best] >= cfg.min_ssim
    candidates = best[keep]

    # Rank by score descending, ties by id: independent of input order.
    ranked = candidates[np.lexsort((ids[candidates].astype(str), -score[candidates]))]
    if cfg.top_n is not None:
        n = min(cfg.top_n, ranked.size)
    elif cfg.ratio is not None:
        n = min(ranked.size, max(1, math.floor(cfg.ratio * best.size)))
    else:
        n = ranked.size
    chosen = ranked[:n]
    rejected = np.setdiff1d(np.arange(score.size), chosen)

    table = pa.table(
        {
            "id": ids[chosen].tolist(),
            "repeat": repeat[chosen].astype(np.int32),
            "clip_score": clip[chosen],
            "ssim": ssim[chosen],
            "score": score[chosen],
            "rank": np.arange(n, dtype=np.int64),
        },
        schema=SELECTION_SCHEMA,
    )
    stats = {
        "images_scored": int(score.size),
        "captions_scored": int(best.size),
        "passed_thresholds": int(candidates.size),
        "selected": int(n),
        "requested": cfg.top_n if cfg.top_n is not None else cfg.ratio,
        "short_of_request": bool(cfg.top_n is not None and cfg.top_n > ranked.size),
        "selected_scores": {"clip_score": _summary(clip[chosen]), "ssim": _summary(ssim[chosen]), "score": _summary(score[chosen])},
        "rejected_scores": {"clip_score": _summary(clip[rejected]), "ssim": _summary(ssim[rejected]), "score": _summary(score[rejected])},
        "weights": {"w_clip": cfg.w_clip, "w_ssim": cfg.w_ssim},
    }
    return table, stats
