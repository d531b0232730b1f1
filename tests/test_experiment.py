"""The experiment in miniature (`make experiment`): its parts (the world CLIP as a transformers vision
tower, the world LM's tokenizer) and a micro end-to-end run, twice, to the same bytes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch


def test_world_clip_vit_matches_open_clip(tmp_path):
    from transformers import AutoImageProcessor, CLIPVisionModel

    from synthvlm_data.world.clip_vit import convert_visual, load_open_clip, open_clip_pre_proj, save_world_clip_vit
    from synthvlm_data.world.data import split_scenes
    from synthvlm_data.world.render import render

    clip, preprocess = load_open_clip()
    images = [render(s) for s in split_scenes("test", 4)]
    x = torch.stack([preprocess(im) for im in images])
    ref = open_clip_pre_proj(clip.visual, x)
    with torch.no_grad():
        got = convert_visual(clip.visual)(pixel_values=x).pooler_output
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
    folder = save_world_clip_vit(tmp_path / "tower")  # what the experiment's LLaVA loads
    loaded = CLIPVisionModel.from_pretrained(folder, use_safetensors=True).eval()
    assert loaded.config.hidden_act == "gelu" and loaded.config.num_hidden_layers == 4
    proc = AutoImageProcessor.from_pretrained(folder)
    assert np.allclose(proc.image_mean, [0.48145466, 0.4578275, 0.40821073])
    with torch.no_grad():
        again = loaded(pixel_values=x).pooler_output
    assert torch.allclose(again, ref, atol=1e-5)


def test_world_lm_tokenizer_round_trips_world_text():
    from synthvlm_data.evaluation.world_suite import CAPTION_PROMPT, build_items, caption_scores
    from synthvlm_data.training.chat_templates import chat_template
    from synthvlm_data.world.lm import IM_END, build_tokenizer
    from synthvlm_data.world.text import caption

    tok = build_tokenizer()
    items = build_items(30, 0)
    unk = tok.unk_token_id
    for i, scene in enumerate(items.scenes):
        text = caption(scene, np.random.default_rng(i))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert unk not in ids, text
        # decoding loses only spacing: the world parser reads the same claims back
        assert caption_scores(scene, tok.decode(ids)) == caption_scores(scene, text)
    for q in items.questions:
        assert unk not in tok(q.prompt + " " + q.answer, add_special_tokens=False)["input_ids"], q.prompt
    tok.chat_template = chat_template("chatml")
    rendered = tok.apply_chat_template([{"role": "user", "content": CAPTION_PROMPT},
                                        {"role": "assistant", "content": "a red circle"}], tokenize=False)
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert unk not in ids and ids.count(tok.eos_token_id) == 2 and tok.eos_token == IM_END
    assert tok.decode(ids, skip_special_tokens=True).startswith("user describe the image concisely.")


MICRO = ["--n", "8", "--n-eval", "3", "--stage1-steps", "1", "--stage2-steps", "1", "--vqa-scenes", "4",
         "--lm-steps", "2", "--lm-scenes", "20", "--batch", "4"]


@pytest.mark.slow
def test_experiment_micro_run_is_deterministic(tmp_path, capsys):
    from synthvlm_data.experiment.run import main

    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["--out", str(first), *MICRO]) == 0
    result = json.loads((first / "results.json").read_text())
    assert sorted(result["arms"]) == sorted(["real", "random", "selected", "selected_fifth", "latents"])
    row = result["arms"]["selected"]
    assert row["n_train"] == 8 and result["arms"]["selected_fifth"]["n_train"] == 1
    assert set(row["captioning"]) == {"exact", "colour", "shape", "size", "count", "relation", "background"}
    assert len(row["vqa"]["all"]["ci95"]) == 2 and row["captioning"]["colour"]["n_items"] == 3
    assert "majority" in result["baselines"] and "| (e) Synth^2" in (first / "results.md").read_text()
    # the second run reuses the shared parts (pools, LM, tower, data: the package's own tests check
    # that builds are deterministic) and trains and scores every arm again
    shutil.copytree(first / "work", second / "work")
    shutil.copy2(first / ".synthvlm-output.json", second)  # the experiment's marker: a folder it may resume in
    assert main(["--out", str(second), *MICRO]) == 0
    assert (first / "results.json").read_bytes() == (second / "results.json").read_bytes()
    # resumable: a finished arm is reused
    assert main(["--out", str(second), *MICRO]) == 0
    assert "done before" in capsys.readouterr().out


def test_pretrain_can_train_the_llm_and_a_new_tower():
    from synthvlm_data.models.tiny import build_tiny_vision_tower
    from synthvlm_data.training.assembly import assemble_llava
    from synthvlm_data.training.config import ModelSection
    from synthvlm_data.training.freezing import freeze_for_pretrain
    from synthvlm_data.world.lm import build_lm, build_tokenizer

    tok = build_tokenizer()
    cfg = ModelSection(llm="tiny:none", vision_tower="tiny:clip-vit", chat_template="chatml", dtype="float32")
    model, _ = assemble_llava(build_tiny_vision_tower(0), build_lm(tok, 64, 1), tok, cfg)

    def trained():
        return {n.split(".")[1] if n.startswith("model.") else n.split(".")[0]
                for n, p in model.named_parameters() if p.requires_grad}

    freeze_for_pretrain(model)
    assert trained() == {"multi_modal_projector"}  # LLaVA stage 1
    freeze_for_pretrain(model, train_llm=True)
    assert trained() == {"multi_modal_projector", "language_model"}  # lm_head is tied to the embeddings
    freeze_for_pretrain(model, train_llm=True, train_vision_tower=True)
    assert trained() == {"multi_modal_projector", "language_model", "vision_tower"}


def test_make_demo_train_commands_parse_and_evaluate_the_checkpoints_it_writes(tmp_path):
    """`make demo-train` as typed: its experiment arguments parse (one seed of arm (a)), and the two
    `synthvlm eval` commands name the stage folders that arm's run writes (running it takes minutes:
    the scores are in the README)."""
    import shlex
    import subprocess
    from pathlib import Path

    from synthvlm_data.cli import make_parser
    from synthvlm_data.experiment.run import parse, train_config

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "demo"
    dry = subprocess.run(["make", "-n", "demo-train", f"DEMO_TRAIN_OUT={out}"], cwd=root, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    experiment = [shlex.split(line) for line in dry if "-m synthvlm_data.experiment" in line]
    evals = [shlex.split(line) for line in dry if " eval " in line]
    assert len(experiment) == 1 and len(evals) == 2
    args = experiment[0][experiment[0].index("synthvlm_data.experiment") + 1:]
    settings, parsed_out = parse(args)
    assert parsed_out == out and settings.arms == ["real"] and settings.seeds == [0]
    run_dir = out / "arms" / "real-seed0"
    cfg = train_config(settings, "real", 0, {"lm": out / "lm", "tower": out / "tower", "data": out / "data"}, run_dir)
    written = [cfg["pretrain"]["training"]["output_dir"], cfg["finetune"]["training"]["output_dir"]]
    parser = make_parser()
    evaluated = []
    for cmd in evals:
        ns = parser.parse_args(cmd[cmd.index("eval"):])
        assert ns.suite == "world"
        evaluated.append(str(ns.checkpoint))
    assert evaluated == written
