"""Every plot the project draws (PNG files for cards and reports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_caption_clusters(report: dict, path: Path) -> Path | None:
    """Curated vs synthetic caption-cluster shares and cluster-size histograms (the caption report)."""
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
