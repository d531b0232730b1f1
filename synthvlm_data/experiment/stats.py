"""Statistics for comparing training-data arms over seeds and scenes.

An arm's score is a (seeds x scenes) matrix: each seed is a whole training run, each scene an
evaluation item (a scene's VQA questions are averaged first: questions about one image are not
independent). Both are random draws, so the mean's error has a seed, a scene and a residual part:
a two-way random-effects model without replication. Its mean squares give the variance of the
grand mean,

    se^2 = (MS_seed + MS_scene - MS_res) / (n m)  =  s2_seed / n + s2_scene / m + s2_res / (n m),

with Satterthwaite's degrees of freedom, and intervals and p-values from Student's t. With few
seeds the seed term has few degrees of freedom and the interval widens accordingly: with 2 seeds a
bootstrap that resamples seeds can pick only 3 seed sets and its intervals are far too narrow
(tests/test_experiment_stats.py measures the coverage of both, at 2 and 8 seeds).

- `mean_interval`: one arm's mean with its interval.
- `contrast`: mean(a) - mean(b) for arms scored on the same seeds (seed s of every arm shares its
  random draws: the pairing) and the same scenes, from the difference matrix a - b.
- `holm`: Holm's step-down adjustment over a family of contrasts fixed in advance.
- `equivalent`: equivalence only through TOST, by the interval-inclusion rule: the 90% interval of
  the difference lies inside (-margin, +margin) (two one-sided tests at 5%).
- `components`, `power`, `seeds_for_power`: the variance components (method of moments) and the
  power of the same t-test for a design of n seeds x m scenes, so the power reported is that of
  the test that decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _matrix(x) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"expected a (seeds x scenes) matrix, got shape {m.shape}")
    return m


def _mean_squares(x: np.ndarray) -> tuple[float, float, float]:
    n, m = x.shape
    grand = x.mean()
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    ms_seed = m * ((rows - grand) ** 2).sum() / (n - 1)
    ms_scene = n * ((cols - grand) ** 2).sum() / (m - 1)
    resid = x - rows[:, None] - cols[None, :] + grand
    ms_res = (resid ** 2).sum() / ((n - 1) * (m - 1))
    return float(ms_seed), float(ms_scene), float(ms_res)


def _se_df(ms_seed: float, ms_scene: float, ms_res: float, n: int, m: int) -> tuple[float, float]:
    """The grand mean's standard error and Satterthwaite's degrees of freedom."""
    combo = max(ms_seed + ms_scene - ms_res, ms_res, 1e-30)  # never below the residual-only variance
    denom = ms_seed ** 2 / (n - 1) + ms_scene ** 2 / (m - 1) + ms_res ** 2 / ((n - 1) * (m - 1))
    df = combo ** 2 / denom if denom > 0 else float(n * m - 1)
    return math.sqrt(combo / (n * m)), max(1.0, df)


def mean_interval(mat, level: float = 0.95) -> dict:
    """The mean of a (seeds x scenes) matrix, its standard error, degrees of freedom and t interval.
    One seed: the seed variance cannot be seen; the interval is over scenes only (`seeds` says 1)."""
    from scipy.stats import t

    x = _matrix(mat)
    n, m = x.shape
    if m < 2:
        raise ValueError(f"need at least 2 scenes, got {m}")
    if n == 1:
        se, df = float(x[0].std(ddof=1) / math.sqrt(m)), float(m - 1)
    else:
        se, df = _se_df(*_mean_squares(x), n, m)
    half = float(t.ppf(0.5 + level / 2, df)) * se
    mean = float(x.mean())
    return {"mean": mean, "se": se, "df": df, "ci": [mean - half, mean + half], "level": level,
            "seeds": n, "scenes": m}


def contrast(a, b, margin: float | None = None) -> dict:
    """mean(a) - mean(b) for two arms on the same seeds (rows) and scenes (columns): the difference,
    its 95% and 90% t intervals, the two-sided p and, with `margin`, the TOST verdict."""
    from scipy.stats import t

    a, b = _matrix(a), _matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"the arms must share seeds and scenes: shapes {a.shape} and {b.shape}")
    d = a - b
    c95 = mean_interval(d, 0.95)
    c90 = mean_interval(d, 0.90)
    stat = abs(c95["mean"]) / c95["se"] if c95["se"] > 0 else math.inf
    out = {"diff": c95["mean"], "se": c95["se"], "df": c95["df"], "ci95": c95["ci"], "ci90": c90["ci"],
           "p": float(2 * t.sf(stat, c95["df"])), "seeds": c95["seeds"], "scenes": c95["scenes"]}
    if margin is not None:
        out["margin"] = margin
        out["equivalent"] = equivalent(c90["ci"], margin)
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

    def se_df(self, n_seeds: int, n_scenes: int) -> tuple[float, float]:
        """Standard error of the grand mean of an n_seeds x n_scenes design and the degrees of
        freedom its estimate would have (the expected mean squares in Satterthwaite's formula)."""
        n, m = n_seeds, n_scenes
        return _se_df(self.residual + m * self.seed, self.residual + n * self.scene, self.residual, n, m)


def components(mat) -> Components:
    """Method-of-moments components (negative estimates clipped to 0). For a contrast, pass the
    difference matrix a - b (paired seeds and scenes)."""
    x = _matrix(mat)
    n, m = x.shape
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 seeds and 2 scenes to separate the components, got {x.shape}")
    ms_seed, ms_scene, ms_res = _mean_squares(x)
    return Components(seed=max(0.0, (ms_seed - ms_res) / m), scene=max(0.0, (ms_scene - ms_res) / n),
                      residual=ms_res)


def power(comp: Components, n_seeds: int, n_scenes: int, delta: float, alpha: float = 0.05) -> float:
    """Probability that the two-sided level-alpha t-test of `contrast` rejects when the true
    difference is `delta` (noncentral t with the design's Satterthwaite degrees of freedom)."""
    from scipy.stats import nct, t

    se, df = comp.se_df(n_seeds, n_scenes)
    crit = float(t.ppf(1 - alpha / 2, df))
    ncp = abs(delta) / se
    return float(nct.sf(crit, df, ncp) + nct.cdf(-crit, df, ncp))


def seeds_for_power(comp: Components, n_scenes: int, delta: float, target: float = 0.8,
                    alpha: float = 0.05) -> int | None:
    """The fewest seeds reaching `target` power with n_scenes scenes, or None when no number of
    seeds can (the scene and residual terms alone keep the power below the target: more scenes)."""
    from scipy.stats import norm

    limit_se = math.sqrt(comp.scene / n_scenes)  # infinitely many seeds
    if limit_se > 0 and norm.cdf(abs(delta) / limit_se - norm.ppf(1 - alpha / 2)) < target:
        return None
    lo, hi = 2, 2
    while power(comp, hi, n_scenes, delta, alpha) < target:
        lo, hi = hi, hi * 2
        if hi > 10 ** 7:
            return None
    while lo < hi:  # the smallest n in (lo, hi] with enough power
        mid = (lo + hi) // 2
        if power(comp, mid, n_scenes, delta, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return hi
