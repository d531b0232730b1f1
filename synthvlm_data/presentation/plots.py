"""Every plot the project draws (PNG files linked from cards and reports).

matplotlib's object API (no pyplot: no global figure state, no GUI backend), and PNGs saved without
a version string, so the same data gives the same bytes.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _figure(w: float, h: float, dpi: int = 100) -> Figure:
    return Figure(figsize=(w, h), dpi=dpi)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, metadata={"Software": None})  # no version string: reproducible bytes
    return path


# --------------------------------------------------------------------------- the quality report


def plot_score_hist(sets: list, path: Path, title: str = "") -> Path:
    """CLIPScore, SSIM and score distributions of each set (objects with `name`, `clip`, `ssim`, `score`)."""
    fig = _figure(13, 3.8)
    axes = fig.subplots(1, 3)
    colors = {"selected": "tab:green", "rejected pool": "tab:red", "real reference": "tab:blue"}
    for ax, (attr, label) in zip(axes, (("clip", "CLIPScore (raw cosine)"), ("ssim", "SSIM (resize round trip)"), ("score", "score")), strict=True):
        values = [getattr(s, attr) for s in sets if len(getattr(s, attr))]
        lo, hi = (min(v.min() for v in values), max(v.max() for v in values)) if values else (0.0, 1.0)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
        for s in sets:
            v = getattr(s, attr)
            if not len(v):
                continue
            c = colors.get(s.name)
            ax.hist(v, bins=bins, density=True, histtype="step", linewidth=1.6, color=c, label=f"{s.name} (n={len(v)})")
            ax.axvline(float(np.mean(v)), color=c, linestyle="--", linewidth=1)
        ax.set_xlabel(label + " (dashed: mean)")
        ax.set_ylabel("density")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_top_bottom(top: list[dict], bottom: list[dict], path: Path, title: str = "") -> Path:
    """Two rows of tiles: the highest-scoring selected samples, the lowest-scoring pool ones."""
    n = max(len(top), len(bottom), 1)
    fig = _figure(2.3 * n, 7.0)
    axes = np.atleast_2d(fig.subplots(2, n, squeeze=False))
    for r, (label, items) in enumerate((("top selected", top), ("bottom of the pool", bottom))):
        for c in range(n):
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(items):
                continue
            it = items[c]
            ax.imshow(np.asarray(it["image"]), interpolation="nearest")
            cap = textwrap.shorten(it.get("caption") or "", 70, placeholder="...")
            ax.set_title(
                f"{label} #{c + 1}\nscore {it['score']:.3f} (clip {it['clip_score']:.3f}, ssim {it['ssim']:.3f})\n"
                + "\n".join(textwrap.wrap(cap, 30)[:3]),
                fontsize=7,
            )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_selection_clusters(div: dict, path: Path) -> Path:
    """Cluster histogram of the caption pool before and after the diversity-balanced selection."""
    fig = _figure(9, 3.6)
    ax = fig.subplots()
    k = div["k"]
    x = np.arange(k)
    for i, name in enumerate(("pool", "selected")):
        counts = np.asarray(div["histogram"][name], dtype=float)
        share = counts / counts.sum() if counts.sum() else counts
        m = div["metrics"][name]
        ax.bar(x + (i - 0.5) * 0.4, share, width=0.4, label=f"{name} (n={m['n']}, H={m['normalised_entropy']:.2f})")
    ax.set_xticks(x)
    ax.set_xlabel(f"caption cluster (k-means, k={k}, seed {div['seed']}; quota {div['quota']})")
    ax.set_ylabel("share of captions")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_selection_rules(selection: dict, path: Path, title: str = "") -> Path:
    """Verifier alignment of the image each selection rule picks (mean, 95% bootstrap interval)."""
    rows = selection["rows"]
    fig = _figure(8, 0.45 * len(rows) + 1.4)
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    means = np.asarray([r["alignment"] for r in rows])
    lo = means - np.asarray([r["alignment_ci"][0] for r in rows])
    hi = np.asarray([r["alignment_ci"][1] for r in rows]) - means
    ax.barh(y, means, xerr=np.vstack([lo, hi]), color="tab:blue", alpha=0.75, capsize=3)
    for yi, m, h in zip(y, means, hi, strict=True):
        ax.text(m + h + 0.01, yi, f"{m:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, [r["rule"] for r in rows], fontsize=8)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel(f"verifier alignment of the picked image (share of the caption's attributes seen; "
                  f"k={selection['k']}, n={selection['n_captions']} captions)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# --------------------------------------------------------------------------- the caption report


def plot_caption_clusters(report: dict, path: Path) -> Path | None:
    """Curated vs synthetic caption-cluster shares and cluster-size histograms (the caption report)."""
    sets = report.get("sets") or {}
    if not sets:
        return None
    k = report["k"]
    total = np.sum([np.asarray(s["cluster_sizes"]) for s in sets.values()], axis=0)
    order = np.argsort(-total, kind="stable")
    fig = _figure(11, 3.8)
    a, b = fig.subplots(1, 2)
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
    return _save(fig, path)


# --------------------------------------------------------------------------- training


def plot_loss_curve(series: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path | None:
    """Write the loss curve as a PNG (None when there is nothing to plot)."""
    if not series["train"] and not series["eval"]:
        return None
    fig = _figure(6, 3.6, dpi=110)
    ax = fig.subplots()
    if series["train"]:
        steps, values = zip(*series["train"], strict=True)
        ax.plot(steps, values, marker="o", markersize=3, label="train loss")
    if series["eval"]:
        steps, values = zip(*series["eval"], strict=True)
        ax.plot(steps, values, marker="s", markersize=4, linestyle="--", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("caption / answer token NLL")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
