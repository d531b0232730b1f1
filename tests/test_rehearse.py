"""`synthvlm rehearse`: full-scale models at real size on the meta device, LLaVA checks, memory plans."""

from __future__ import annotations

import pytest

from synthvlm_data.rehearsal import memory
from synthvlm_data.rehearsal.catalogue import MODELS, Published

COMPONENTS = [(m.label, c) for m in MODELS.values() for c in m.components]


@pytest.mark.parametrize("label,component", COMPONENTS, ids=[f"{lbl}:{c.name}" for lbl, c in COMPONENTS])
def test_real_size_meta_models_match_published_counts(label, component):
    from synthvlm_data.rehearsal.meta import build, count_parameters

    module = build(component)
    assert all(p.is_meta for p in module.parameters()), "built with storage: not on the meta device"
    n = count_parameters(module)
    assert component.published.matches(n), f"{label} {component.name}: {n:,} vs {component.published.describe()}"


def test_published_tolerance_is_the_published_precision():
    exact = Published(6_738_415_616, 1, "")
    assert exact.matches(6_738_415_616) and not exact.matches(6_738_415_617)
    rounded = Published(2.3e9, 0.1e9, "")
    assert rounded.matches(2_259_526_660) and not rounded.matches(2_240_000_000)


def test_every_shipped_config_names_its_source():
    from importlib import resources

    from synthvlm_data.rehearsal.catalogue import config_source

    files = [p.name for p in (resources.files("synthvlm_data.rehearsal") / "configs").iterdir() if p.name.endswith(".json")]
    used = {c.config for _, c in COMPONENTS if c.config}
    assert used <= set(files)
    for name in files:
        assert config_source(name).startswith("Hugging Face Hub "), name


def test_training_memory_plan_hand_checked():
    """Psi = 1000 params, 100 trainable, 4 GPUs; h = 8, i = 16, 2 layers, vocab 10; 2 x 3 tokens."""
    shape = memory.LlamaShape(hidden=8, kv_hidden=8, intermediate=16, layers=2, vocab=10)
    kw = dict(total_params=1000, trainable_params=100, shape=shape, micro_batch=2, seq_len=3, n_gpus=4)
    plans = {z: memory.training_plan(zero_stage=z, checkpointing=False, **kw) for z in range(4)}
    # ZeRO paper: 2 + 2 + 12 bytes per trainable parameter; frozen ones 2 bytes
    assert (plans[0].weights, plans[0].grads, plans[0].optimizer) == (2000, 200, 1200)
    assert (plans[1].weights, plans[1].grads, plans[1].optimizer) == (2000, 200, 300)  # optimizer / N
    assert (plans[2].weights, plans[2].grads, plans[2].optimizer) == (2000, 50, 300)  # + gradients / N
    assert (plans[3].weights, plans[3].grads, plans[3].optimizer) == (500, 50, 300)  # + weights / N
    # per layer per token: 22 h + 6 h_kv + 8 i = 176 + 48 + 128 = 352 bytes; 6 tokens, 2 layers
    assert plans[0].activations == 2 * 352 * 6
    ckpt = memory.training_plan(zero_stage=0, checkpointing=True, **kw)
    assert ckpt.activations == 2 * (2 * 8 * 6) + 352 * 6  # layer inputs kept + one layer recomputed
    assert plans[0].logits == 10 * 6 * 10
    assert plans[0].total == 2000 + 200 + 1200 + 4224 + 600
    full = memory.training_plan(total_params=1000, trainable_params=1000, shape=shape, micro_batch=1, seq_len=1,
                                n_gpus=1, zero_stage=0, checkpointing=True)
    assert full.weights + full.grads + full.optimizer == 16 * 1000


def test_generation_memory_plan_hand_checked():
    vae = {"block_out_channels": [128, 256, 512, 512]}
    # three fp32 maps of 256 channels at 1024 x 1024 per image: 3 GiB
    assert memory.vae_decode_bytes(vae, 1024, 1024, 8) == 8 * 3 * memory.GIB
    unet = {"block_out_channels": [4, 8], "layers_per_block": 1, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"]}
    # conv_in 4*16 + level 0: (1+1)*4*16 + level 1: 1*8*4; GEGLU at level 1: 4 tokens * 8 * 8; fp16, 2 samples (CFG)
    assert memory.unet_working_bytes(unet, 4, 1, guidance=True) == 2 * 2 * (64 + 128 + 32 + 256)
    assert memory.fits(0.9 * 24 * memory.GIB, 24) and not memory.fits(0.9 * 24 * memory.GIB + 1, 24)


@pytest.fixture(scope="module")
def llava_7b():
    """The 7B config's LLaVA rehearsal, with the Vicuna template made to compile if it does not."""
    import jinja2

    from synthvlm_data.rehearsal.catalogue import lookup
    from synthvlm_data.rehearsal.llava import rehearse_llava
    from synthvlm_data.training import chat_templates
    from synthvlm_data.training.config import load_config, shipped_configs_dir

    cfg = load_config(shipped_configs_dir() / "7b.yaml")
    saved = dict(chat_templates.TEMPLATES)
    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(chat_templates.VICUNA_V1)
    except jinja2.TemplateSyntaxError:  # the apostrophe of "user's" ends the string literal
        chat_templates.TEMPLATES["vicuna_v1"] = chat_templates.VICUNA_V1.replace("user's", "user\\'s")
    try:
        report, _, _ = rehearse_llava(cfg.model, lookup(cfg.model.vision_tower.id, None).components[0],
                                      lookup(cfg.model.llm.id, None).components[0])
    finally:
        chat_templates.TEMPLATES.clear()
        chat_templates.TEMPLATES.update(saved)
    return report


def test_llava_7b_assembly_at_real_size(llava_7b):
    checks = {c.name: c for c in llava_7b.checks}
    for name in ("assembly: every tensor is a part's (vision tower, LLM, new projector)", "image tokens",
                 "image features through tower + projector (meta forward)", "projector mlp2x_gelu"):
        assert checks[name].ok, checks[name].detail
    assert llava_7b.counts["image_tokens"] == 576
    assert llava_7b.counts["projector"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert llava_7b.counts["trainable_pretrain"] == llava_7b.counts["projector"]
    assert llava_7b.counts["trainable_finetune"] == llava_7b.counts["projector"] + llava_7b.counts["llm"]
    assert llava_7b.counts["total"] == llava_7b.counts["vision"] + llava_7b.counts["llm"] + llava_7b.counts["projector"]


def test_llava_7b_template_and_label_masks(llava_7b):
    checks = {c.name: c for c in llava_7b.checks}
    for stage in ("stage 1 (prompt-completion, completion-only loss)", "stage 2 (messages, assistant-only loss)"):
        assert checks[f"{stage}: image tokens in input_ids"].ok, checks[f"{stage}: image tokens in input_ids"].detail
        assert "576 <image> ids, pixel_values (1, 3, 336, 336)" in checks[f"{stage}: image tokens in input_ids"].detail
        masks = checks[f"{stage}: labels = the answer only, end-of-turn included"]
        assert masks.ok, masks.detail


def test_a_broken_template_is_a_failed_check_not_a_crash():
    import jinja2

    from synthvlm_data.rehearsal.llava import LlavaReport, _check_samples

    class Processor:  # a processor whose chat template does not compile
        class tokenizer:
            @staticmethod
            def convert_tokens_to_ids(token):
                return 0

        def apply_chat_template(self, *args, **kwargs):
            jinja2.Environment().from_string("{{ 'user's' }}")

    report = LlavaReport()
    _check_samples(report, Processor(), 576, 2048)
    assert [c.ok for c in report.checks] == [False, False]
    assert all(c.detail.startswith("TemplateSyntaxError") for c in report.checks)


def test_rehearse_cli_prints_the_tables_and_exits_0(capsys):
    from synthvlm_data.cli import main

    rc = main(["rehearse", "synthvlm-100k"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "models at real size (meta device)" in out and "generation memory per GPU" in out
    assert "2,567,463,684" in out and "FAIL" not in out
    assert "rehearse: 8 checks, 0 failed" in err  # CLIP, BLIP, judge, 4 SDXL base parts, refiner UNet


def test_rehearse_markdown_and_bad_target(capsys):
    from synthvlm_data.cli import main

    assert main(["rehearse", "--markdown", "synthvlm-100k"]) == 0
    out = capsys.readouterr().out
    assert "| synthvlm-100k | sdxl + refiner fp16, 1024 px, 60 steps, CFG | 8 | off |" in out
    assert main(["rehearse", "no-such-recipe"]) != 0
    assert "rehearse: 'no-such-recipe' is neither" in capsys.readouterr().err


def test_assembly_still_refuses_shell_tensors_left_on_meta_unless_the_parts_are_meta(monkeypatch):
    """Real parts: a shell tensor nothing replaced is an error; meta parts (the rehearsal) are all meta."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration

    from synthvlm_data.models.tiny import build_tiny_vision_tower
    from synthvlm_data.rehearsal.llava import llama_shaped_tokenizer
    from synthvlm_data.training.assembly import assemble_llava
    from synthvlm_data.training.config import load_config, shipped_configs_dir

    model_cfg = load_config(shipped_configs_dir() / "tiny.yaml").model.model_copy(update={"chat_template": "chatml"})
    original = LlavaForConditionalGeneration.__init__

    def with_extra(self, config):  # a submodule a future transformers adds and assembly does not know
        original(self, config)
        self.extra = torch.nn.Linear(2, 2)

    monkeypatch.setattr(LlavaForConditionalGeneration, "__init__", with_extra)

    def parts(device):
        with torch.device(device):
            lm = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, vocab_size=32000))
            return build_tiny_vision_tower(0).to(device), lm

    with pytest.raises(RuntimeError, match="uninitialised tensors: \\['extra.weight'"):
        assemble_llava(*parts("cpu"), llama_shaped_tokenizer(), model_cfg)
    model, _ = assemble_llava(*parts("meta"), llama_shaped_tokenizer(), model_cfg)
    assert all(p.is_meta for p in model.parameters())


def test_label_mask_check_catches_a_template_that_trains_the_prompt(monkeypatch):
    """The same sample through TRL's collator: the shipped ChatML template masks the prompt; one
    whose `{% generation %}` block also covers the user turn is a failed check."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from synthvlm_data.models.tiny import tiny_vision_config
    from synthvlm_data.rehearsal.llava import LlavaReport, _check_samples, llama_shaped_tokenizer
    from synthvlm_data.training import chat_templates
    from synthvlm_data.training.assembly import add_image_token, build_processor
    from synthvlm_data.training.config import load_config, shipped_configs_dir

    model_cfg = load_config(shipped_configs_dir() / "tiny.yaml").model.model_copy(update={"chat_template": "chatml"})
    name = "stage 2 (messages, assistant-only loss): labels = the answer only, end-of-turn included"

    def masks_ok() -> dict[str, bool]:
        tok = llama_shaped_tokenizer()
        add_image_token(tok)
        processor = build_processor(tok, tiny_vision_config(), model_cfg, list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD))
        report = LlavaReport()
        _check_samples(report, processor, 16, 2048)
        return {c.name: c.ok for c in report.checks}

    good = masks_ok()
    assert good[name] and good["stage 2 (messages, assistant-only loss): image tokens in input_ids"]
    plain = chat_templates.CHATML.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    leaky = "{% generation %}" + plain + "{% endgeneration %}"
    monkeypatch.setitem(chat_templates.TEMPLATES, "chatml", leaky)
    assert not masks_ok()[name]


def test_sdxl_image_flops_at_real_size():
    """The pilot's FLOP count on the real SDXL base + refiner (meta-device builds from the shipped
    Hub configs and SDXL's scheduler config) with the synthvlm-100k settings: 60 steps split 47 + 13
    at high_noise_frac 0.8 (the "leading" timesteps put 47 at or above the cutoff),
    classifier-free guidance (batch 2), 1024 px, one VAE decode."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    from synthvlm_data.config import load_recipe
    from synthvlm_data.models.flops import image_flops
    from synthvlm_data.models.tiny import _scheduler as sdxl_scheduler  # SDXL's scheduler_config.json
    from synthvlm_data.models.tiny import clip_tokenizer
    from synthvlm_data.rehearsal.meta import build

    base = {c.name.split(" ")[0]: build(c) for c in MODELS[("stabilityai/stable-diffusion-xl-base-1.0", None)].components}
    refiner_unet = build(MODELS[("stabilityai/stable-diffusion-xl-refiner-1.0", None)].components[0])
    tok = clip_tokenizer()
    pipe = StableDiffusionXLPipeline(vae=base["vae"], text_encoder=base["text_encoder"], text_encoder_2=base["text_encoder_2"],
                                     tokenizer=tok, tokenizer_2=tok, unet=base["unet"], scheduler=sdxl_scheduler())
    refiner = StableDiffusionXLImg2ImgPipeline(vae=base["vae"], text_encoder=None, tokenizer=None, tokenizer_2=tok,
                                               text_encoder_2=base["text_encoder_2"], unet=refiner_unet,
                                               scheduler=sdxl_scheduler(), requires_aesthetics_score=True)
    f = image_flops(pipe, refiner, load_recipe("synthvlm-100k").generate)
    assert (f.base_steps, f.refiner_steps) == (47, 13)
    # measured at the commit that added it: 13.52 / 14.57 TFLOP per guided step, 10.47 per decode
    assert f.base_per_step == pytest.approx(13.522e12, rel=1e-3)
    assert f.refiner_per_step == pytest.approx(14.572e12, rel=1e-3)
    assert f.decode == pytest.approx(10.470e12, rel=1e-3)
    assert f.total == pytest.approx(835.46e12, rel=1e-3)
