"""The world CLIP's image tower as a transformers `CLIPVisionModel` (a LLaVA vision tower).

Why convert: LLaVA (and `LlavaForConditionalGeneration`) reads a transformers vision model's hidden
states; `world:clip` is an open_clip checkpoint. The conversion is a pure re-layout of the same
tensors (open_clip's fused `in_proj` split into q, k, v), so it is deterministic and exact:
`pooler_output` (post-layernorm CLS) equals open_clip's visual output before `proj`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthvlm_data.models.refs import ModelRef

WORLD_CLIP = "world:clip"


def load_open_clip(ref: str = WORLD_CLIP):
    import open_clip

    path = ModelRef(id=ref).path
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + str(path), weights_only=True)
    return model.eval(), preprocess


def vision_config(visual):
    from transformers import CLIPVisionConfig

    width = visual.conv1.out_channels
    block = visual.transformer.resblocks[0]
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=block.mlp.c_fc.out_features,
        num_hidden_layers=len(visual.transformer.resblocks), num_attention_heads=block.attn.num_heads,
        image_size=visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size,
        patch_size=visual.conv1.kernel_size[0], num_channels=3,
        hidden_act="gelu",  # open_clip's nn.GELU is the exact (erf) GELU, not quick_gelu
        layer_norm_eps=block.ln_1.eps, projection_dim=visual.proj.shape[1],
    )


def convert_visual(visual):
    """open_clip `VisionTransformer` -> transformers `CLIPVisionModel` with the same weights."""
    from transformers import CLIPVisionModel

    cfg = vision_config(visual)
    model = CLIPVisionModel(cfg).eval()
    sd = {}
    emb = "vision_model.embeddings."
    sd[emb + "patch_embedding.weight"] = visual.conv1.weight
    sd[emb + "class_embedding"] = visual.class_embedding
    sd[emb + "position_embedding.weight"] = visual.positional_embedding
    for name in ("weight", "bias"):
        sd[f"vision_model.pre_layrnorm.{name}"] = getattr(visual.ln_pre, name)
        sd[f"vision_model.post_layernorm.{name}"] = getattr(visual.ln_post, name)
    for i, blk in enumerate(visual.transformer.resblocks):
        p = f"vision_model.encoder.layers.{i}."
        q, k, v = blk.attn.in_proj_weight.chunk(3, dim=0)
        qb, kb, vb = blk.attn.in_proj_bias.chunk(3, dim=0)
        for n, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
            sd[p + f"self_attn.{n}.weight"], sd[p + f"self_attn.{n}.bias"] = w, b
        sd[p + "self_attn.out_proj.weight"] = blk.attn.out_proj.weight
        sd[p + "self_attn.out_proj.bias"] = blk.attn.out_proj.bias
        for name in ("weight", "bias"):
            sd[p + f"layer_norm1.{name}"] = getattr(blk.ln_1, name)
            sd[p + f"layer_norm2.{name}"] = getattr(blk.ln_2, name)
            sd[p + f"mlp.fc1.{name}"] = getattr(blk.mlp.c_fc, name)
            sd[p + f"mlp.fc2.{name}"] = getattr(blk.mlp.c_proj, name)
    # transformers 5 names the tower's parameters without the `vision_model.` prefix in state_dict()
    prefix = "" if any(k.startswith("embeddings.") for k in model.state_dict()) else None
    sd = {(k.removeprefix("vision_model.") if prefix == "" else k): v.detach().clone() for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"world CLIP conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def save_world_clip_vit(out: str | Path, ref: str = WORLD_CLIP) -> Path:
    """Write the converted tower + a `CLIPImageProcessor` with the world CLIP's mean/std to `out`
    (a folder `load_vision_tower` / `load_image_stats` read like any local CLIP). Idempotent."""
    from transformers import CLIPImageProcessor

    out = Path(out)
    if (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file():
        return out
    clip, preprocess = load_open_clip(ref)
    model = convert_visual(clip.visual)
    norm = [t for t in preprocess.transforms if type(t).__name__ == "Normalize"][0]
    size = model.config.image_size
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp), safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                       image_mean=list(map(float, norm.mean)), image_std=list(map(float, norm.std)),
                       resample=3).save_pretrained(str(tmp))
    tmp.rename(out)
    return out


@torch.no_grad()
def open_clip_pre_proj(visual, pixels: torch.Tensor) -> torch.Tensor:
    """open_clip's pooled visual output before the projection (`proj`), for the equivalence check."""
    proj = visual.proj
    visual.proj = None
    try:
        return visual(pixels)
    finally:
        visual.proj = proj
