"""The experiment's table and fixed contrasts (`experiment/run.py`: aggregate, markdown) on arm
results with a known difference, without training anything."""

from __future__ import annotations

import numpy as np

from synthvlm_data.evaluation.world_suite import build_items
from synthvlm_data.experiment.run import CONTRASTS, TABLE_CAPTION, Settings, aggregate, markdown


def _results(s: Settings, shift: dict[str, float]) -> list[dict]:
    """Per arm and seed, scores per scene and per question: arm `a` succeeds more often by shift[a]."""
    items = build_items(s.n_eval, s.eval_seed)
    out = []
    for arm in s.arms:
        for seed in s.seeds:
            rng = np.random.default_rng(1000 * seed + len(arm))
            easy = np.random.default_rng(7).random(len(items.scenes))  # shared scene difficulty
            p_scene = np.clip(0.35 + 0.4 * easy + shift[arm] + rng.normal(0, 0.02), 0, 1)
            caps = [{a: float(rng.random() < p) for a in TABLE_CAPTION} for p in p_scene]
            vqa = [float(rng.random() < p_scene[q.scene_index]) for q in items.questions]
            qtypes = sorted({q.qtype for q in items.questions})
            out.append({"arm": arm, "seed": seed, "n_train": 800, "items": {"scenes": len(items.scenes)},
                        "training": {}, "examples": [], "per_item": {"captioning": caps, "vqa": vqa},
                        "vqa": {t: {"score": float(np.mean(vqa))} for t in qtypes} | {"all": {"score": float(np.mean(vqa))}},
                        "baselines": {"majority": {"captioning": {a: {"score": 0.3} for a in TABLE_CAPTION},
                                                   "vqa": {"all": {"score": 0.4}}},
                                      "chance": {"vqa": {"all": {"score": 0.25}}}}})
    return out


def test_contrasts_are_fixed_paired_holm_adjusted_and_sized():
    s = Settings(n_eval=120, seeds=[0, 1, 2, 3], arms=["real", "random", "selected"])
    agg = aggregate(s, _results(s, {"real": 0.15, "random": 0.0, "selected": 0.0}))
    rows = {(r["a"], r["b"], r["endpoint"]): r for r in agg["contrasts"]}
    # only the fixed contrasts whose arms ran, each on both endpoints
    assert set(rows) == {(a, b, e) for a, b, _ in CONTRASTS if a in s.arms and b in s.arms for e in ("vqa", "caption")}
    real = rows[("real", "selected", "vqa")]
    assert real["diff"] > 0.1 and real["ci95"][0] > 0 and real["p_holm"] < 0.05 and real["verdict"] == "differ"
    same = rows[("selected", "random", "caption")]
    assert same["ci95"][0] < 0 < same["ci95"][1] and same["verdict"] in ("equivalent", "inconclusive")
    assert all(r["p_holm"] >= r["p"] for r in agg["contrasts"])
    assert 0 < same["power_at_target"] < 1 and same["seeds_for_80pct_power"] >= 2
    # VQA is scored per scene (its questions averaged), the unit the bootstrap resamples
    scenes_with_questions = len({q.scene_index for q in build_items(s.n_eval, s.eval_seed).questions})
    assert agg["arms"]["real"]["vqa"]["all"]["n_items"] == scenes_with_questions  # per scene, not per question
    assert all(r["df"] >= 1 for r in agg["contrasts"])
    table = markdown(agg, {})
    assert "| real - selected | vqa |" in table and "Holm over the 4 tests" in table


def test_one_seed_reports_no_power():
    s = Settings(n_eval=40, seeds=[0], arms=["random", "selected"])
    agg = aggregate(s, _results(s, {"random": 0.0, "selected": 0.0}))
    assert all(r["power_at_target"] is None for r in agg["contrasts"])
    assert "| selected - random | vqa |" in markdown(agg, {})


def test_a_run_made_with_other_world_models_is_refused_on_resume(tmp_path):
    """The world models are a factor of every arm: results.json names them (world_models), and an
    experiment folder started with other models is not resumed with these, in one line, before any work."""
    import json
    from dataclasses import asdict

    import pytest

    from synthvlm_data.experiment.run import run, world_models_id
    from synthvlm_data.outdir import ensure_marker

    s = Settings(seeds=[0], arms=["real"])
    assert s.fingerprint()["world_models"] == world_models_id() and len(world_models_id()) == 16
    out = tmp_path / "exp"
    out.mkdir()
    ensure_marker(out, "experiment")
    (out / "settings.json").write_text(json.dumps({**asdict(s), "world_models": "0" * 16}))
    with pytest.raises(SystemExit, match=f"other world models .*0{{16}} there, {world_models_id()} here"):
        run(s, out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["settings.json"]
    (out / "settings.json").write_text(json.dumps({**asdict(s), "n": 1, "world_models": world_models_id()}))
    with pytest.raises(SystemExit, match="other settings"):
        run(s, out)
