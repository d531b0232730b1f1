"""Shared fixtures: a small offline `tiny` build, made once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A small tiny run: 24 curated captions through the rule filters and exact dedup, shards of 8,
# 2 images per caption, 4 denoising steps. The LM-based caption steps (perplexity, judge,
# synthesis, near-dedup, diversity) have their own tests (tests/test_captions_*.py) and one
# end-to-end build with the whole tiny caption stage (test_build_tiny.py).
SMALL_TINY = {
    "rows_per_shard": 8,
    "captions": {
        "limit": 24,
        "judge": None,
        "synthesis": None,
        "diversity": None,
        "dedup": {"exact": True, "near": False},
    },
    "generate": {"steps": 4, "images_per_caption": 2, "batch_size": 4},
    "select": {"ratio": 0.5},
    "export": {"rows_per_shard": 5},
}


def _rule_filters_only() -> list[dict]:
    from importlib import resources

    import yaml

    tiny = yaml.safe_load((resources.files("synthvlm_data.recipes") / "tiny.yaml").read_text())
    return [f for f in tiny["captions"]["filters"] if f["type"] != "perplexity"]


def small_tiny_overrides(**extra) -> dict:
    """The overrides of the small tiny run, as applied to the shipped `tiny` recipe."""
    from synthvlm_data.config import _deep_merge

    base = _deep_merge(SMALL_TINY, {"captions": {"filters": _rule_filters_only()}})
    return _deep_merge(base, extra)


def small_tiny_recipe(**extra):
    from synthvlm_data.config import load_recipe

    return load_recipe("tiny", overrides=small_tiny_overrides(**extra))


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> "object":
    """One complete small tiny build (work dir + exported folder), shared by read-only tests."""
    from synthvlm_data.build import build

    root = tmp_path_factory.mktemp("tiny-build")
    return build(small_tiny_recipe(), root / "synthvlm-tiny", work_dir=root / "work", progress=False)


def parquet_checksums(folder: Path) -> dict[str, str]:
    from synthvlm_data.shards import sha256_file

    return {p.name: sha256_file(p) for p in sorted(Path(folder).glob("data/*.parquet"))}


@pytest.fixture(scope="module")
def one_cpu_thread():
    """torch on one intra-op thread for a test module (bit-stable CPU results, no oversubscription)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
