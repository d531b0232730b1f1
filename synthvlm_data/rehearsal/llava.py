"""The LLaVA checks of a training config, at real size on the meta device.

The parts are built from the shipped configs and put together by `training.assembly.assemble_llava`
(the code a real run uses); a real-shaped stage-1 and stage-2 sample (a 1024 px image, as the
recipes generate, a LLaVA instruction and a caption) goes through TRL's own collator
(`DataCollatorForVisionLanguageModeling`, what `SFTTrainer` uses for vision-language data) to check
the chat template, the 576 image tokens and the label masks.

No Vicuna tokenizer is available offline, so `llama_shaped_tokenizer` builds a transformers
`LlamaTokenizer` with Llama's special tokens and ids (`<unk>` 0, `<s>` 1, `</s>` 2), byte fallback,
SentencePiece's `\u2581` word marker and 32000 ids; its pieces are single characters, not Llama's
merges, so text is longer in tokens than with the real one (shapes, not lengths, are checked).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

import torch

from synthvlm_data.errors import one_line
from synthvlm_data.rehearsal.catalogue import Component
from synthvlm_data.rehearsal.meta import build, count_parameters

SAMPLE_CAPTION = "A red double-decker bus drives past a stone church on a rainy city street at dusk."
SAMPLE_IMAGE_SIZE = 1024  # the recipes generate 1024 x 1024 images
IGNORE = -100
END_OF_TURN_MAX_CHARS = 16  # a marker, not a sentence: more after the answer means other text is trained


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class LlavaReport:
    checks: list[Check] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # total, vision, llm, projector, trainable_<stage>
    text_shape: Any = None  # the LLM's config

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(name, bool(ok), detail))


def llama_shaped_tokenizer(vocab_size: int = 32000):
    """A `LlamaTokenizer` with Llama's special ids, byte fallback and `vocab_size` ids (see module doc)."""
    from transformers import LlamaTokenizer

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += ["\u2581"] + list(chars) + ["\u2581" + c for c in chars]
    pieces += [f"\u2581<piece{i}>" for i in range(vocab_size - len(pieces))]  # unreachable fillers: Llama's size
    vocab = {p: i for i, p in enumerate(pieces)}
    return LlamaTokenizer(vocab=vocab, merges=[], unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def _sample_image():
    from PIL import Image

    return Image.new("RGB", (SAMPLE_IMAGE_SIZE, SAMPLE_IMAGE_SIZE), (120, 90, 60))


def rehearse_llava(model_cfg, vision: Component, llm: Component, *, seed: int = 0, max_length: int | None = 2048,
                   report: LlavaReport | None = None,
                   stage_templates: dict[str, str] | None = None) -> tuple[LlavaReport, Any, Any]:
    """Assemble LLaVA on the meta device and check it; returns (report, model or None, processor or None).

    `stage_templates` names the chat template each stage trains with (LLaVA-1.5: `plain` for
    pretrain, `vicuna_v1` for finetune); a stage not named uses `model_cfg.chat_template`."""
    from synthvlm_data.models.llava import num_image_tokens
    from synthvlm_data.training.assembly import assemble_llava

    report = report or LlavaReport()
    dtype = getattr(torch, model_cfg.dtype)
    tower = build(vision).to(dtype)
    lm = build(llm).to(dtype)
    report.text_shape = lm.config
    report.counts["vision"] = count_parameters(tower)
    try:
        model, processor = assemble_llava(tower, lm, llama_shaped_tokenizer(lm.config.vocab_size), model_cfg, seed=seed)
    except Exception as err:  # a failing assembly is a finding, not a crash
        report.add("LLaVA assembly (training.assembly)", False, one_line(err))
        return report, None, None
    projector = model.model.multi_modal_projector
    # after assembly: `lm` still holds its (resized) modules, now shared with the Llava model
    parts = {id(p) for m in (tower, lm, projector) for p in m.parameters()}
    foreign = [n for n, p in model.named_parameters() if id(p) not in parts]
    report.counts["llm"] = count_parameters(model.model.language_model) + count_parameters(model.lm_head)
    report.counts["projector"] = count_parameters(projector)
    report.counts["total"] = count_parameters(model)
    report.counts["vocab"] = model.get_input_embeddings().num_embeddings
    report.add("assembly: every tensor is a part's (vision tower, LLM, new projector)", not foreign,
               f"{report.counts['total']:,} parameters on {next(model.parameters()).device}"
               + (f"; shell tensors left: {foreign[:3]}" if foreign else ""))

    vcfg, tcfg = model.config.vision_config, model.config.text_config
    n_tokens = num_image_tokens(vcfg, model_cfg.vision_feature_select_strategy)
    report.counts["image_tokens"] = n_tokens
    side = vcfg.image_size // vcfg.patch_size
    report.add("image tokens", n_tokens == side * side and model.config.image_seq_length == n_tokens,
               f"{n_tokens} = ({vcfg.image_size} px / patch {vcfg.patch_size})^2, CLS dropped "
               f"(feature layer {model.config.vision_feature_layer}, strategy {model_cfg.vision_feature_select_strategy})")
    with torch.no_grad():
        pixels = torch.empty(1, vcfg.num_channels, vcfg.image_size, vcfg.image_size, device="meta", dtype=dtype)
        feats = model.model.get_image_features(
            pixel_values=pixels, vision_feature_layer=model.config.vision_feature_layer,
            vision_feature_select_strategy=model_cfg.vision_feature_select_strategy)
        feats = getattr(feats, "pooler_output", feats)
        feats = feats[0] if isinstance(feats, (list, tuple)) else feats
    shape = tuple(feats.shape)
    report.add("image features through tower + projector (meta forward)", shape[-2:] == (n_tokens, tcfg.hidden_size),
               f"pixel_values {tuple(pixels.shape)} -> {shape}")
    lin1, lin2 = projector.linear_1, projector.linear_2
    expected = vcfg.hidden_size * tcfg.hidden_size + tcfg.hidden_size + tcfg.hidden_size**2 + tcfg.hidden_size
    report.add(f"projector {model_cfg.projector}",
               (lin1.in_features, lin1.out_features, lin2.out_features) == (vcfg.hidden_size, tcfg.hidden_size, tcfg.hidden_size)
               and report.counts["projector"] == expected and type(projector.act).__name__ == "GELUActivation",
               f"Linear({lin1.in_features} -> {lin1.out_features}), {type(projector.act).__name__}, "
               f"Linear({lin2.in_features} -> {lin2.out_features}): {report.counts['projector']:,} parameters")

    from synthvlm_data.training.freezing import freeze_for_stage, parameter_counts

    for stage in ("pretrain", "finetune"):
        freeze_for_stage(model, stage)
        report.counts[f"trainable_{stage}"] = parameter_counts(model)["trainable"]
    model.requires_grad_(False)
    _check_samples(report, processor, n_tokens, max_length, stage_templates or {})
    return report, model, processor


def _check_samples(report: LlavaReport, processor, n_tokens: int, max_length: int | None,
                   stage_templates: dict[str, str] | None = None) -> None:
    """Stage-1 and stage-2 rows through TRL's collator, each in its stage's template: image tokens,
    label masks, BOS."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.training.chat_templates import chat_template
    from synthvlm_data.training.data import _captions_to_messages, caption_to_prompt_completion
    from synthvlm_data.workunits import BRIEF_CAPTION_PROMPTS

    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    prompt = BRIEF_CAPTION_PROMPTS[0]
    rows = {
        "stage 1 (prompt-completion, completion-only loss)": ("pretrain",
            dict(completion_only_loss=True),
            {"image": _sample_image(), **caption_to_prompt_completion(prompt, SAMPLE_CAPTION)}),
        "stage 2 (messages, assistant-only loss)": ("finetune",
            dict(assistant_only_loss=True),
            {k: v[0] for k, v in _captions_to_messages(
                {"id": ["x"], "prompt": [prompt], "caption": [SAMPLE_CAPTION], "image": [_sample_image()]}).items()}),
    }
    default_template = getattr(processor, "chat_template", None)
    for name, (stage, kwargs, row) in rows.items():
        template_name = (stage_templates or {}).get(stage)
        if template_name:
            name = f"{name}, template {template_name}"
        try:
            if template_name or default_template is not None:
                template = chat_template(template_name) if template_name else default_template
                processor.chat_template = tok.chat_template = template
            batch = DataCollatorForVisionLanguageModeling(processor, max_length=max_length, **kwargs)([row])
        except Exception as err:
            report.add(f"chat template + collator, {name}", False, one_line(err))
            continue
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        n_img = int((ids == image_id).sum())
        report.add(f"{name}: image tokens in input_ids", n_img == n_tokens,
                   f"{n_img} <image> ids, pixel_values {tuple(batch['pixel_values'].shape)}, {len(ids)} tokens")
        kept = labels != IGNORE
        target = tok.decode(ids[kept]).lstrip(" ")
        # trained: the answer, then only its end-of-turn marker, which the model must learn to emit
        # (`</s>` in vicuna_v1, "\n" in LLaVA's plain, `<|im_end|>` in ChatML)
        stop = target[len(SAMPLE_CAPTION):] if target.startswith(SAMPLE_CAPTION) else ""
        masked_ok = not bool(((ids == image_id) & kept).any()) and bool((labels[kept] == ids[kept]).all())
        report.add(f"{name}: labels = the answer only, end-of-turn included",
                   masked_ok and 0 < len(stop) <= END_OF_TURN_MAX_CHARS,
                   f"{int(kept.sum())} of {len(ids)} tokens trained: {target[:40]!r}...{target[-12:]!r}")
        bos = int((ids == tok.bos_token_id).sum())
        report.add(f"{name}: one BOS at the start (LLaVA trains with <s>)", bos == 1 and int(ids[0]) == tok.bos_token_id,
                   f"first id {int(ids[0])}, {bos} BOS in the sequence")
