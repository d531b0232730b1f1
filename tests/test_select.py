"""Selection invariants: exactly N, best of k, deterministic ties, thresholds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from synthvlm_data.config import SelectConfig
from synthvlm_data.select import select_best


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
