"""Balance and diversity of a caption set (Synth^2: balance over concepts and semantic diversity
are what matter), computed the same way for curated and synthetic captions so they compare.

- Balance: captions per concept (curated captions are assigned the concepts they mention),
  normalised entropy H(p) / log(K) over the K concepts of the list, coverage (share of concepts with
  at least one caption) and the max/min ratio over covered concepts.
- Diversity: k-means (fixed k and seed) fitted on the sentence embeddings of all captions together;
  each set's cluster occupancy, its normalised entropy and coverage, and a PNG of the cluster-size
  distributions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from synthvlm_data.captions.concepts import ConceptMatcher


def normalised_entropy(counts, k: int | None = None) -> float:
    c = np.asarray([x for x in counts if x > 0], dtype=np.float64)
    k = len(counts) if k is None else k
    if k <= 1 or c.sum() == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum() / math.log(k))


def balance(captions: list[str], concepts: list[str], assigned: list[str | None] | None = None) -> dict:
    """Per-concept counts. `assigned` gives one concept per caption (synthetic); otherwise each
    caption counts for every concept it mentions."""
    counts = dict.fromkeys(concepts, 0)
    unmatched = 0
    if assigned is not None:
        for c in assigned:
            if c in counts:
                counts[c] += 1
            else:
                unmatched += 1
    else:
        m = ConceptMatcher(concepts)
        for cap in captions:
            hits = m.find(cap)
            unmatched += not hits
            for h in hits:
                counts[h] += 1
    covered = [v for v in counts.values() if v > 0]
    return {
        "n_captions": len(captions),
        "n_concepts": len(concepts),
        "covered_concepts": len(covered),
        "coverage": round(len(covered) / len(concepts), 6) if concepts else 0.0,
        "unmatched_captions": unmatched,
        "normalised_entropy": round(normalised_entropy(list(counts.values())), 6),
        "max_min_ratio": round(max(covered) / min(covered), 6) if covered else None,
        "per_concept": {c: v for c, v in counts.items() if v > 0},
    }


def _subsample(n: int, max_points: int | None) -> np.ndarray:
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.linspace(0, n - 1, max_points).round().astype(np.int64)


def cluster_report(sets: dict[str, np.ndarray], k: int, seed: int, max_points: int | None) -> dict:
    """k-means on the union of the (subsampled) sets; per-set occupancy of the shared clusters."""
    from sklearn.cluster import KMeans

    parts = {name: emb[_subsample(len(emb), max_points)] for name, emb in sets.items() if len(emb)}
    if not parts:
        return {"k": 0}
    x = np.concatenate(list(parts.values())).astype(np.float64)
    k_eff = int(min(k, len(np.unique(x.round(6), axis=0))))
    if k_eff < 2:
        return {"k": k_eff, "note": "fewer than 2 distinct captions"}
    km = KMeans(n_clusters=k_eff, random_state=seed, n_init=4).fit(x)
    out = {"k": k_eff, "k_requested": k, "seed": seed, "sets": {}}
    start = 0
    for name, emb in parts.items():
        labels = km.labels_[start : start + len(emb)]
        start += len(emb)
        sizes = np.bincount(labels, minlength=k_eff)
        out["sets"][name] = {
            "n": int(len(emb)),
            "cluster_sizes": sizes.tolist(),
            "normalised_entropy": round(normalised_entropy(sizes.tolist(), k_eff), 6),
            "coverage": round(float((sizes > 0).mean()), 6),
            "max_cluster_share": round(float(sizes.max() / sizes.sum()), 6),
        }
    return out


def plot_clusters(report: dict, path: Path) -> Path | None:
    sets = report.get("sets") or {}
    if not sets:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    total = np.sum([np.asarray(s["cluster_sizes"]) for s in sets.values()], axis=0)
    order = np.argsort(-total, kind="stable")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(sets)
    for i, (name, s) in enumerate(sets.items()):
        sizes = np.asarray(s["cluster_sizes"], dtype=float)
        share = sizes / sizes.sum()
        a.bar(np.arange(k) + i * width, share[order], width=width,
              label=f"{name} (n={s['n']}, H={s['normalised_entropy']:.2f})")
        b.hist(share, bins=min(20, k), alpha=0.6, label=name)
    a.set_xlabel(f"k-means cluster (k={k}, seed={report['seed']}), by total size")
    a.set_ylabel("share of the set's captions")
    a.legend(fontsize=8)
    b.set_xlabel("cluster size (share of the set)")
    b.set_ylabel("number of clusters")
    b.set_title("cluster-size histogram")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path
