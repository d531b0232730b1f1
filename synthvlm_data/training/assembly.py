"""Assemble a standard `LlavaForConditionalGeneration` + `LlavaProcessor` from separate parts.

LLaVA-1.5 = pretrained vision tower + pretrained LLM + a new 2-layer GELU MLP projector
(`mlp2x_gelu`) reading the vision tower's second-to-last layer (`vision_feature_layer=-2`) without
the CLS token. We build exactly transformers' Llava classes, so the result saves as safetensors and
loads with `AutoModelForImageTextToText` / `AutoProcessor` and `generate` with no custom code.

The Llava shell is created on the meta device and the pretrained modules are moved in, so a 7B LLM
is never allocated twice; only the projector gets fresh (seeded) weights.
"""

from __future__ import annotations

import copy

import torch

from synthvlm_data.models import llava
from synthvlm_data.models.llava import has_cls_token, num_image_tokens
from synthvlm_data.models.devices import seeded
from synthvlm_data.training.chat_templates import chat_template
from synthvlm_data.training.config import ModelSection

IMAGE_TOKEN = "<image>"


def add_image_token(tokenizer) -> int:
    """Register `<image>` as a special token (LLaVA's placeholder) and make sure padding works."""
    from tokenizers import AddedToken

    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:
        # LLaVA v1 pads with unk; fall back to eos for tokenizers without one.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def resize_embeddings(llm, vocab_size: int) -> None:
    """Grow the LLM's vocabulary for `<image>` (and pad); new rows = mean of the old rows.

    Deterministic on purpose (no random init): rebuilding from the same config gives identical
    weights on every rank and every run. The `<image>` input row is never read (image features
    replace it), but its output row decides how often the model predicts `<image>`: the mean
    keeps that near the average token's logit.
    """
    old = llm.get_input_embeddings().num_embeddings
    if vocab_size <= old:
        return
    llm.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        emb = llm.get_input_embeddings().weight
        emb[old:] = emb[:old].mean(dim=0, keepdim=True)
        head = llm.get_output_embeddings()
        if head is not None and head.weight is not emb:
            head.weight[old:] = head.weight[:old].mean(dim=0, keepdim=True)


def build_processor(tokenizer, vision_config, model_cfg: ModelSection, image_mean, image_std):
    """LlavaProcessor: LLaVA-1.5 image preprocessing (pad to square, resize) + tokenizer + template."""
    from transformers import LlavaImageProcessor, LlavaProcessor

    size = vision_config.image_size
    image_processor = LlavaImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        do_pad=model_cfg.image_aspect_ratio == "pad",
        image_mean=image_mean,
        image_std=image_std,
    )
    template = chat_template(model_cfg.chat_template)
    tokenizer.chat_template = template
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=model_cfg.vision_feature_select_strategy,
        num_additional_image_tokens=int(has_cls_token(vision_config)),  # CLIP's CLS token
        chat_template=template,
        image_token=IMAGE_TOKEN,
    )


def assemble_llava(vision_tower, llm, tokenizer, model_cfg: ModelSection, *, seed: int = 0, image_stats=None):
    """Return (LlavaForConditionalGeneration, LlavaProcessor) around the given pretrained parts.

    `llm` and `vision_tower` are consumed: their modules become the Llava model's modules.
    """
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    image_token_id = add_image_token(tokenizer)
    resize_embeddings(llm, len(tokenizer))
    text_config = llm.config
    text_config.pad_token_id = tokenizer.pad_token_id
    vision_config = vision_tower.config
    n_tokens = num_image_tokens(vision_config, model_cfg.vision_feature_select_strategy)
    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=image_token_id,
        image_seq_length=n_tokens,
        projector_hidden_act="gelu",  # mlp2x_gelu
        vision_feature_layer=model_cfg.vision_feature_layer,
        vision_feature_select_strategy=model_cfg.vision_feature_select_strategy,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(text_config, "tie_word_embeddings", False)),
    )
    config.text_config._attn_implementation = text_config._attn_implementation  # keep sdpa/eager choice
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = vision_tower
    model.model.language_model = llm.model
    model.lm_head = llm.lm_head
    dtype = llm.get_input_embeddings().weight.dtype
    with seeded(seed):
        projector = LlavaMultiModalProjector(config)
    model.model.multi_modal_projector = projector.to(dtype=dtype, device=llm.device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    leftover = [n for n, p in model.named_parameters() if p.is_meta] + [n for n, b in model.named_buffers() if b.is_meta]
    # Parts built on the meta device (`synthvlm rehearse`, real size without weights) leave everything
    # meta; the rehearsal checks instead that every tensor of the shell was replaced by a part's.
    if leftover and llm.device.type != "meta":  # a transformers change renamed a submodule: fail loudly
        raise RuntimeError(f"Llava assembly left uninitialised tensors: {leftover[:5]}")
    model.generation_config = copy.deepcopy(llm.generation_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    mean, std = image_stats or (list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD))
    processor = build_processor(tokenizer, vision_config, model_cfg, mean, std)
    return model, processor


def build_model(model_cfg: ModelSection, *, seed: int = 0):
    """Load both components named by the config and assemble them (the stage-1 starting point)."""
    llava.check_component(model_cfg.llm, "llm")
    llava.check_component(model_cfg.vision_tower, "vision_tower")
    llm, tokenizer = llava.load_llm(model_cfg.llm, model_cfg.dtype, model_cfg.attn_implementation)
    if model_cfg.latents is not None:  # Synth^2: a ViT over the generator's VAE latents
        from synthvlm_data.models.devices import DTYPES
        from synthvlm_data.training.latent import build_latent_tower

        vision_tower = build_latent_tower(model_cfg.latents, seed=seed).to(DTYPES[model_cfg.dtype])
    else:
        vision_tower = llava.load_vision_tower(model_cfg.vision_tower, model_cfg.dtype, seed=seed)
    stats = llava.load_image_stats(model_cfg.vision_tower)
    return assemble_llava(vision_tower, llm, tokenizer, model_cfg, seed=seed, image_stats=stats)
