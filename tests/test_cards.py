"""Dataset cards: YAML the Hub and load_dataset accept, a body built from the run, plots when present."""

from __future__ import annotations

import json
import re
import shutil

import datasets
import pytest
import yaml
from datasets import load_dataset
from huggingface_hub import DatasetCard
from PIL import Image

from conftest import small_tiny_recipe
from synthvlm_data.presentation.cards import refresh_dataset_card
from synthvlm_data.presentation.templates import md_cell
from synthvlm_data.config import recipe_from_dict


@pytest.fixture
def card(tiny_build) -> DatasetCard:
    return DatasetCard.load(tiny_build.out_dir / "README.md")


def test_yaml_header_has_hub_fields(tiny_build, card):
    recipe = small_tiny_recipe()
    data = card.data
    assert data.license == recipe.export.license == "apache-2.0"
    assert data.task_categories == ["image-to-text", "text-to-image"]
    assert data.size_categories == ["n<1K"] and data.language == ["en"]
    assert {"synthetic", "tiny-random-models"} <= set(data.tags)
    assert data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}]
    info = data.dataset_info
    features = {f["name"]: f["dtype"] for f in info["features"]}
    assert features["image"] == "image" and features["clip_score"] == "float64" and features["seed"] == "int64"
    (split,) = info["splits"]
    assert split["name"] == "train" and split["num_examples"] == tiny_build.stats["selected"]
    assert split["num_bytes"] > 0 and info["dataset_size"] == split["num_bytes"]


def test_body_reports_the_run(tiny_build, card):
    text, stats = card.text, tiny_build.stats
    assert f"| captions in (read from sources) | {stats['captions_in']} |" in text
    assert f"| images generated | {stats['images_generated']} (2 per caption) |" in text
    assert f"| selected (rows) | {stats['selected']} |" in text
    for step in stats["caption_report"]["steps"]:  # the caption filter report, one row per step
        assert f"| {step['name']} | {step['seen']} | {step['kept']} | {step['dropped']} |" in text
    sel = stats["selected_scores"]
    assert f"| selected | {sel['clip_score']['count']} | {sel['clip_score']['mean']:.4f} |" in text
    assert "| generator | `tiny:sdxl-base` | tiny config, seeded random weights (offline) |" in text
    assert f"datasets {datasets.__version__}" in text and "global seed 1234" in text
    assert 'load_dataset("synthvlm-tiny", split="train")' in text
    assert "train/pretrain.py --config train/configs/tiny.yaml --dataset synthvlm-tiny" in text
    assert "## Limitations and biases" in text and "random weights" in text
    assert "@article{liu2024synthvlm" in text and "@inproceedings{sharifzadeh2024synth2" in text
    assert "### Plots" not in text  # no PNG in the folder, no plot section


def test_recipe_block_round_trips(tiny_build, card):
    """The quality report finds the recipe in the card's YAML block: it must rebuild the same recipe."""
    blocks = re.findall(r"```ya?ml\n(.*?)\n```", card.text, flags=re.S)
    assert len(blocks) == 1
    assert recipe_from_dict(yaml.safe_load(blocks[0])).fingerprint() == small_tiny_recipe().fingerprint()


def test_plots_quality_report_and_filter_examples(tiny_build, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(tiny_build.out_dir, folder)
    (folder / "plots").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "plots" / "score_hist.png")
    Image.new("RGB", (8, 8)).save(folder / "plots" / "top_bottom_grid.png")
    row = {"count": 3, "mean": 0.5, "median": 0.5, "min": 0.1, "max": 0.9}
    report = {  # what `synthvlm report` writes into plots/ (report.json, report.md)
        "table": [{"set": "real reference", "clip_score": row, "clipscore_scaled": row, "ssim": row, "score": row, "note": ""}],
        "notes": ["rejected pool: no work dir found"],
    }
    (folder / "plots" / "report.md").write_text("# report\n")
    stats = json.loads((folder / "synthvlm_stats.json").read_text())
    stats["caption_report"]["steps"] += [
        {"name": "alnum_ratio", "seen": 24, "kept": 23, "dropped": 1, "params": {"min": 0.6},
         "examples": [{"caption": "a | b <b>bold</b>\nnext", "value": 0.31}]},
        {"name": "flagged_words", "seen": 23, "kept": 22, "dropped": 1, "examples": [{"caption": "UNPRINTABLE-WORD"}]},
    ]
    (folder / "synthvlm_stats.json").write_text(json.dumps(stats))

    report.update(recipe="tiny", files=["report.json", "report.md", "score_hist.png", "top_bottom_grid.png"])
    (folder / "plots" / "report.json").write_text(json.dumps(report))
    refresh_dataset_card(folder, small_tiny_recipe())  # the card reads the report the folder holds
    card = DatasetCard.load(folder / "README.md")
    text = card.text
    assert "![Score hist](plots/score_hist.png)" in text and "![Top bottom grid](plots/top_bottom_grid.png)" in text
    assert "([full report](plots/report.md))" in text
    assert "| real reference | 3 | 0.5000 | 0.5000 | 0.5000 | 0.5000 |" in text
    assert "| alnum_ratio | 24 | 23 | 1 | 4.2 |" in text and "| flagged_words | 23 | 22 | 1 | 4.3 |" in text
    assert '- "a \\| b &lt;b&gt;bold&lt;/b&gt; next" (value 0.31)' in text  # quoted safely, on one line
    assert "UNPRINTABLE-WORD" not in text and "examples withheld" in text
    # The YAML (what load_dataset reads) is unchanged by the refresh.
    original = DatasetCard.load(tiny_build.out_dir / "README.md")
    assert card.data.to_dict() == original.data.to_dict()


def test_card_rendering_is_deterministic(tiny_build, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(tiny_build.out_dir, folder)
    refresh_dataset_card(folder, small_tiny_recipe())
    assert (folder / "README.md").read_text() == (tiny_build.out_dir / "README.md").read_text()


def test_load_dataset_reads_the_yaml(tiny_build, tmp_path):
    """`configs:` picks the files, `dataset_info:` the features and the expected split sizes."""
    folder = tmp_path / "ds"
    shutil.copytree(tiny_build.out_dir, folder)
    cache = tmp_path / "cache"
    ds = load_dataset(str(folder), split="train", cache_dir=str(cache))
    assert ds.num_rows == tiny_build.stats["selected"]
    assert isinstance(ds.features["image"], datasets.Image) and ds.features["repeat"].dtype == "int32"

    readme = folder / "README.md"
    text = readme.read_text()
    text = text.replace("  - name: repeat\n    dtype: int32", "  - name: repeat\n    dtype: int64")
    text = text.replace("path: data/train-*.parquet", "path: data/train-00000-of-*.parquet")
    readme.write_text(text)
    with pytest.raises(datasets.exceptions.NonMatchingSplitsSizesError):  # dataset_info.splits is checked
        load_dataset(str(folder), split="train", cache_dir=str(cache))
    ds = load_dataset(str(folder), split="train", cache_dir=str(cache), verification_mode="no_checks")
    assert ds.num_rows == 5  # only the first shard (export.rows_per_shard = 5)
    assert ds.features["repeat"].dtype == "int64"  # cast to the YAML's features


def test_md_cell_quotes_user_text():
    assert md_cell("a|b\n<i>", 100) == "a\\|b &lt;i&gt;"
    assert md_cell("x" * 50, 10) == "xxxxxxx..."


@pytest.mark.parametrize("name", ["synthvlm-100k", "synth2", "tiny", "shapes"])
def test_card_describes_how_each_shipped_recipe_makes_its_data(tiny_build, tmp_path, name):
    """The intro and the selection line follow the recipe: curated vs LLM-written captions, pixels vs
    latents, global top-N vs per-cluster quotas (rendered with the tiny run's statistics)."""
    from huggingface_hub import DatasetCardData

    from synthvlm_data.presentation.cards import render_dataset_card
    from synthvlm_data.config import load_recipe

    recipe = load_recipe(name)
    columns = ["id", "latent" if recipe.generate.output == "latents" else "image", "caption"]
    text = render_dataset_card(tmp_path, DatasetCardData(), recipe=recipe, stats=tiny_build.stats, num_rows=5,
                               num_shards=1, columns=columns)
    curated = "Captions are curated from existing corpora (SynthVLM)" in text
    synthetic_only = "Captions are written by an LLM, the same number for every concept" in text
    both = "curated from existing corpora and written by an LLM over a concept list" in text
    assert (curated, synthetic_only, both) == {
        "synthvlm-100k": (True, False, False), "synth2": (False, True, False), "tiny": (False, False, True),
        "shapes": (False, False, False)}[name]
    assert ("Captions are the miniature world's caption pool" in text) == (name == "shapes")
    assert ("A miniature-world build" in text) == (name == "shapes")
    assert ("a latent (the diffusion model's embedding space" in text) == (name == "synth2")
    quotas = "equal per-cluster quotas over caption embeddings are filled" in text
    assert quotas == (name == "synth2") and ("the top pairs by `score" in text) == (name != "synth2")
    if name == "synth2":
        assert "the top 100000 by score, filled as uniform quotas over 100 k-means clusters" in text
    assert "github.com/synthvlm" not in text


def test_card_templates_ship_with_the_package():
    """The templates live in the top-level cards/ folder and install as synthvlm_data.card_templates,
    so a wheel install can export (not only a checkout); every sub-package is listed for the wheel."""
    import tomllib
    from pathlib import Path

    from synthvlm_data.presentation.templates import templates_dir

    assert {"dataset_card.md.j2", "model_card.md.j2"} <= {p.name for p in templates_dir().iterdir()}
    root = Path(__file__).resolve().parents[1]
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"]["synthvlm_data.card_templates"] == "cards"
    on_disk = {".".join(p.parent.relative_to(root).parts) for p in (root / "synthvlm_data").rglob("__init__.py")}
    assert on_disk | {"synthvlm_data.card_templates"} == set(tool["packages"])


def test_caption_statistics_read_as_a_table_with_filter_notes(tiny_build, tmp_path):
    """The caption report's figures are a labelled table (not a `counts.curated: 244; ...` dump),
    and a filter that dropped captions explains itself (special_characters' lower bound)."""
    from huggingface_hub import DatasetCardData

    from synthvlm_data.presentation.cards import render_dataset_card

    stats = json.loads(json.dumps(tiny_build.stats))
    steps = stats["caption_report"]["steps"]
    special = next(s for s in steps if s["name"] == "special_characters")
    special["dropped"] = special["dropped"] or 1
    text = render_dataset_card(tmp_path, DatasetCardData(), recipe=small_tiny_recipe(), stats=stats, num_rows=5,
                               num_shards=1, columns=["id", "image", "caption"])
    assert "| caption figure | value |" in text
    assert f"| captions kept from the sources | {stats['caption_report']['counts']['curated']} |" in text
    assert "counts.curated" not in text and "summary." not in text
    assert "counting whitespace and punctuation" in text and "0.164" in text


def test_card_names_the_lock_file_the_environment_was_installed_from(tiny_build, tmp_path, monkeypatch):
    """A published dataset names the exact environment that rebuilds it: the SHA-256 of the lock the
    environment was installed from (`make venv` copies it into the venv), or that there was none.
    Only the card changes: the data files keep their bytes."""
    import hashlib
    import sys
    from pathlib import Path

    lock = Path(__file__).resolve().parents[1] / "requirements.lock"
    folder = tmp_path / "ds"
    shutil.copytree(tiny_build.out_dir, folder)
    data = {p.name: p.read_bytes() for p in sorted((folder / "data").glob("*.parquet"))}
    venv = tmp_path / "venv"
    venv.mkdir()
    monkeypatch.setattr(sys, "prefix", str(venv))
    refresh_dataset_card(folder, small_tiny_recipe())
    assert "- Environment: not installed from the project's `requirements.lock`" in (folder / "README.md").read_text()
    shutil.copy(lock, venv / "requirements.lock")
    refresh_dataset_card(folder, small_tiny_recipe())
    text = (folder / "README.md").read_text()
    assert f"- Environment: installed from `requirements.lock` (SHA-256 `{hashlib.sha256(lock.read_bytes()).hexdigest()}`" in text
    assert data and {p.name: p.read_bytes() for p in sorted((folder / "data").glob("*.parquet"))} == data
