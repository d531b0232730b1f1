"""open_clip models for CLIPScore and the caption stage's CLIP filter.

An open_clip architecture name with its pretrained tag (`ViT-B-32` + revision `openai`, as the
official SynthVLM code loads CLIP ViT-B/32), an open_clip checkpoint on the Hub (`hf-hub:<id>`), a
local open_clip folder (`local-dir:<path>`), or `tiny:clip` (built offline, `models.tiny`).

The activation follows the weights: OpenAI's CLIP (and other checkpoints whose open_clip pretrained
config declares `quick_gelu`) was trained with QuickGELU, but open_clip's plain architecture configs
(`ViT-B-32`) use GELU, and loading such weights into them only warns. Every score (and the paper's
0.28 threshold) would shift, so a tag that declares QuickGELU builds its architecture with
`force_quick_gelu` (`open_clip_spec`). Hub and local open_clip folders carry their own
`open_clip_config.json`, which already says which activation they use.
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


def tag_quick_gelu(arch: str, tag: str) -> bool:
    """Whether open_clip's pretrained config of (arch, tag) declares QuickGELU (`quick_gelu: true`)."""
    import open_clip

    return bool(open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu", False))


def open_clip_spec(ref: ModelRef, role: str = "score.clip.model") -> dict:
    """The `open_clip.create_model*` arguments for `ref`: model_name, pretrained and, for a
    pretrained tag that declares QuickGELU on an architecture config without it, force_quick_gelu.

    `{id: ViT-B-32, revision: openai}` -> ViT-B-32 with QuickGELU, the activation OpenAI's weights
    were trained with (what `ViT-B-32-quickgelu` builds).
    """
    import open_clip

    name, pretrained = open_clip_name(ref, role)
    spec: dict = {"model_name": name, "pretrained": pretrained}
    if pretrained is not None and not name.startswith(("hf-hub:", "local-dir:")):
        arch_cfg = open_clip.get_model_config(name) or {}
        if tag_quick_gelu(name, pretrained) and not arch_cfg.get("quick_gelu", False):
            spec["force_quick_gelu"] = True
    return spec


def build_open_clip_architecture(ref: ModelRef, device: str = "meta", role: str = "score.clip.model"):
    """The model `load_clip_scorer` builds for `ref` (same `open_clip_spec`), without its weights:
    on the meta device by default, so a real-size architecture costs no memory and no download."""
    import torch
    import open_clip

    spec = open_clip_spec(ref, role)
    kwargs = {k: v for k, v in spec.items() if k not in ("model_name", "pretrained")}
    with torch.device(device):
        return open_clip.create_model(spec["model_name"], pretrained=None, device=device, **kwargs)


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


def clip_precision(precision: str, device: str) -> str:
    """open_clip's precision for a `score.clip.precision` on `device` (`auto`: fp16 on CUDA, else fp32)."""
    if precision == "auto":
        return "fp16" if str(device).startswith("cuda") else "fp32"
    return precision


def load_clip_scorer(ref: ModelRef, device: str, role: str = "score.clip.model", precision: str = "fp32"):
    """Return (model, preprocess, tokenizer) with open_clip's official eval preprocessing, the
    weights in open_clip's `precision` (fp16/bf16: its mixed precision, LayerNorm kept in fp32)."""
    import open_clip

    if ref.id == TINY_CLIP:
        model = build_tiny_open_clip(seed=0, precision=precision)
        preprocess = open_clip.image_transform(model.visual.image_size, is_train=False)
        tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the real CLIP BPE, 77 tokens
    elif ref.is_tiny:
        raise ModelUnavailableError(f"{role}: unknown tiny model '{ref.id}' (known: {TINY_CLIP})")
    else:
        spec = open_clip_spec(ref, role)
        name = spec.pop("model_name")
        try:
            # The third return value is the eval transform (resize + center crop + normalise with
            # the checkpoint's mean/std and interpolation): the official CLIPScore preprocessing.
            # open_clip takes a checkpoint's .safetensors when the repo has one, and its torch.load
            # fallback is pinned to weights_only=True: tensors only, never arbitrary pickled objects.
            model, _, preprocess = open_clip.create_model_and_transforms(name, **spec, weights_only=True,
                                                                         precision=precision)
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as err:
            what = f"'{ref.id}'" + (f" (pretrained '{ref.revision}')" if ref.revision else "")
            raise ModelUnavailableError(
                f"cannot load {role} {what}: {one_line(err)}; {offline_hint(role)}"
            ) from None
    model.eval().to(device)
    return model, preprocess, tokenizer
