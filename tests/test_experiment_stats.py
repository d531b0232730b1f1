"""The experiment's statistics (`experiment/stats.py`) on simulated arms with known truth.

Each simulated arm is a (seeds x scenes) matrix: grand mean + seed effect + scene effect + noise,
the structure of the experiment's scores. The checks are frequentist: intervals cover the truth at
about their level, the one-level bootstrap the experiment used before does not when seeds vary,
Holm and TOST decide as defined, and the power formula predicts the rejection rate.
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


def one_level_ci(a, seed):
    """What the experiment reported before: resample scenes of the per-scene mean over seeds."""
    v = a.mean(axis=0)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(S.BOOT, len(v)))
    return np.percentile(v[idx].mean(axis=1), [2.5, 97.5])


def test_two_level_interval_covers_where_the_one_level_one_does_not():
    rng = np.random.default_rng(0)
    trials, two, one = 150, 0, 0
    for t in range(trials):
        # seed-to-seed variance dominates the mean's error, as in the experiment (2-8 seeds)
        a = 0.5 + rng.normal(0, 0.08, (8, 1)) + rng.normal(0, 0.2, 150) + rng.normal(0, 0.1, (8, 150))
        truth = 0.5
        lo, hi = S.bootstrap_mean(a, seed=t, n_boot=1000)["ci"]
        two += lo <= truth <= hi
        lo1, hi1 = one_level_ci(a, t)
        one += lo1 <= truth <= hi1
    # 8 seeds: the seed bootstrap is a little narrow (a factor sqrt(7/8)); still far better than ignoring seeds
    assert two / trials >= 0.85
    assert one / trials <= 0.75


def test_contrast_is_paired_on_seeds_and_scenes():
    rng = np.random.default_rng(1)
    a, b = arms(rng, delta=0.03)
    c = S.contrast(a, b, seed=0)
    assert c["diff"] == pytest.approx(a.mean() - b.mean())
    assert c["ci95"][0] < c["diff"] < c["ci95"][1] and c["ci90"][0] > c["ci95"][0]
    # a scene's difficulty is shared by both arms and cancels in the paired difference: the interval
    # is much narrower than for arms whose scene effects do not match (the scene term then adds up)
    widths = []
    for shared in (True, False):
        w = [np.diff(S.contrast(*arms(rng, delta=0.03, shared_scene=shared), seed=t, n_boot=1000)["ci95"])[0]
             for t in range(10)]
        widths.append(np.mean(w))
    assert widths[0] < 0.75 * widths[1]
    with pytest.raises(ValueError, match="share seeds and scenes"):
        S.contrast(a, b[:, :-1])


def test_p_values_are_calibrated_under_the_null_and_small_under_an_effect():
    rng = np.random.default_rng(2)
    null_p = [S.contrast(*arms(rng, delta=0.0), seed=t, n_boot=1000)["p"] for t in range(120)]
    assert 0.01 <= np.mean(np.array(null_p) < 0.05) <= 0.13  # about 5%
    eff = [S.contrast(*arms(rng, delta=0.1), seed=t, n_boot=1000)["p"] for t in range(20)]
    assert np.mean(np.array(eff) < 0.05) >= 0.9


def test_holm_matches_the_step_down_definition():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert S.holm([0.02]) == [0.02]


def test_equivalence_only_when_the_90_percent_interval_fits_the_margin():
    rng = np.random.default_rng(3)
    same = S.contrast(*arms(rng, n=16, m=400, delta=0.0, sd_seed=0.005), seed=0, margin=0.02)
    assert same["equivalent"]
    differ = S.contrast(*arms(rng, n=16, m=400, delta=0.05, sd_seed=0.005), seed=0, margin=0.02)
    assert not differ["equivalent"] and differ["p"] < 0.01
    noisy = S.contrast(*arms(rng, n=2, m=30, delta=0.0, sd_seed=0.05), seed=0, margin=0.02)
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
    predicted = S.power(diff_comp, 6, 150, delta=0.03)
    hits = [S.contrast(*arms(rng, n=6, m=150, delta=0.03, sd_seed=0.03), seed=t, n_boot=800)["p"] < 0.05
            for t in range(100)]
    assert abs(np.mean(hits) - predicted) < 0.15
    assert S.power(diff_comp, 6, 150, 0.0) == pytest.approx(0.05, abs=1e-6)
    n80 = S.seeds_for_power(diff_comp, 150, 0.03)
    assert S.power(diff_comp, n80, 150, 0.03) >= 0.8 > S.power(diff_comp, n80 - 1, 150, 0.03)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        S.components(big[:1])
