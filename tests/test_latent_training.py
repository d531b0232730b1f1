"""Synth^2's embedding path: stage 1 trains on a latent-mode build's `latent`
column without decoding anything, and the checkpoint answers real images encoded by the same VAE.

The dataset is a real latent-mode build (`synthvlm_data.build`, the tiny recipe's captions) with
the miniature world's generator `world:sdxl`, whose AutoencoderKL makes 4 x 16 x 16 latents at 64 px.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from synthvlm_data.errors import InputDataError
from synthvlm_data.training.config import load_config
from synthvlm_data.training.errors import TrainConfigError
from test_backends import tiniest_recipe

ROOT = Path(__file__).resolve().parents[1]
TINY_LATENT = ROOT / "train" / "configs" / "tiny-latent.yaml"
WORLD_LATENTS = {"output": "latents", "model": {"id": "world:sdxl"}, "refiner": None, "pipeline": "sdxl",
                 "steps": 2, "guidance_scale": 3.0, "height": 64, "width": 64, "images_per_caption": 1}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # conftest: torch on 1 thread


@pytest.fixture(scope="module")
def latent_build(tmp_path_factory):
    from synthvlm_data.build import build

    root = tmp_path_factory.mktemp("latent-train")
    recipe = tiniest_recipe(captions={"limit": 4}, generate=WORLD_LATENTS)
    return build(recipe, root / "out", work_dir=root / "work", progress=False)


@pytest.fixture(scope="module")
def latent_run(latent_build, tmp_path_factory):
    """3 stage-1 steps on the latent build, with every VAE decode path made to fail loudly."""
    from diffusers import AutoencoderKL

    from synthvlm_data.stages.decode import LatentDecoder
    from synthvlm_data.training import run as run_lib

    out = tmp_path_factory.mktemp("latent-runs") / "tiny-latent-pretrain"
    cfg = load_config(TINY_LATENT, [
        "--dataset", str(latent_build.out_dir), "--eval_ratio", "0", "--output_dir", str(out),
        "--per_device_train_batch_size", "2", "--global_batch_size", "2", "--max_steps", "3",
        "--learning_rate", "3e-3", "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--save_strategy", "no",
    ])
    from synthvlm_data.training.latent import LatentProcessor

    batches = []

    def record(self, *args, **kwargs):
        batches.append(call(self, *args, **kwargs))
        return batches[-1]

    call = LatentProcessor.__call__
    boom = AssertionError("a VAE decode ran during latent training")
    with mock.patch.object(AutoencoderKL, "decode", autospec=True, side_effect=boom) as decode, \
         mock.patch.object(AutoencoderKL, "_decode", autospec=True, side_effect=boom), \
         mock.patch.object(LatentDecoder, "__call__", autospec=True, side_effect=boom), \
         mock.patch.object(AutoencoderKL, "encode", autospec=True, side_effect=AssertionError("encode")) as encode, \
         mock.patch.object(LatentProcessor, "__call__", record):
        summary = run_lib.run_stage(cfg, "pretrain")
    assert decode.call_count == 0 and encode.call_count == 0
    return {"cfg": cfg, "out": out, "summary": summary, "batches": batches}


def test_latent_rows_are_the_pixel_values_and_nothing_is_decoded(latent_build, latent_run):
    from datasets import load_dataset

    ds = load_dataset(str(latent_build.out_dir), split="train")
    assert "image" not in ds.column_names and ds.features["latent"].shape == (4, 16, 16)
    stored = {tuple(np.asarray(r, dtype=np.float32).ravel()[:8]) for r in ds["latent"]}
    batch = latent_run["batches"][0]
    assert batch["pixel_values"].shape == (2, 4, 16, 16) and batch["pixel_values"].dtype == torch.float32
    for latent in batch["pixel_values"]:  # the stored fp16 latents, bit for bit (as float32)
        assert tuple(latent.numpy().ravel()[:8]) in stored
    losses = [v for _, v in latent_run["summary"]["loss"]["train"]]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses  # the same 2-row batch every step
    assert (latent_run["out"] / "latent_input.json").is_file()
    card = (latent_run["out"] / "README.md").read_text()
    assert "input: 16x16 VAE latents of world:sdxl, not pixels" in card


def test_checkpoint_evaluates_real_images_through_the_vae_encoder(latent_run):
    """Real world renders -> world:sdxl's encoder -> the trained model: caption loss and a generation."""
    from diffusers import AutoencoderKL

    from synthvlm_data.stages.decode import LatentDecoder
    from synthvlm_data.training.latent import latent_inputs, load_latent_llava
    from synthvlm_data.world.data import split_scenes
    from synthvlm_data.world.render import render

    model, processor, encoder = load_latent_llava(latent_run["out"])
    scenes = split_scenes("eval", 2)
    images = [render(s) for s in scenes]
    with mock.patch.object(AutoencoderKL, "encode", autospec=True, side_effect=AutoencoderKL.encode) as encode:
        inputs = latent_inputs(processor, encoder, images, ["Describe the picture."] * 2)
    assert encode.call_count == 1 and inputs["pixel_values"].shape == (2, 4, 16, 16)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert ((inputs["input_ids"] == image_id).sum(dim=1) == 16).all()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4

    # held-out caption loss on the real renders with their true captions, batched as in training
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.training.data import caption_to_prompt_completion
    from synthvlm_data.world.text import caption

    collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=256, completion_only_loss=True)
    rows = [{"image": z, **caption_to_prompt_completion("Describe the picture.", caption(s, np.random.default_rng(0)))}
            for z, s in zip(inputs["pixel_values"], scenes, strict=True)]
    with torch.no_grad():
        loss = model(**collator(rows)).loss
    assert torch.isfinite(loss) and 0 < float(loss) < 20

    # the encoder is the exact inverse of the decode path's un-normalisation: a real render comes back
    # within a few uint8 levels (measured 4.3-7.1 mean abs on 4 eval renders), a mis-scaled latent does not
    gen_cfg = tiniest_recipe(captions={"limit": 4}, generate=WORLD_LATENTS).generate
    decoder = LatentDecoder(gen_cfg, "cpu", vae=encoder.vae, family="sdxl")
    z = encoder(images)

    def error(latents):
        return float(np.mean([np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean()
                              for a, b in zip(images, decoder(latents), strict=True)]))

    right, wrong = error(z), error(z / encoder.vae.config.scaling_factor)
    assert right < 8 and right < 0.6 * wrong, (right, wrong)


def test_latent_config_and_data_mismatches_are_one_line_errors(latent_build):
    from synthvlm_data.training import data as data_lib

    with pytest.raises(TrainConfigError, match="model.latents and vision_tower 'tiny:latent-vit' go together"):
        load_config(TINY_LATENT, ["--vision_tower", "tiny:clip-vit"])
    with pytest.raises(TrainConfigError, match="multiple of latents.patch_size"):
        load_config(TINY_LATENT, ["--model.latents.patch_size", "3"])
    pixel_cfg = load_config(ROOT / "train" / "configs" / "tiny.yaml", ["--dataset", str(latent_build.out_dir)])
    with pytest.raises(InputDataError, match="holds VAE latents, not images: train it with model.latents"):
        data_lib.pretrain_dataset(pixel_cfg.pretrain.data)
    cfg = load_config(TINY_LATENT, ["--dataset", str(latent_build.out_dir), "--model.latents.size", "32"])
    with pytest.raises(InputDataError, match=r"holds 4x16x16 latents but model.latents.size is 32"):
        data_lib.pretrain_dataset(cfg.pretrain.data, cfg.model.latents)
    from synthvlm_data.training.run import load_datasets

    with pytest.raises(InputDataError, match="stage 2 on latents takes one `captions`-format source"):
        load_datasets(load_config(TINY_LATENT).model_copy(update={"finetune": pixel_cfg.finetune}), "finetune")
