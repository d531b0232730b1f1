"""open_clip models for CLIPScore and the caption stage's CLIP filter.

An open_clip architecture name with its pretrained tag (`ViT-B-32` + revision `openai`, as the
official SynthVLM code loads CLIP ViT-B/32), an open_clip checkpoint on the Hub (`hf-hub:<id>`), a
local open_clip folder (`local-dir:<path>`), or `tiny:clip` (built offline, `models.tiny`).
"""

from __future__ import annotations

from synthvlm_data.errors import ModelUnavailableError, one_line
from synthvlm_data.models.refs import ModelRef, check_hub_repo, offline_hint
from synthvlm_data.models.tiny import TINY_CLIP, build_tiny_open_clip

# open_clip architecture names are not Hub ids: `ViT-B-32` + pretrained tag `openai`.
_OPEN_CLIP_ARCH_PREFIXES = ("ViT-", "RN", "convnext", "EVA", "coca", "xlm", "roberta", "mt5")


def is_open_clip_arch(model_id: str) -> bool:
    return model_id.startswith(_OPEN_CLIP_ARCH_PREFIXES) and "/" not in model_id


def check_open_clip_pretrained(ref: ModelRef, role: str) -> None:
    import open_clip

    tag = ref.revision or ""
    if ref.id not in open_clip.list_models():
        raise ModelUnavailableError(f"{role}: unknown open_clip architecture '{ref.id}'")
    cfg = open_clip.get_pretrained_cfg(ref.id, tag)
    if not cfg:
        raise ModelUnavailableError(f"{role}: open_clip has no pretrained tag '{tag}' for '{ref.id}'")
    hub_id = cfg.get("hf_hub", "").rstrip("/")
    if hub_id:
        check_hub_repo(hub_id, None, f"{role} ({ref.id}/{tag})", offline_hint(role))
    else:
        raise ModelUnavailableError(f"cannot load {role} model '{ref.id}/{tag}': its weights need a download; {offline_hint(role)}")


def open_clip_name(ref: ModelRef, role: str = "score.clip.model") -> tuple[str, str | None]:
    """(model_name, pretrained) for `open_clip.create_model_and_transforms`.

    `ViT-B-32` + revision `openai` -> ("ViT-B-32", "openai") (architecture + pretrained tag, as the
    official SynthVLM code loads CLIP ViT-B/32); a local directory -> "local-dir:<path>"; any other
    id -> "hf-hub:<id>" (an open_clip checkpoint on the Hub).
    """
    if is_open_clip_arch(ref.id):
        if not ref.revision:
            # open_clip would silently build random weights without a pretrained tag.
            raise ModelUnavailableError(
                f"{role}: open_clip architecture '{ref.id}' needs its pretrained tag in `revision` "
                "(e.g. {id: ViT-B-32, revision: openai})"
            )
        return ref.id, ref.revision
    if ref.path.is_dir():
        return "local-dir:" + str(ref.path), None
    return (ref.id if ref.id.startswith("hf-hub:") else "hf-hub:" + ref.id), None


def load_clip_scorer(ref: ModelRef, device: str, role: str = "score.clip.model"):
    """Return (model, preprocess, tokenizer) with open_clip's official eval preprocessing."""
    import open_clip

    if ref.id == TINY_CLIP:
        model = build_tiny_open_clip(seed=0)
        preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
        tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the real CLIP BPE, 77 tokens
    elif ref.is_tiny:
        raise ModelUnavailableError(f"{role}: unknown tiny model '{ref.id}' (known: {TINY_CLIP})")
    else:
        name, pretrained = open_clip_name(ref, role)
        try:
            # The third return value is the eval transform (resize + center crop + normalise with
            # the checkpoint's mean/std and interpolation): the official CLIPScore preprocessing.
            # open_clip takes a checkpoint's .safetensors when the repo has one, and its torch.load
            # fallback is pinned to weights_only=True: tensors only, never arbitrary pickled objects.
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, weights_only=True)
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as err:
            what = f"'{ref.id}'" + (f" (pretrained '{ref.revision}')" if ref.revision else "")
            raise ModelUnavailableError(
                f"cannot load {role} {what}: {one_line(err)}; {offline_hint(role)}"
            ) from None
    model.eval().to(device)
    return model, preprocess, tokenizer
