"""Static checks over the source tree: no unpickling of untrusted files, no remote code."""

from __future__ import annotations

import re
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for d in ("synthvlm_data", "train", "builders") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize(
    "pattern, why",
    [
        (r"trust_remote_code\s*=\s*True", "remote code must never run"),
        (r"\bpickle\.loads?\(", "nothing is unpickled"),
        (r"\bjoblib\.load\(", "nothing is unpickled"),
        (r"torch\.load\((?![^)]*weights_only\s*=\s*True)", "torch.load only with weights_only=True"),
    ],
)
def test_no_unsafe_loading(pattern, why):
    assert FILES
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in FILES for i, line in enumerate(p.read_text().splitlines(), 1)
            if re.search(pattern, line) and not line.lstrip().startswith("#")]
    assert not hits, f"{why}: {hits}"


FAKE_TOKEN = "hf_SECRETtoken1234567890abcdefghijABCD"


def test_token_never_lands_in_any_output_of_a_full_run(tmp_path):
    """build + report + publish --dry-run with a token in the env: grep every file and stream."""
    import os
    import subprocess
    import sys

    import yaml

    from conftest import small_tiny_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_tiny_recipe(captions={"limit": 8}).model_dump(mode="json")))
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "HF_HUB_OFFLINE": "1"}
    out, work = tmp_path / "out", tmp_path / "work"
    cli = [sys.executable, "-m", "synthvlm_data.cli"]
    runs = [
        cli + ["build", "--recipe", str(recipe), "--out", str(out), "--work-dir", str(work), "--quiet"],
        cli + ["report", str(out), "--work-dir", str(work)],
        cli + ["publish", str(out), "--repo-id", "someone/tiny", "--dry-run"],
    ]
    streams = []
    for cmd in runs:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        streams += [proc.stdout, proc.stderr]
    assert all(FAKE_TOKEN not in s for s in streams)
    files = [p for d in (out, work) for p in d.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaked = [str(p) for p in files if FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaked


def test_token_never_lands_in_any_output_of_a_training_run(tmp_path, monkeypatch, capfd):
    """train/pretrain.py's CLI with HF_TOKEN set and --push-to-hub --push-dry-run (1 step, 1 checkpoint):
    grep every file of the output dir (model, card, training_log.json, logs/, checkpoints/) and both streams."""
    from synthvlm_data.hub import publish as hub
    from synthvlm_data.training import cli
    from synthvlm_data.training.demo_data import write_demo_dataset

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = write_demo_dataset(tmp_path / "captions", size=64)
    out = tmp_path / "out"
    results = []
    publish_folder = hub.publish_folder

    def record(*args, **kwargs):
        results.append(publish_folder(*args, **kwargs))
        return results[-1]

    argv = ["--config", str(ROOT / "train" / "configs" / "tiny.yaml"), "--dataset", str(data),
            "--max_samples", "2", "--eval_ratio", "0", "--output_dir", str(out),
            "--per_device_train_batch_size", "2", "--global_batch_size", "2", "--max_steps", "1",
            "--warmup_ratio", "0", "--save_strategy", "steps", "--save_steps", "1",
            "--push-to-hub", "someone/tiny-llava", "--push-dry-run"]
    with mock.patch.object(hub, "publish_folder", side_effect=record):
        code = cli.main("pretrain", argv)
    streams = capfd.readouterr()
    assert code == 0, (streams.out[-1000:], streams.err[-1000:])
    assert "published" in streams.out and "(dry run)" in streams.out
    (result,) = results
    assert result.dry_run and not any("no Hugging Face token" in n for n in result.notes)  # the token was seen
    assert FAKE_TOKEN not in streams.out and FAKE_TOKEN not in streams.err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert list((out / "logs").rglob("events.out.tfevents.*")) and list((out / "checkpoints").rglob("trainer_state.json"))
    assert {"training_log.json", "README.md", "model.safetensors", "training_args.bin"} <= {p.name for p in files}
    leaked = [str(p) for p in files if FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaked


def test_model_weights_load_from_safetensors_only():
    """Every model `from_pretrained` in training/ and models/ asks for safetensors (no pytorch_model.bin
    fallback).

    Allowed forms: through `models.llava.load_weights` (which passes use_safetensors=True), an explicit
    `use_safetensors=True`, or a GGUF file (not a pickle). Tokenizer/config/processor loads hold no weights.
    """
    files = sorted(p for d in ("training", "models") for p in (ROOT / "synthvlm_data" / d).rglob("*.py"))
    model_load = re.compile(r"(Model\w*|\bcls)\.from_pretrained\b")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if model_load.search(line) and not line.lstrip().startswith("#")
            and not re.search(r"load_weights\(|use_safetensors\s*=\s*True|gguf_file\s*=", line)]
    assert not hits, f"load model weights with models.llava.load_weights or use_safetensors=True: {hits}"
    assert not [p for p in FILES if re.search(r"use_safetensors\s*=\s*False|safe_serialization\s*=\s*False", p.read_text())]
