"""Bad user input through the real CLI: one `error:` line naming what and where, a non-zero exit,
no traceback, and no output folder. Skippable bad caption rows are counted, never silently dropped."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import small_tiny_recipe

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "synthvlm_data.cli", *args], cwd)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout[-1000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


_BASE: dict | None = None


def base_recipe() -> dict:
    """A small tiny recipe (rule filters only, 8 captions) as plain YAML-able data."""
    global _BASE
    if _BASE is None:
        _BASE = small_tiny_recipe(captions={"limit": 8}).model_dump(mode="json")
    return copy.deepcopy(_BASE)


def build_cli(tmp_path: Path, recipe_path: Path) -> subprocess.CompletedProcess:
    return cli("build", "--recipe", str(recipe_path), "--quiet", "--out", str(tmp_path / "out"),
               "--work-dir", str(tmp_path / "work"), cwd=tmp_path)


def write_recipe(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- recipe files


def _set(path: str, value):
    def mutate(d: dict) -> dict:
        keys = path.split(".")
        cur = d
        for k in keys[:-1]:
            cur = cur[int(k)] if isinstance(cur, list) else cur[k]
        cur[keys[-1]] = value
        return d

    return mutate


RECIPE_MUTATIONS = {
    "unknown_top_key": (lambda d: {**d, "bogus_key": 1}, ["bogus_key"]),
    "unknown_nested_key": (_set("generate.stepz", 3), ["stepz"]),
    "wrong_type_steps": (_set("generate.steps", "many"), ["steps"]),
    "wrong_type_sources": (_set("captions.sources", "tiny"), ["sources"]),
    "out_of_range_ratio": (_set("select.ratio", 1.5), ["ratio"]),
    "out_of_range_rows_per_shard": (_set("rows_per_shard", 0), ["rows_per_shard"]),
    "out_of_range_filter": (_set("captions.filters.0.min_ratio", 3.0), ["min_ratio"]),
    "unknown_filter_type": (_set("captions.filters.0.type", "nonsense"), ["nonsense"]),
    "missing_model_path": (_set("generate.model.id", "./no/such/model"), ["no/such/model"]),
    "missing_clip_model_path": (_set("score.clip.model.id", "./no/such/clip"), ["no/such/clip"]),
    "unknown_tiny_id": (_set("generate.model.id", "tiny:nope"), ["tiny:nope"]),
    "min_chars_over_max": (lambda d: _set("captions.max_chars", 5)(_set("captions.min_chars", 10)(d)), ["min_chars"]),
    "ssim_down_equals_size": (_set("score.ssim.down", 64), ["down (64)", "size (64)"]),
    "ssim_down_over_size": (_set("score.ssim.down", 96), ["down (96)", "size (64)"]),
}


@pytest.mark.parametrize("case", sorted(RECIPE_MUTATIONS))
def test_bad_recipe_values(tmp_path, case):
    mutate, needles = RECIPE_MUTATIONS[case]
    path = write_recipe(tmp_path, mutate(base_recipe()))
    proc = build_cli(tmp_path, path)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work" / "captions").exists()


RAW_RECIPES = {
    "yaml_syntax": (b"name: [unclosed\nseed: 1\n", ["recipe.yaml", "YAML"]),
    "empty_file": (b"", ["recipe.yaml"]),
    "top_level_list": (b"- a\n- b\n", ["recipe.yaml", "mapping"]),
    "not_utf8": (b"name: caf\xe9\xff\n", ["recipe.yaml", "UTF-8"]),
}


@pytest.mark.parametrize("case", sorted(RAW_RECIPES))
def test_unparsable_recipe_files(tmp_path, case):
    data, needles = RAW_RECIPES[case]
    (tmp_path / "recipe.yaml").write_bytes(data)
    proc = build_cli(tmp_path, tmp_path / "recipe.yaml")
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()
    val = cli("validate", str(tmp_path / "recipe.yaml"), cwd=tmp_path)
    assert_one_line_error(val, *needles)


def test_missing_recipe_file(tmp_path):
    proc = build_cli(tmp_path, tmp_path / "nope.yaml")
    assert_one_line_error(proc, "nope.yaml")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- caption files


def caption_recipe(tmp_path: Path, filename: str, content: bytes | None, **source) -> Path:
    data = base_recipe()
    src = data["captions"]["sources"][0]
    src["path"] = str(tmp_path / filename)
    src.update(source)
    if content is not None:
        (tmp_path / filename).write_bytes(content)
    return write_recipe(tmp_path, data)


GOOD = b'{"id": "a", "caption": "A brown dog catching a frisbee in a grassy park."}\n'

CAPTION_FILES = {
    "missing_file": ("caps.jsonl", None, {}, ["caps.jsonl", "does not exist"]),
    "empty_file": ("caps.jsonl", b"", {}, ["caps.jsonl"]),
    "blank_lines_only": ("caps.jsonl", b"\n\n  \n", {}, ["caps.jsonl"]),
    "latin1_encoding": ("caps.jsonl", GOOD + '{"id": "b", "caption": "Un café crème"}\n'.encode("latin-1"), {},
                        ["caps.jsonl", "UTF-8"]),
    "missing_caption_column": ("caps.jsonl", b'{"id": "a", "text": "A dog."}\n', {}, ["caps.jsonl", "'caption'"]),
    "malformed_json_line": ("caps.jsonl", GOOD + b'{"id": "b", "caption": \n', {}, ["caps.jsonl:2", "not valid JSON"]),
    "row_not_an_object": ("caps.jsonl", GOOD + b"[1, 2]\n", {}, ["caps.jsonl:2", "object"]),
    "all_non_string": ("caps.jsonl", b'{"id": "a", "caption": 1}\n{"id": "b", "caption": null}\n', {},
                       ["caps.jsonl", "not_a_string 2"]),
    "csv_missing_column": ("caps.csv", b"id,text\n1,A dog on a beach.\n", {}, ["caps.csv", "'caption'"]),
    "json_not_array": ("caps.json", b'{"id": "a"}', {}, ["caps.json", "JSON array"]),
    "json_truncated": ("caps.json", b'[{"id": "a", "caption": "A dog."}, ', {}, ["caps.json"]),
    "parquet_corrupt": ("caps.parquet", b"PAR1 this is not parquet", {}, ["caps.parquet", "parquet"]),
    "unsupported_suffix": ("caps.xlsx", b"xx", {}, ["caps.xlsx", "suffix"]),
}


@pytest.mark.parametrize("case", sorted(CAPTION_FILES))
def test_bad_caption_files(tmp_path, case):
    filename, content, source, needles = CAPTION_FILES[case]
    path = caption_recipe(tmp_path, filename, content, **source)
    proc = build_cli(tmp_path, path)
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "work").glob("generate/*.parquet"))


def test_an_empty_source_beside_a_good_one_is_an_error(tmp_path):
    """An empty file among several sources used to build silently from the others."""
    data = base_recipe()
    good = dict(data["captions"]["sources"][0])
    (tmp_path / "empty.jsonl").write_bytes(b"")
    data["captions"]["sources"] = [good, {**good, "name": "second", "path": str(tmp_path / "empty.jsonl")}]
    data["captions"]["limit"] = None
    proc = build_cli(tmp_path, write_recipe(tmp_path, data))
    assert_one_line_error(proc, "caption source 'second'", "empty.jsonl", "holds no captions")
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "work").glob("captions/*.parquet"))


def test_skippable_bad_rows_are_counted(tmp_path):
    """Non-string, empty, NUL-byte, 100k-char and duplicate rows mixed with good ones: the build
    succeeds and the caption report counts every dropped row by reason."""
    good = [json.loads(line) for line in (ROOT / "synthvlm_data/data/tiny_captions.jsonl").read_text().splitlines()[:6]]
    rows = list(good)
    rows += [
        {"id": "bad-int", "caption": 12345},
        {"id": "bad-list", "caption": ["a", "b"]},
        {"id": "bad-empty", "caption": "   "},
        {"id": "bad-nul", "caption": "A dog\x00 on a beach."},
        {"id": "bad-long", "caption": "a dog " * 20000},
        dict(good[0]),  # exact duplicate (same id, same caption)
        {"id": good[1]["id"], "caption": good[1]["caption"]},  # duplicate id + caption again
        {"id": good[2]["id"], "caption": "A different caption under an id already used."},  # duplicate id only
        {"id": "new-id", "caption": good[3]["caption"]},  # a new id repeating a caption: exact dedup
    ]
    data = base_recipe()
    data["captions"]["limit"] = None
    data["captions"]["sources"][0]["path"] = str(tmp_path / "caps.jsonl")
    data["generate"].update({"steps": 2, "images_per_caption": 1})
    data["select"] = {**data["select"], "ratio": 1.0}
    (tmp_path / "caps.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = build_cli(tmp_path, write_recipe(tmp_path, data))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "work" / "captions" / "report.json").read_text())
    steps = {s["name"]: s for s in report["steps"]}
    validate = steps["validate"]
    assert validate["seen"] == len(rows)
    assert validate["reasons"] == {"not_a_string": 2, "empty": 1, "nul_bytes": 1, "too_long": 1, "duplicate_id": 3}
    dedup = next(s for s in report["steps"] if "dedup" in s["name"])
    assert dedup["dropped"] == 1
    kept_after = report["captions_out"]
    dropped = sum(s["dropped"] for s in report["steps"])
    assert kept_after + dropped == len(rows)  # nothing silently lost
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "out"), split="train")
    assert ds.num_rows == kept_after and len(set(ds["id"])) == ds.num_rows
    assert all(isinstance(c, str) and "\x00" not in c and len(c) <= 2000 for c in ds["caption"])


# ----------------------------------------------------------------------------- concept lists


def concept_recipe(tmp_path: Path, **synthesis) -> Path:
    data = base_recipe()
    data["captions"]["synthesis"] = {"n_per_concept": 1, **synthesis}
    return write_recipe(tmp_path, data)


CONCEPTS = {
    "empty_inline_list": ({"concepts": []}, None, ["concepts"]),
    "non_string_concepts": ({"concepts": [1, {"a": 2}]}, None, ["concepts"]),
    "missing_concepts_file": ({"concepts_file": "{tmp}/none.txt"}, None, ["none.txt"]),
    "empty_concepts_file": ({"concepts_file": "{tmp}/c.txt"}, b"# only a comment\n\n", ["c.txt"]),
    "duplicate_concept": ({"concepts_file": "{tmp}/c.txt"}, b"dog\ncat\nDog\n", ["c.txt:3", "twice"]),
    "non_utf8_concepts_file": ({"concepts_file": "{tmp}/c.txt"}, b"dog\ncaf\xe9\n", ["c.txt"]),
}


@pytest.mark.parametrize("case", sorted(CONCEPTS))
def test_bad_concept_lists(tmp_path, case):
    synthesis, content, needles = CONCEPTS[case]
    synthesis = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in synthesis.items()}
    if content is not None:
        (tmp_path / "c.txt").write_bytes(content)
    proc = build_cli(tmp_path, concept_recipe(tmp_path, **synthesis))
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- publish / report


def _card_without_shards(folder: Path) -> None:
    folder.mkdir()
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n# x\n"
    )


def test_publish_folder_without_card(tmp_path):
    (tmp_path / "ds").mkdir()
    proc = cli("publish", str(tmp_path / "ds"), "--repo-id", "me/ds", "--dry-run", cwd=tmp_path)
    assert_one_line_error(proc, "README.md")


def test_publish_folder_without_shards(tmp_path):
    _card_without_shards(tmp_path / "ds")
    proc = cli("publish", str(tmp_path / "ds"), "--repo-id", "me/ds", "--dry-run", cwd=tmp_path)
    assert_one_line_error(proc, "data/train-*.parquet")


def test_publish_missing_folder(tmp_path):
    proc = cli("publish", str(tmp_path / "nope"), "--repo-id", "me/ds", "--dry-run", cwd=tmp_path)
    assert_one_line_error(proc, "nope")


def test_publish_invalid_repo_id(tmp_path):
    _card_without_shards(tmp_path / "ds")
    proc = cli("publish", str(tmp_path / "ds"), "--repo-id", "not a repo", "--dry-run", cwd=tmp_path)
    assert_one_line_error(proc, "not a repo")


def test_report_on_non_dataset_folder(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("hello")
    proc = cli("report", str(tmp_path / "ds"), cwd=tmp_path)
    assert_one_line_error(proc, "ds")
    assert not (tmp_path / "ds" / "plots").exists()


def test_report_on_missing_folder(tmp_path):
    proc = cli("report", str(tmp_path / "nope"), cwd=tmp_path)
    assert_one_line_error(proc, "nope")


# ----------------------------------------------------------------------------- training


def _train_config(tmp_path: Path, mutate) -> Path:
    cfg = yaml.safe_load((ROOT / "train/configs/tiny.yaml").read_text())
    mutate(cfg)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_training_config_unknown_key(tmp_path):
    path = _train_config(tmp_path, lambda c: c["model"].update({"lmm": "x"}))
    proc = run([sys.executable, str(ROOT / "train/pretrain.py"), "--config", str(path), "--validate-only"], tmp_path)
    assert_one_line_error(proc, "lmm")


def test_training_config_wrong_type(tmp_path):
    path = _train_config(tmp_path, lambda c: c.update({"seed": "abc"}))
    proc = run([sys.executable, str(ROOT / "train/pretrain.py"), "--config", str(path), "--validate-only"], tmp_path)
    assert_one_line_error(proc, "seed")
