"""Caption clusters and balance (Synth^2: the balance and semantic diversity of the captions matter
more than their number), computed one way wherever the project needs them:

- `select.diversity` (`DiversityConfig`): k-means over the caption embeddings, whose labels the
  selection fills per-cluster quotas over (`synthvlm_data.stages.select`);
- `captions.diversity` (`CaptionDiversityConfig`): the caption report's per-concept balance and the
  cluster occupancy of curated vs synthetic captions.

Both embed with the one sentence-embedder loader (`models.text.Embedder`), cluster with
`kmeans_labels` and measure with `normalised_entropy` / `occupancy_metrics`. The two recipe sections
keep their own keys and defaults (a quota rule has no place in a report, a subsample size none in a
selection), so they are two small schema classes side by side.

Determinism: embeddings are computed in a fixed order and batch size and rounded to 1e-5 before
k-means (fixed `random_state`), and labels are renumbered by first appearance, so the same recipe
gives the same labels on one machine. A different BLAS or thread count can move a caption that sits
on a cluster boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from synthvlm_data.models.refs import ModelRef
from synthvlm_data.schema import StrictModel

MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"


class DiversityConfig(StrictModel):
    """Diversity-balanced selection (`select.diversity`). Caption embeddings are clustered with
    k-means (fixed k and seed) and the selection fills per-cluster quotas by score instead of
    taking the global top-N.

    quota: `uniform` gives every cluster the same share (clusters with too few candidates give
    their unused slots to the others: max-min fair); `proportional` keeps the pool's cluster
    proportions (Sainte-Lague apportionment), i.e. a stratified top-N.
    """

    clusters: int = Field(default=16, ge=2, description="k of k-means (clamped to the distinct captions).")
    seed: int = Field(default=0, ge=0, description="k-means random_state.")
    n_init: int = Field(default=4, ge=1, description="k-means restarts (best inertia kept).")
    embedder: ModelRef = ModelRef(id=MINILM_HUB)
    batch_size: int = Field(default=64, ge=1, description="captions per embedding batch.")
    quota: Literal["uniform", "proportional"] = "uniform"


class CaptionDiversityConfig(StrictModel):
    """Synth^2 balance/diversity report (`captions.diversity`): per-concept counts, normalised
    entropy, max/min ratio; k-means (fixed k, seed) over caption embeddings with cluster-size
    histograms (PNG)."""

    k: int = Field(default=16, ge=2, description="k-means clusters (capped at the caption count).")
    seed: int | None = Field(default=None, ge=0, description="Default: the recipe seed.")
    max_points: int | None = Field(default=20000, ge=2, description="Evenly subsample larger sets.")
    embedder: ModelRef | None = Field(default=None, description="Default: captions.embedder.")
    batch_size: int = Field(default=64, ge=1)


# --------------------------------------------------------------------------- embeddings + k-means


def embed_captions(texts: Sequence[str], cfg: DiversityConfig) -> np.ndarray:
    """L2-normalised sentence embeddings (all-MiniLM-L6-v2 by default), float32 (N, D)."""
    from synthvlm_data.models.text import Embedder

    embedder = Embedder(cfg.embedder, role="select.diversity.embedder")
    return embedder.encode(list(texts), batch_size=cfg.batch_size)


def kmeans_labels(emb: np.ndarray, clusters: int, seed: int, n_init: int = 4) -> tuple[np.ndarray, int]:
    """k-means labels of each row and the k actually used (clamped to the distinct rows).

    Labels are renumbered by first appearance in row order, so label 0 is the cluster of the
    first row: the numbering does not depend on k-means' internal centroid order.
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


# --------------------------------------------------------------------------- occupancy


def entropy(counts: Sequence[int]) -> float:
    """Shannon entropy H(p) in nats of the distribution the (non-negative) counts make."""
    c = np.asarray([x for x in counts if x > 0], dtype=np.float64)
    if c.sum() == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def normalised_entropy(counts: Sequence[int], k: int | None = None) -> float:
    """H(p) / log k over k bins (default: len(counts)); 0 for k <= 1. 1 = perfectly balanced."""
    k = len(counts) if k is None else k
    return entropy(counts) / math.log(k) if k > 1 else 0.0


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
    nonzero = c[c > 0]
    h = entropy(counts)
    return {
        "n": int(total),
        "k": int(k),
        "normalised_entropy": round(h / math.log(k), 6) if k > 1 else 1.0,
        "coverage": round(float((c > 0).mean()), 6),
        "max_min_ratio": round(float(nonzero.max() / nonzero.min()), 6),
        "kl_to_uniform": round(math.log(k) - h, 6),
    }


# --------------------------------------------------------------------------- the caption report


def subsample(n: int, max_points: int | None) -> np.ndarray:
    """Ascending row positions: all `n`, or `max_points` evenly spaced."""
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.linspace(0, n - 1, max_points).round().astype(np.int64)


def cluster_report(sets: dict[str, np.ndarray], k: int, seed: int, max_points: int | None) -> dict:
    """k-means on the union of the (subsampled) sets; per-set occupancy of the shared clusters."""
    parts = {name: emb[subsample(len(emb), max_points)] for name, emb in sets.items() if len(emb)}
    if not parts:
        return {"k": 0}
    labels, k_eff = kmeans_labels(np.concatenate(list(parts.values())), k, seed)
    if k_eff < 2:
        return {"k": k_eff, "note": "fewer than 2 distinct captions"}
    out = {"k": k_eff, "k_requested": k, "seed": seed, "sets": {}}
    start = 0
    for name, emb in parts.items():
        sizes = np.asarray(histogram(labels[start : start + len(emb)], k_eff))
        start += len(emb)
        out["sets"][name] = {
            "n": int(len(emb)),
            "cluster_sizes": sizes.tolist(),
            "normalised_entropy": round(normalised_entropy(sizes.tolist(), k_eff), 6),
            "coverage": round(float((sizes > 0).mean()), 6),
            "max_cluster_share": round(float(sizes.max() / sizes.sum()), 6),
        }
    return out
