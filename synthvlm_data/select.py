"""Selection: score = w_clip * clip + w_ssim * ssim, best image per caption, then top-N.

SynthVLM keeps the top 100K of ~1M by CLIPScore + 0.5 * SSIM (the recipe holds the weights and
size). The steps, in order:

1. best of k: each caption keeps its highest-scoring image;
2. thresholds (`min_clip`, `min_ssim`) on that best image;
3. size: `top_n`, or `ratio` of the captions scored (floor, at least 1), or everything;
4. which ones: the global top by score, or, with `diversity`, per-cluster quotas over caption
   embeddings filled by score (Synth^2; see `synthvlm_data.diversity`).

Ties are broken deterministically: within a caption by the lower repeat index, across captions
by the sample id, so the selection never depends on input order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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


def summarize(values: np.ndarray) -> dict:
    """count/mean/median/min/max of a score column (count only when empty).

    Values are sorted first so the float sums, and so the stats file, do not depend on row order.
    """
    values = np.sort(np.asarray(values, dtype=np.float64))
    if values.size == 0:
        return {"count": 0}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


_summary = summarize  # backwards-compatible private name


def best_of_k(ids: np.ndarray, repeat: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Index of each caption's best image (highest score, then lowest repeat), ordered by id."""
    order = np.lexsort((repeat, -score, ids.astype(str)))
    first = np.ones(order.size, dtype=bool)
    first[1:] = ids[order][1:] != ids[order][:-1]
    return order[first]


def selection_size(cfg: SelectConfig, n_candidates: int, n_captions: int) -> int:
    if cfg.top_n is not None:
        return min(cfg.top_n, n_candidates)
    if cfg.ratio is not None:
        return min(n_candidates, max(1, math.floor(cfg.ratio * n_captions)))
    return n_candidates


def select_best(
    scores: pa.Table, cfg: SelectConfig, clusters: Mapping[str, int] | None = None, k: int | None = None
) -> tuple[pa.Table, dict]:
    """Return the selected rows (ordered by rank = score order) and selection statistics.

    `clusters` maps every caption id to its cluster (0..k-1); it is required when
    `cfg.diversity` is set and ignored otherwise.
    """
    if cfg.diversity is not None and clusters is None:
        raise ValueError("select.diversity is set: pass the caption clusters (synthvlm_data.diversity.cluster_captions)")
    ids = np.asarray(scores["id"].to_pylist(), dtype=object)
    repeat = pc.cast(scores["repeat"], pa.int64()).to_numpy()
    clip = scores["clip_score"].to_numpy()
    ssim = scores["ssim"].to_numpy()
    score = combined_score(clip, ssim, cfg)
    if not np.all(np.isfinite(score)):
        bad = ids[~np.isfinite(score)][:3].tolist()
        raise ValueError(f"non-finite scores for samples {bad}: the score stage must not produce NaN")

    best = best_of_k(ids, repeat, score)
    keep = np.ones(best.size, dtype=bool)
    if cfg.min_clip is not None:
        keep &= clip[best] >= cfg.min_clip
    if cfg.min_ssim is not None:
        keep &= ssim[best] >= cfg.min_ssim
    candidates = best[keep]
    n = selection_size(cfg, candidates.size, best.size)

    # Rank by score descending, ties by id: independent of input order.
    by_score = candidates[np.lexsort((ids[candidates].astype(str), -score[candidates]))]
    diversity = None
    if cfg.diversity is None:
        chosen = by_score[:n]
    else:
        from synthvlm_data.diversity import diversity_stats, quota_order

        missing = [i for i in ids[best].tolist() if i not in clusters]
        if missing:
            raise ValueError(f"no cluster for caption ids {missing[:3]} ({len(missing)} in all)")
        pool_labels = np.array([clusters[i] for i in ids[best]], dtype=np.int64)
        cand_labels = np.array([clusters[i] for i in ids[candidates]], dtype=np.int64)
        k = int(k if k is not None else (max(clusters.values()) + 1 if clusters else 0))
        uniq, counts = np.unique(pool_labels, return_counts=True)
        weights = dict(zip(uniq.tolist(), counts.tolist(), strict=True))  # the pool's cluster sizes
        order = quota_order(cand_labels, score[candidates], ids[candidates], cfg.diversity.quota, weights)
        picked = candidates[order[:n]]
        chosen = picked[np.lexsort((ids[picked].astype(str), -score[picked]))]
        chosen_labels = np.array([clusters[i] for i in ids[chosen]], dtype=np.int64)
        diversity = diversity_stats(k, pool_labels, cand_labels, chosen_labels, cfg.diversity)
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
        "short_of_request": bool(cfg.top_n is not None and cfg.top_n > candidates.size),
        "selected_scores": {"clip_score": summarize(clip[chosen]), "ssim": summarize(ssim[chosen]), "score": summarize(score[chosen])},
        "rejected_scores": {"clip_score": summarize(clip[rejected]), "ssim": summarize(ssim[rejected]), "score": summarize(score[rejected])},
        "weights": {"w_clip": cfg.w_clip, "w_ssim": cfg.w_ssim},
    }
    if diversity is not None:
        # What the quotas cost: the score the global top-N would have had.
        diversity["global_top_n_mean_score"] = float(score[by_score[:n]].mean()) if n else None
        stats["diversity"] = diversity
    return table, stats
