"""Selection invariants: exactly N, best of k, deterministic ties, thresholds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from synthvlm_data.config import SelectConfig
from synthvlm_data.stages.select import select_best


def _scores(rows):
    ids, rep, clip, ssim = zip(*rows, strict=True)
    return pa.table({"id": list(ids), "repeat": pa.array(rep, pa.int32()), "clip_score": list(clip), "ssim": list(ssim)})


def test_best_of_k_then_top_n():
    t = _scores([("a", 0, 0.1, 0.5), ("a", 1, 0.3, 0.5), ("b", 0, 0.2, 0.2), ("b", 1, 0.1, 0.1), ("c", 0, 0.05, 0.1)])
    sel, stats = select_best(t, SelectConfig(top_n=2))
    assert sel["id"].to_pylist() == ["a", "b"]
    assert sel["repeat"].to_pylist() == [1, 0]
    assert np.allclose(sel["score"].to_numpy(), [0.3 + 0.25, 0.2 + 0.1])
    assert stats["selected"] == 2 and stats["captions_scored"] == 3 and stats["images_scored"] == 5


def test_ties_are_deterministic_and_order_independent():
    rows = [(f"id{i:02d}", r, 0.5, 0.0) for i in range(10) for r in range(3)]
    a, _ = select_best(_scores(rows), SelectConfig(top_n=4))
    b, _ = select_best(_scores(list(reversed(rows))), SelectConfig(top_n=4))
    assert a.equals(b)
    assert a["id"].to_pylist() == ["id00", "id01", "id02", "id03"]
    assert a["repeat"].to_pylist() == [0, 0, 0, 0]  # ties within a caption: lowest repeat


def test_ratio_and_thresholds():
    rng = np.random.default_rng(0)
    rows = [(f"s{i}", 0, float(rng.random()), float(rng.random())) for i in range(100)]
    sel, _ = select_best(_scores(rows), SelectConfig(ratio=0.25))
    assert sel.num_rows == 25
    assert sel["score"].to_numpy().min() >= np.sort([c + 0.5 * s for _, _, c, s in rows])[-25] - 1e-12
    sel, stats = select_best(_scores(rows), SelectConfig(min_clip=0.5, min_ssim=0.5))
    assert all(c >= 0.5 for c in sel["clip_score"].to_pylist()) and all(s >= 0.5 for s in sel["ssim"].to_pylist())
    assert stats["passed_thresholds"] == sel.num_rows


def test_top_n_larger_than_pool_keeps_all_and_says_so():
    sel, stats = select_best(_scores([("a", 0, 0.1, 0.1)]), SelectConfig(top_n=10))
    assert sel.num_rows == 1 and stats["short_of_request"]


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        select_best(_scores([("a", 0, float("nan"), 0.1)]), SelectConfig())


# --------------------------------------------------------------------------- more invariants


def _random_pool(n_captions: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(f"c{i:04d}", r, float(rng.random()), float(rng.random())) for i in range(n_captions) for r in range(k)]


@pytest.mark.parametrize("top_n", [1, 7, 50, 99, 100])
def test_exactly_n_and_one_row_per_caption(top_n):
    rows = _random_pool(100, 3)
    sel, stats = select_best(_scores(rows), SelectConfig(top_n=top_n))
    assert sel.num_rows == top_n == stats["selected"]
    assert len(set(sel["id"].to_pylist())) == top_n
    assert sel["rank"].to_pylist() == list(range(top_n))
    s = sel["score"].to_numpy()
    assert np.all(np.diff(s) <= 0)  # rank order is score order


def test_every_selected_image_is_its_captions_best_and_beats_every_unselected_caption():
    rows = _random_pool(60, 4, seed=1)
    sel, stats = select_best(_scores(rows), SelectConfig(top_n=20))
    by_id: dict[str, list] = {}
    for i, r, c, s in rows:
        by_id.setdefault(i, []).append((c + 0.5 * s, r))
    best = {i: max(v, key=lambda t: (t[0], -t[1])) for i, v in by_id.items()}
    for i, r, sc in zip(sel["id"].to_pylist(), sel["repeat"].to_pylist(), sel["score"].to_pylist(), strict=True):
        assert (sc, r) == pytest.approx(best[i])
    chosen = set(sel["id"].to_pylist())
    worst_chosen = min(sel["score"].to_pylist())
    assert all(best[i][0] <= worst_chosen for i in by_id if i not in chosen)
    assert stats["images_scored"] == 240 and stats["rejected_scores"]["score"]["count"] == 240 - 20


def test_ratio_is_floor_of_captions_not_images():
    rows = _random_pool(10, 3)
    sel, stats = select_best(_scores(rows), SelectConfig(ratio=0.35))
    assert sel.num_rows == 3 == stats["selected"]  # floor(0.35 * 10 captions), not of 30 images
    sel, _ = select_best(_scores(rows), SelectConfig(ratio=0.01))
    assert sel.num_rows == 1  # at least one


def test_thresholds_apply_to_the_best_image_before_the_size_rule():
    t = _scores([("a", 0, 0.9, 0.1), ("a", 1, 0.2, 0.9), ("b", 0, 0.5, 0.5), ("c", 0, 0.1, 0.1)])
    # a's best image is repeat 0 (0.95 > 0.65); its ssim 0.1 fails min_ssim, so a is out entirely.
    sel, stats = select_best(t, SelectConfig(min_ssim=0.3, top_n=2))
    assert sel["id"].to_pylist() == ["b"] and stats["passed_thresholds"] == 1 and stats["short_of_request"]


def test_ties_across_captions_and_weights():
    rows = [("z", 0, 0.2, 0.4), ("y", 0, 0.4, 0.0), ("x", 0, 0.3, 0.2)]  # all score 0.4 with w_ssim 0.5
    sel, _ = select_best(_scores(rows), SelectConfig(top_n=2))
    assert sel["id"].to_pylist() == ["x", "y"]  # equal scores: by id
    sel, _ = select_best(_scores(rows), SelectConfig(top_n=1, w_clip=0.0, w_ssim=1.0))
    assert sel["id"].to_pylist() == ["z"] and sel["score"].to_pylist() == [0.4]
    sel, _ = select_best(_scores(rows), SelectConfig(top_n=1, w_ssim=0.0))
    assert sel["id"].to_pylist() == ["y"]


def test_shuffled_input_gives_identical_selection():
    rows = _random_pool(50, 3, seed=2)
    rng = np.random.default_rng(3)
    a, sa = select_best(_scores(rows), SelectConfig(top_n=17))
    b, sb = select_best(_scores([rows[i] for i in rng.permutation(len(rows))]), SelectConfig(top_n=17))
    assert a.equals(b) and sa == sb


# --------------------------------------------------------------------------- diversity quotas


def _clustered(sizes, seed=0):
    """Captions in clusters of the given sizes; cluster 0 has the highest scores overall."""
    rng = np.random.default_rng(seed)
    rows, clusters = [], {}
    for c, size in enumerate(sizes):
        for j in range(size):
            sid = f"k{c}-{j:03d}"
            clusters[sid] = c
            rows.append((sid, 0, float(1.0 - 0.1 * c + 0.05 * rng.random()), 0.5))
    return rows, clusters


def _div(**kw):
    from synthvlm_data.clustering import DiversityConfig

    return SelectConfig(diversity=DiversityConfig(**kw.pop("div", {})), **kw)


def test_diversity_requires_clusters():
    with pytest.raises(ValueError, match="pass the caption clusters"):
        select_best(_scores([("a", 0, 0.1, 0.1)]), _div(top_n=1))


@pytest.mark.parametrize("n", [1, 5, 12, 20, 33, 40])
def test_uniform_quotas_are_max_min_fair_exactly_n_and_best_within_cluster(n):
    sizes = [20, 10, 6, 4]
    rows, clusters = _clustered(sizes)
    sel, stats = select_best(_scores(rows), _div(top_n=n), clusters=clusters, k=4)
    assert sel.num_rows == n
    counts = np.bincount([clusters[i] for i in sel["id"].to_pylist()], minlength=4)
    # Max-min fair: a cluster gets less than another only when it has run out of captions.
    for c in range(4):
        for d in range(4):
            if counts[c] < counts[d]:
                assert counts[c] == sizes[c] or counts[d] - counts[c] == 1, (c, d, counts.tolist())
    # Within a cluster the picks are its best captions.
    ranked = {c: sorted((r for r in rows if clusters[r[0]] == c), key=lambda r: -(r[2] + 0.5 * r[3])) for c in range(4)}
    for c in range(4):
        want = {r[0] for r in ranked[c][: counts[c]]}
        assert {i for i in sel["id"].to_pylist() if clusters[i] == c} == want
    div = stats["diversity"]
    assert div["histogram"]["pool"] == sizes and div["histogram"]["selected"] == counts.tolist()
    assert stats["selected_scores"]["score"]["mean"] <= div["global_top_n_mean_score"] + 1e-12


def test_uniform_quotas_balance_a_skewed_pool_that_plain_top_n_would_not():
    rows, clusters = _clustered([30, 30, 30, 30])
    plain, _ = select_best(_scores(rows), SelectConfig(top_n=20))
    assert {clusters[i] for i in plain["id"].to_pylist()} == {0}  # cluster 0 scores highest
    sel, stats = select_best(_scores(rows), _div(top_n=20), clusters=clusters, k=4)
    assert stats["diversity"]["histogram"]["selected"] == [5, 5, 5, 5]
    assert stats["diversity"]["metrics"]["selected"]["normalised_entropy"] == 1.0
    assert np.all(np.diff(sel["score"].to_numpy()) <= 0) and sel["rank"].to_pylist() == list(range(20))


def test_proportional_quotas_follow_pool_shares():
    rows, clusters = _clustered([40, 20, 10, 10])
    sel, stats = select_best(_scores(rows), _div(top_n=16, div={"quota": "proportional"}), clusters=clusters, k=4)
    assert stats["diversity"]["histogram"]["selected"] == [8, 4, 2, 2]
    assert sel.num_rows == 16


def test_diversity_with_thresholds_and_ties_is_deterministic():
    rows, clusters = _clustered([10, 10, 10])
    rows = [(i, r, round(c, 1), s) for i, r, c, s in rows]  # many exact ties
    cfg = _div(top_n=10, min_clip=0.85)
    a, sa = select_best(_scores(rows), cfg, clusters=clusters, k=3)
    b, sb = select_best(_scores(list(reversed(rows))), cfg, clusters=clusters, k=3)
    assert a.equals(b) and sa == sb
    assert all(c >= 0.85 for c in a["clip_score"].to_pylist())
    assert sa["diversity"]["histogram"]["candidates"][2] == 0  # cluster 2 (score ~0.8) fails the threshold
