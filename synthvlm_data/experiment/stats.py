"""Statistics for comparing training-data arms over seeds and scenes.

An arm's score is a (seeds x scenes) matrix: each seed is a whole training run, each scene an
evaluation item (a scene's VQA questions are averaged first: questions about one image are not
independent). Two sources of noise matter and both are resampled:

- `bootstrap_mean` / `contrast`: a two-level bootstrap. Each replicate draws seeds with replacement
  and, independently, scenes with replacement; a contrast between two arms draws the same seeds
  (seed s of every arm shares its random draws: the pairing) and the same scenes for both arms.
  Resampling only items of the mean over seeds (what a one-level bootstrap does) leaves the
  seed-to-seed variance out, and its intervals are too narrow when that variance dominates
  (tests/test_experiment_stats.py measures both coverages).
- `holm`: Holm's step-down adjustment over a family of contrasts fixed in advance.
- `equivalent`: equivalence only through TOST, by the interval-inclusion rule: the 90% interval of the
  difference lies inside (-margin, +margin) (two one-sided tests at 5%).
- `components` and `power`: variance components of a difference matrix (two-way ANOVA without
  replication, method of moments) and the normal-approximation power of a design of n seeds x m
  scenes to detect a difference `delta` (two-sided, level alpha); `seeds_for_power` sizes a design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOOT = 4000


def _matrix(x) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"expected a (seeds x scenes) matrix, got shape {m.shape}")
    return m


def _replicates(mats: list[np.ndarray], seed: int, n_boot: int) -> list[np.ndarray]:
    """For each matrix, the mean under the same n_boot two-level resamples (seeds and scenes)."""
    n, m = mats[0].shape
    rng = np.random.default_rng(seed)
    w_seed = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n  # (B, n) weights
    w_scene = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot) / m  # (B, m)
    return [np.einsum("bi,ij,bj->b", w_seed, a, w_scene) for a in mats]


def bootstrap_mean(mat, seed: int = 0, n_boot: int = BOOT, level: float = 0.95) -> dict:
    """The mean of a (seeds x scenes) matrix with its two-level percentile interval."""
    a = _matrix(mat)
    (reps,) = _replicates([a], seed, n_boot)
    lo, hi = np.percentile(reps, [50 * (1 - level), 50 * (1 + level)])
    return {"mean": float(a.mean()), "ci": [float(lo), float(hi)], "level": level,
            "seeds": a.shape[0], "scenes": a.shape[1]}


def contrast(a, b, seed: int = 0, n_boot: int = BOOT, margin: float | None = None) -> dict:
    """mean(a) - mean(b) for two arms scored on the same seeds (rows) and scenes (columns): the
    difference, its 95% and 90% two-level intervals, a two-sided bootstrap p-value and, with
    `margin`, the TOST verdict."""
    a, b = _matrix(a), _matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"the arms must share seeds and scenes: shapes {a.shape} and {b.shape}")
    ra, rb = _replicates([a, b], seed, n_boot)
    d = ra - rb
    diff = float(a.mean() - b.mean())
    ci95 = [float(x) for x in np.percentile(d, [2.5, 97.5])]
    ci90 = [float(x) for x in np.percentile(d, [5, 95])]
    # two-sided: twice the smaller tail of the bootstrap distribution beyond 0 (never below 1/(B+1))
    tail = min(np.mean(d <= 0), np.mean(d >= 0))
    p = float(min(1.0, max(2 * tail, 1.0 / (n_boot + 1))))
    out = {"diff": diff, "ci95": ci95, "ci90": ci90, "p": p, "seeds": a.shape[0], "scenes": a.shape[1]}
    if margin is not None:
        out["margin"] = margin
        out["equivalent"] = equivalent(ci90, margin)
    return out


def equivalent(ci90: list[float], margin: float) -> bool:
    """TOST at 5% by interval inclusion: the 90% interval inside (-margin, +margin)."""
    return -margin < ci90[0] and ci90[1] < margin


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


@dataclass(frozen=True)
class Components:
    """Variance components of a (seeds x scenes) matrix: seed, scene and residual."""

    seed: float
    scene: float
    residual: float

    def se(self, n_seeds: int, n_scenes: int) -> float:
        """Standard error of the grand mean of an n_seeds x n_scenes design."""
        return math.sqrt(self.seed / n_seeds + self.scene / n_scenes + self.residual / (n_seeds * n_scenes))


def components(mat) -> Components:
    """Method-of-moments components of a two-way layout without replication (negative estimates
    clipped to 0). For a contrast, pass the difference matrix a - b (paired seeds and scenes)."""
    x = _matrix(mat)
    n, m = x.shape
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 seeds and 2 scenes to separate the components, got {x.shape}")
    grand = x.mean()
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    ms_seed = m * ((rows - grand) ** 2).sum() / (n - 1)
    ms_scene = n * ((cols - grand) ** 2).sum() / (m - 1)
    resid = x - rows[:, None] - cols[None, :] + grand
    ms_res = (resid ** 2).sum() / ((n - 1) * (m - 1))
    return Components(seed=max(0.0, (ms_seed - ms_res) / m), scene=max(0.0, (ms_scene - ms_res) / n),
                      residual=float(ms_res))


def power(comp: Components, n_seeds: int, n_scenes: int, delta: float, alpha: float = 0.05) -> float:
    """Probability that a two-sided level-alpha test of a difference rejects when the true
    difference is `delta` (normal approximation, the components of the difference matrix)."""
    from scipy.stats import norm

    se = comp.se(n_seeds, n_scenes)
    if se == 0:
        return 1.0 if delta != 0 else alpha
    z = norm.ppf(1 - alpha / 2)
    return float(norm.cdf(abs(delta) / se - z) + norm.cdf(-abs(delta) / se - z))


def seeds_for_power(comp: Components, n_scenes: int, delta: float, target: float = 0.8, alpha: float = 0.05,
                    max_seeds: int = 1000) -> int | None:
    """The fewest seeds reaching `target` power with n_scenes scenes (None if even max_seeds fall short:
    the scene term alone is too large)."""
    for n in range(2, max_seeds + 1):
        if power(comp, n, n_scenes, delta, alpha) >= target:
            return n
    return None
