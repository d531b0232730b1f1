"""bench/gpu_rehearsal.py at toy size on the CPU: every section runs through the package's code path."""

from __future__ import annotations

import json

import pytest


def test_gpu_rehearsal_toy_runs_every_section(tmp_path, capsys):
    from bench.gpu_rehearsal import main, peak_tflops

    out = tmp_path / "r.json"
    assert main(["--toy", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["errors"] == {} and result["device"]["toy"] is True
    rows = result["rows"]
    sdxl = [r for r in rows if r["section"] == "sdxl"]
    assert [r["batch"] for r in sdxl] == [1, 2] and all(r["s_per_image"] > 0 and r["flops_per_image"] > 0 for r in sdxl)
    assert sdxl[0]["base_steps"] == 3  # 4 steps, the tiny recipe's high_noise_frac 0.8: base 3, refiner 1
    assert [r["images_per_s"] > 0 for r in rows if r["section"] == "clip"] == [True]
    llava = {r["variant"]: r for r in rows if r["section"] == "llava"}
    assert llava["7B pretrain (toy)"]["trainable"] < llava["7B finetune (toy)"]["trainable"]
    assert "| sdxl | eager | 1 |" in capsys.readouterr().out
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and peak_tflops("NVIDIA H100 PCIe") == 756.0


@pytest.mark.slow
def test_gpu_rehearsal_real_size_models_build_on_meta():
    """The GPU run's real-size SDXL pipelines and LLaVA-7B assemble (on the meta device, ~1 min here),
    and one UNet step's FLOPs count at 1024 px: what the GPU run does before its first timing."""
    import torch

    from bench.gpu_rehearsal import llava_model, sdxl_pipelines
    from synthvlm_data.config import load_recipe
    from synthvlm_data.models.flops import image_flops

    base, refiner = sdxl_pipelines(False, "meta", torch.float16)
    assert base.unet.config.cross_attention_dim == 2048 and refiner.unet.config.cross_attention_dim == 1280
    counted = image_flops(base, refiner, load_recipe("synthvlm-100k").generate)  # what the GPU run counts
    assert (counted.base_steps, counted.refiner_steps) == (47, 13)
    assert 10e12 < counted.base_per_step < 20e12  # 13.5 TFLOP per CFG step at 1024 px
    _, model, _ = llava_model(False, "meta", torch.bfloat16)
    assert model.config.image_seq_length == 576 and model.config.text_config.hidden_size == 4096


def test_the_bench_copy_of_the_stage_call_makes_the_stage_images():
    """Without pyarrow on a bare GPU box the bench drives the pipelines with a copy of
    `ImageGenerator._run`: it must make the same images as the stage."""
    import numpy as np

    from bench.gpu_rehearsal import _StageCall, sdxl_pipelines
    from synthvlm_data.config import load_recipe
    from synthvlm_data.stages.generate import ImageGenerator

    cfg = load_recipe("tiny").generate.model_copy(update={"steps": 3})
    base, refiner = sdxl_pipelines(True, "cpu", __import__("torch").float32)
    gen = ImageGenerator.__new__(ImageGenerator)
    gen.cfg, gen.device, gen.pipe, gen.refiner = cfg, "cpu", base, refiner
    prompts, seeds = ["a red circle", "two blue squares"], [3, 4]
    stage = [np.asarray(im) for im in gen(prompts, seeds)]
    copy = [np.asarray(im) for im in _StageCall(cfg, base, refiner)(prompts, seeds)]
    assert all(np.array_equal(a, b) for a, b in zip(stage, copy, strict=True))
