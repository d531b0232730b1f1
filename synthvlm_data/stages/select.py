"""Stage 4, select: score = w_clip * clip + w_ssim * ssim, best image per caption, then top-N.

SynthVLM keeps the top 100K of ~1M by CLIPScore + 0.5 * SSIM (the recipe holds the weights and
size). The steps, in order:

1. best of k: each caption keeps its highest-scoring image;
2. thresholds (`min_clip`, `min_ssim`) on that best image;
3. size: `top_n`, or `ratio` of the captions scored (floor, at least 1), or everything;
4. which ones: the global top by score, or, with `diversity`, per-cluster quotas over caption
   embeddings filled by score (Synth^2; clusters from `synthvlm_data.clustering`).

Ties are broken deterministically: within a caption by the lower repeat index, across captions
by the sample id, so the selection never depends on input order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from synthvlm_data.clustering import DiversityConfig, cluster_captions, histogram, occupancy_metrics
from synthvlm_data.columns import SAFETY_FIELDS, SELECTION_SCHEMA
from synthvlm_data.config import SelectConfig
from synthvlm_data.models.devices import resolve_device
from synthvlm_data.stages.base import RunContext, Stage
from synthvlm_data.workdir import SCORE, SELECT
from synthvlm_data.workunits import WorkUnit, plan_units


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


QUOTA_RULES = ("uniform", "proportional")


def quota_order(
    labels: np.ndarray,
    score: np.ndarray,
    ids: np.ndarray,
    rule: str = "uniform",
    weights: Mapping[int, float] | None = None,
) -> np.ndarray:
    """Order candidates so that the first n of them fill per-cluster quotas, for every n.

    Each candidate gets its rank r within its cluster (by score descending, ties by id). Then:
    - `uniform`: priority r: round-robin over clusters, one pick per cluster per round; a cluster
      that runs out drops out, so the counts are max-min fair (differ by at most one among the
      clusters that still have candidates);
    - `proportional`: priority (r + 1/2) / w_c (Sainte-Lague / Webster divisors): counts
      proportional to the cluster weights `w_c` (the pool's cluster sizes by default).
    Equal priorities (the last, partial round) go to the higher score, then the lower id:
    deterministic and independent of input order.

    Returns indices into the inputs.
    """
    if rule not in QUOTA_RULES:
        raise ValueError(f"unknown quota rule '{rule}' (known: {', '.join(QUOTA_RULES)})")
    labels = np.asarray(labels, dtype=np.int64)
    score = np.asarray(score, dtype=np.float64)
    ids_s = np.asarray(ids, dtype=object).astype(str)
    if not (labels.shape == score.shape == ids_s.shape):
        raise ValueError("labels, score and ids must have the same length")
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    # Rank within cluster: sort by (label, -score, id).
    by_cluster = np.lexsort((ids_s, -score, labels))
    sorted_labels = labels[by_cluster]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, labels.size]))
    rank = np.empty(labels.size, dtype=np.int64)
    rank[by_cluster] = np.arange(labels.size) - run_start
    if rule == "uniform":
        priority = rank.astype(np.float64)
    else:
        if weights is None:
            uniq, counts = np.unique(labels, return_counts=True)
            weights = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
        w = np.array([float(weights.get(int(c), 0.0)) for c in labels])
        if np.any(w <= 0):
            raise ValueError("proportional quotas need a positive weight for every candidate's cluster")
        priority = (rank + 0.5) / w
    return np.lexsort((ids_s, -score, priority))


def diversity_stats(k: int, pool: np.ndarray, candidates: np.ndarray, selected: np.ndarray, cfg: DiversityConfig) -> dict:
    """The before/after cluster histograms of a selection, with their summary metrics."""
    sets = {"pool": pool, "candidates": candidates, "selected": selected}
    return {
        "k": int(k),
        "k_requested": cfg.clusters,
        "seed": cfg.seed,
        "quota": cfg.quota,
        "embedder": cfg.embedder.id,
        "histogram": {name: histogram(v, k) for name, v in sets.items()},
        "metrics": {name: occupancy_metrics(histogram(v, k)) for name, v in sets.items()},
    }


def select_best(
    scores: pa.Table, cfg: SelectConfig, clusters: Mapping[str, int] | None = None, k: int | None = None
) -> tuple[pa.Table, dict]:
    """Return the selected rows (ordered by rank = score order) and selection statistics.

    `clusters` maps every caption id to its cluster (0..k-1); it is required when
    `cfg.diversity` is set and ignored otherwise.
    """
    if cfg.diversity is not None and clusters is None:
        raise ValueError("select.diversity is set: pass the caption clusters (synthvlm_data.clustering.cluster_captions)")
    ids = np.asarray(scores["id"].to_pylist(), dtype=object)
    repeat = pc.cast(scores["repeat"], pa.int64()).to_numpy()
    clip = scores["clip_score"].to_numpy()
    ssim = scores["ssim"].to_numpy()
    score = combined_score(clip, ssim, cfg)
    if not np.all(np.isfinite(score)):
        bad = ids[~np.isfinite(score)][:3].tolist()
        raise ValueError(f"non-finite scores for samples {bad}: the score stage must not produce NaN")
    safety = "safe" in scores.column_names
    safe = scores["safe"].to_numpy(zero_copy_only=False) if safety else np.ones(score.size, dtype=bool)
    allowed = safe if cfg.drop_unsafe else np.ones(score.size, dtype=bool)

    # Best of k among the allowed images (an unsafe best image gives way to the caption's next one).
    best = np.flatnonzero(allowed)[best_of_k(ids[allowed], repeat[allowed], score[allowed])]
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

    cols = {
        "id": ids[chosen].tolist(),
        "repeat": repeat[chosen].astype(np.int32),
        "clip_score": clip[chosen],
        "ssim": ssim[chosen],
        "score": score[chosen],
        "rank": np.arange(n, dtype=np.int64),
    }
    schema = SELECTION_SCHEMA
    if safety:
        cols.update(nsfw_score=scores["nsfw_score"].to_numpy()[chosen], safe=safe[chosen])
        schema = pa.schema(list(SELECTION_SCHEMA) + [pa.field(k, t) for k, t in SAFETY_FIELDS])
    table = pa.table(cols, schema=schema)
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
    if safety:
        stats["safety"] = {"images_unsafe": int((~safe).sum()), "dropped": bool(cfg.drop_unsafe),
                           "captions_without_safe_image": int(np.unique(ids).size - np.unique(ids[safe]).size)}
    if diversity is not None:
        # What the quotas cost: the score the global top-N would have had.
        diversity["global_top_n_mean_score"] = float(score[by_score[:n]].mean()) if n else None
        stats["diversity"] = diversity
    return table, stats


class SelectStage(Stage):
    """All score shards -> one selection table (a global reduce over small columns)."""

    name = SELECT

    def device(self, ctx: RunContext) -> str:
        """The caption embedder's device when the selection clusters captions; else plain CPU work."""
        return resolve_device(None) if ctx.recipe.select.diversity is not None else "cpu"

    def prepare(self, ctx: RunContext) -> None:
        """Selection is cheap: it is redone whenever the selection rule changed since it was written."""
        ctx.work.keep_selection_for(ctx.recipe.select.model_dump(mode="json"))

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        return plan_units(SELECT, 1)

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        n = len(ctx.caption_units())
        scores = pa.concat_tables(ctx.store.read(WorkUnit(SCORE, i, n)) for i in range(n))
        clusters, k = None, None
        if ctx.recipe.select.diversity is not None:  # Synth^2 balance: k-means over caption embeddings
            caps = pa.concat_tables(ctx.store.read(u, ["id", "caption"]) for u in ctx.caption_units())
            clusters, k = cluster_captions(caps["id"].to_pylist(), caps["caption"].to_pylist(), ctx.recipe.select.diversity)
        table, stats = select_best(scores, ctx.recipe.select, clusters=clusters, k=k)
        ctx.work.write_selection_stats(stats)
        return table
