"""What the world measures about a build: curation per corruption kind, and how well each
selection rule picks images that show what their caption says (by the verifier).

Pure functions over plain tables, so the report, the tests and the experiments share them.
Intervals: Wilson 95% for shares; a seeded percentile bootstrap over captions for means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a share k/n (well-behaved at 0 and n, unlike k/n +- 2 se)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile 95% interval of the mean, resampling items with a fixed seed."""
    v = np.asarray(values, np.float64)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def curation_table(kinds: dict[str, str], kept_ids: set[str]) -> list[dict]:
    """Per caption kind (`clean` or a corruption): pool size, kept, and the share removed (clean:
    the share kept) with its Wilson interval. `kinds` maps source id -> kind."""
    rows = []
    for kind in sorted(set(kinds.values()), key=lambda k: (k != "clean", k)):
        ids = [i for i, k in kinds.items() if k == kind]
        kept = sum(1 for i in ids if i in kept_ids)
        n = len(ids)
        if kind == "clean":
            share, (lo, hi), what = kept / n, wilson(kept, n), "kept"
        else:
            share, (lo, hi), what = (n - kept) / n, wilson(n - kept, n), "removed"
        rows.append({"kind": kind, "n": n, "kept": kept, "measure": what, "share": share, "ci_low": lo, "ci_high": hi})
    return rows


RULES = ("random pick", "best CLIPScore", "best SSIM", "best clip + w*ssim", "oracle (best by verifier)")


def selection_table(groups: list[dict], w_clip: float = 1.0, w_ssim: float = 0.5, real: Sequence[float] | None = None,
                    seed: int = 0) -> dict:
    """Verifier alignment of the image each rule picks per caption.

    `groups`: one dict per caption with equal-length lists `alignment`, `exact`, `clip`, `ssim`
    (one entry per generated image, in repeat order). `random pick` is the expected value of a
    uniformly random image (the mean over the k images), not one draw. Ties go to the lowest
    repeat, as in selection. Returns rows with mean and bootstrap CI for alignment and exact
    match, and the paired gain of the recipe's rule over a random pick.
    """
    picks: dict[str, list[float]] = {r: [] for r in RULES}
    exact: dict[str, list[float]] = {r: [] for r in RULES}
    for g in groups:
        a, e = np.asarray(g["alignment"], float), np.asarray(g["exact"], float)
        clip, ssim = np.asarray(g["clip"], float), np.asarray(g["ssim"], float)
        chosen = {
            "best CLIPScore": int(np.argmax(clip)),
            "best SSIM": int(np.argmax(ssim)),
            "best clip + w*ssim": int(np.argmax(w_clip * clip + w_ssim * ssim)),
            "oracle (best by verifier)": int(np.argmax(a + 1e-3 * e)),
        }
        picks["random pick"].append(float(a.mean()))
        exact["random pick"].append(float(e.mean()))
        for rule, j in chosen.items():
            picks[rule].append(float(a[j]))
            exact[rule].append(float(e[j]))
    rows = []
    for rule in RULES:
        rows.append({"rule": rule, "n": len(picks[rule]), "alignment": float(np.mean(picks[rule])) if groups else float("nan"),
                     "alignment_ci": bootstrap_ci(picks[rule], seed=seed),
                     "exact": float(np.mean(exact[rule])) if groups else float("nan"),
                     "exact_ci": bootstrap_ci(exact[rule], seed=seed)})
    if real is not None:
        rows.append({"rule": "real renders (the caption's own image)", "n": len(real), "alignment": float(np.mean(real)),
                     "alignment_ci": bootstrap_ci(real, seed=seed), "exact": float(np.mean(np.asarray(real) == 1.0)),
                     "exact_ci": bootstrap_ci(np.asarray(real) == 1.0, seed=seed)})
    gain = np.asarray(picks["best clip + w*ssim"]) - np.asarray(picks["random pick"])
    return {"rows": rows, "gain_over_random": float(gain.mean()) if len(gain) else float("nan"),
            "gain_ci": bootstrap_ci(gain, seed=seed), "k": len(groups[0]["alignment"]) if groups else 0,
            "weights": {"clip": w_clip, "ssim": w_ssim}}
