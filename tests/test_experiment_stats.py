"""The experiment's statistics (`experiment/stats.py`) on simulated arms with known truth.

Each simulated arm is a (seeds x scenes) matrix: grand mean + seed effect + scene effect + noise,
the structure of the experiment's scores. The checks are frequentist: intervals cover the truth at
about their level with 2 seeds and with 8, where a bootstrap over scenes only (what the experiment
reported before) or over seeds and scenes does not; Holm and TOST decide as defined, and the power
predicts the rejection rate of the same test.
"""

from __future__ import annotations

import numpy as np
import pytest

from synthvlm_data.experiment import stats as S


def arms(rng, n=8, m=150, delta=0.0, sd_seed=0.04, sd_scene=0.25, sd_res=0.1, shared_scene=True):
    """Two arms on the same seeds and scenes; a's true mean is b's + delta."""
    scene = rng.normal(0, sd_scene, m)
    a = 0.5 + delta + rng.normal(0, sd_seed, (n, 1)) + scene + rng.normal(0, sd_res, (n, m))
    b = 0.5 + rng.normal(0, sd_seed, (n, 1)) + (scene if shared_scene else rng.normal(0, sd_scene, m)) \
        + rng.normal(0, sd_res, (n, m))
    return a, b


def one_level_ci(a, seed, iters=500):
    """What the experiment reported before: resample scenes of the per-scene mean over seeds."""
    v = a.mean(axis=0)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(iters, len(v)))
    return np.percentile(v[idx].mean(axis=1), [2.5, 97.5])


def two_level_bootstrap_ci(a, seed, iters=500):
    """A bootstrap resampling seeds and scenes: with 2 seeds it can draw only 3 seed sets."""
    rng = np.random.default_rng(seed)
    n, m = a.shape
    ws = rng.multinomial(n, np.full(n, 1 / n), size=iters) / n
    wc = rng.multinomial(m, np.full(m, 1 / m), size=iters) / m
    return np.percentile(np.einsum("bi,ij,bj->b", ws, a, wc), [2.5, 97.5])


@pytest.mark.parametrize("n_seeds", [2, 8])
def test_interval_covers_the_truth_where_bootstraps_do_not(n_seeds):
    rng = np.random.default_rng(n_seeds)
    trials, hits = 200, {"t": 0, "scenes only": 0, "seeds and scenes": 0}
    for t in range(trials):
        # the seed-to-seed spread dominates the mean's error, as in the experiment
        a = 0.5 + rng.normal(0, 0.08, (n_seeds, 1)) + rng.normal(0, 0.2, 150) + rng.normal(0, 0.1, (n_seeds, 150))
        for name, (lo, hi) in (("t", S.mean_interval(a)["ci"]), ("scenes only", one_level_ci(a, t)),
                               ("seeds and scenes", two_level_bootstrap_ci(a, t))):
            hits[name] += lo <= 0.5 <= hi
    cover = {k: v / trials for k, v in hits.items()}
    assert cover["t"] >= 0.88, cover  # nominal 0.95; Satterthwaite with 1-7 df is close, not exact
    assert cover["scenes only"] <= 0.75, cover
    if n_seeds == 2:
        assert cover["seeds and scenes"] <= 0.8, cover  # 3 possible seed sets: far too narrow


def test_contrast_is_paired_on_seeds_and_scenes():
    rng = np.random.default_rng(1)
    a, b = arms(rng, delta=0.03)
    c = S.contrast(a, b)
    assert c["diff"] == pytest.approx(a.mean() - b.mean())
    assert c["ci95"][0] < c["diff"] < c["ci95"][1] and c["ci90"][0] > c["ci95"][0]
    # the p-value and the interval agree: p < 0.05 exactly when the 95% interval excludes 0
    assert (c["p"] < 0.05) == (c["ci95"][0] > 0 or c["ci95"][1] < 0)
    # a scene's difficulty is shared by both arms and cancels in the paired difference: the interval
    # is much narrower than for arms whose scene effects do not match (the scene term then adds up)
    widths = []
    for shared in (True, False):
        widths.append(np.mean([np.diff(S.contrast(*arms(rng, delta=0.03, shared_scene=shared))["ci95"])[0]
                               for _ in range(10)]))
    assert widths[0] < 0.75 * widths[1]
    with pytest.raises(ValueError, match="share seeds and scenes"):
        S.contrast(a, b[:, :-1])


def test_p_values_are_calibrated_under_the_null_and_small_under_an_effect():
    rng = np.random.default_rng(2)
    for n in (2, 8):  # 2 seeds, as the experiment ran: still about 5% false positives
        null_p = [S.contrast(*arms(rng, n=n, delta=0.0, sd_seed=0.05))["p"] for _ in range(300)]
        assert 0.02 <= np.mean(np.array(null_p) < 0.05) <= 0.09, n
    eff = [S.contrast(*arms(rng, delta=0.1))["p"] for _ in range(20)]
    assert np.mean(np.array(eff) < 0.05) >= 0.9


def test_holm_matches_the_step_down_definition():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert S.holm([0.02]) == [0.02]


def test_equivalence_only_when_the_90_percent_interval_fits_the_margin():
    rng = np.random.default_rng(3)
    same = S.contrast(*arms(rng, n=16, m=400, delta=0.0, sd_seed=0.005), margin=0.02)
    assert same["equivalent"]
    differ = S.contrast(*arms(rng, n=16, m=400, delta=0.05, sd_seed=0.005), margin=0.02)
    assert not differ["equivalent"] and differ["p"] < 0.01
    noisy = S.contrast(*arms(rng, n=2, m=30, delta=0.0, sd_seed=0.05), margin=0.02)
    assert not noisy["equivalent"]  # no difference found is not equality: too little data to say
    assert S.equivalent([-0.01, 0.019], 0.02) and not S.equivalent([-0.01, 0.021], 0.02)


def test_components_recover_the_simulation_and_power_predicts_rejections():
    rng = np.random.default_rng(4)
    big = 0.5 + rng.normal(0, 0.05, (60, 1)) + rng.normal(0, 0.2, 400) + rng.normal(0, 0.1, (60, 400))
    c = S.components(big)
    assert c.seed == pytest.approx(0.05 ** 2, rel=0.4)
    assert c.scene == pytest.approx(0.2 ** 2, rel=0.2)
    assert c.residual == pytest.approx(0.1 ** 2, rel=0.05)
    # the difference of paired arms: seed terms of both arms, no shared scene term
    diff_comp = S.Components(seed=2 * 0.03 ** 2, scene=0.0, residual=2 * 0.1 ** 2)
    for n in (3, 6):
        predicted = S.power(diff_comp, n, 150, delta=0.03)
        hits = [S.contrast(*arms(rng, n=n, m=150, delta=0.03, sd_seed=0.03))["p"] < 0.05 for _ in range(300)]
        assert abs(np.mean(hits) - predicted) < 0.08, (n, np.mean(hits), predicted)
    assert S.power(diff_comp, 6, 150, 0.0) == pytest.approx(0.05, abs=1e-3)
    n80 = S.seeds_for_power(diff_comp, 150, 0.03)
    assert S.power(diff_comp, n80, 150, 0.03) >= 0.8 > S.power(diff_comp, n80 - 1, 150, 0.03)
    # a large seed variance needs many seeds, but some number reaches the target ...
    many = S.seeds_for_power(S.Components(seed=1.0, scene=0.0, residual=0.0), 150, 0.03)
    assert many is not None and many > 1000
    # ... while a scene term too large for 150 scenes cannot be beaten with seeds
    assert S.seeds_for_power(S.Components(seed=0.0, scene=0.5, residual=0.01), 150, 0.03) is None
    with pytest.raises(ValueError, match="at least 2 seeds"):
        S.components(big[:1])


def test_one_seed_interval_is_over_scenes_and_says_so():
    x = np.random.default_rng(5).normal(0.5, 0.2, (1, 100))
    r = S.mean_interval(x)
    assert r["seeds"] == 1 and r["df"] == 99
    assert r["se"] == pytest.approx(x.std(ddof=1) / 10)
