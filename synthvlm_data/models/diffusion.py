"""Diffusers text-to-image pipelines (SDXL base + refiner, SD3, any pipeline via
`AutoPipelineForText2Image`) and their VAE alone, for a recipe's `generate` section.

`tiny:sdxl-base` / `tiny:sdxl-refiner` / `tiny:sd3` are built offline (`models.tiny`); anything else
is a Hub id or a local pipeline folder, loaded with safetensors only. Recipe options for full-size
runs: `variant` (`fp16` weight files), `vae` (a replacement VAE such as the fp16-fix SDXL VAE) and
`vae_slicing` (decode a batch image by image).
"""

from __future__ import annotations

import torch

from synthvlm_data.errors import ModelUnavailableError
from synthvlm_data.models.devices import compute_dtype
from synthvlm_data.models.refs import ModelRef, from_pretrained, offline_hint
from synthvlm_data.models.families import (AUTO, FAMILIES, TINY_SD3, TINY_SDXL_BASE, TINY_SDXL_REFINER, family,
                                          family_of_class, family_of_tiny)
from synthvlm_data.models.tiny import build_tiny_sd3, build_tiny_sdxl


def _tiny_generator(gen_cfg):
    """(pipeline, refiner) for a `tiny:` generator, checked against the recipe's pipeline family."""
    model_id = gen_cfg.model.id
    row = family_of_tiny(model_id)
    if row is None:
        known = ", ".join(r.tiny for r in FAMILIES.values() if r.tiny)
        raise ModelUnavailableError(f"generate.model: '{model_id}' is not a tiny generator (known: {known})")
    if gen_cfg.pipeline not in (row.name, AUTO.name):
        raise ModelUnavailableError(
            f"generate.model: '{model_id}' is a tiny {row.name} model but generate.pipeline is '{gen_cfg.pipeline}'"
        )
    if model_id == TINY_SD3:
        return build_tiny_sd3(seed=0), None
    base, refiner = build_tiny_sdxl(seed=0)
    if gen_cfg.refiner is None:
        return base, None
    if gen_cfg.refiner.id != TINY_SDXL_REFINER:
        raise ModelUnavailableError(f"generate.refiner: tiny base needs '{TINY_SDXL_REFINER}', got '{gen_cfg.refiner.id}'")
    return base, refiner


def _load(cls, ref: ModelRef, role: str, **kwargs):
    """Load a pipeline (or one of its parts) with its class's from_pretrained, safetensors only."""
    return from_pretrained(cls.from_pretrained, ref, role, noun="", hint=offline_hint(role), use_safetensors=True,
                           **kwargs)


def _variant(gen_cfg) -> dict:
    """`variant=` for from_pretrained when the recipe names one (`fp16`: half the download)."""
    return {"variant": gen_cfg.variant} if gen_cfg.variant is not None else {}


def _replacement_vae(gen_cfg, dtype):
    """The recipe's `generate.vae` (e.g. the fp16-fix SDXL VAE), or None for the model's own."""
    if gen_cfg.vae is None:
        return None
    from diffusers import AutoModel

    return _load(AutoModel, gen_cfg.vae, "generate.vae", dtype=dtype)


def _configure_vae(vae, gen_cfg):
    """Sliced decoding when the recipe asks for it (diffusers 0.42: the VAE's `enable_slicing`;
    the pipelines' `enable_vae_slicing` shortcut is gone)."""
    if gen_cfg.vae_slicing:
        vae.enable_slicing()
    return vae


def load_generator(gen_cfg, device: str):
    """Return (pipeline, refiner_or_None) for a GenerateConfig."""
    from synthvlm_data.output import silence_imported

    dtype = compute_dtype(gen_cfg.dtype, device)
    import diffusers  # imported here so that its bars follow the command's verbosity

    silence_imported()
    if gen_cfg.model.is_tiny:
        base, refiner = _tiny_generator(gen_cfg)
    else:
        cls = getattr(diffusers, family(gen_cfg.pipeline).pipeline_class)
        vae = _replacement_vae(gen_cfg, dtype)
        base = _load(cls, gen_cfg.model, "generate.model", dtype=dtype, **_variant(gen_cfg),
                     **({"vae": vae} if vae is not None else {}))
        refiner = None
        if gen_cfg.refiner is not None:
            from diffusers import StableDiffusionXLImg2ImgPipeline

            refiner = _load(
                StableDiffusionXLImg2ImgPipeline,
                gen_cfg.refiner,
                "generate.refiner",
                dtype=dtype,
                text_encoder_2=base.text_encoder_2,
                vae=base.vae,
                **_variant(gen_cfg),
            )
    _configure_vae(base.vae, gen_cfg)  # the refiner decodes with the same VAE object
    for pipe in (base, refiner):
        if pipe is not None:
            pipe.to(device)  # dtype is set at load (from_pretrained dtype; tiny builds are fp32)
            pipe.set_progress_bar_config(disable=True)
            for component in pipe.components.values():
                if isinstance(component, torch.nn.Module):
                    component.eval()  # modules built from configs start in train mode (T5 dropout 0.1)
    return base, refiner


def load_vae(gen_cfg, device: str):
    """The generator's VAE alone (for decoding stored latents without loading the denoiser).

    Tiny generators are rebuilt (cheap; same seed, same weights); full-scale ones load only the
    `vae` subfolder of the model, with the class its config names (`diffusers.AutoModel`).
    """
    if gen_cfg.model.is_tiny:
        pipe, _ = _tiny_generator(gen_cfg.model_copy(update={"refiner": None}))
        vae = pipe.vae
    elif gen_cfg.vae is not None:
        vae = _replacement_vae(gen_cfg, compute_dtype(gen_cfg.dtype, device))
    else:
        from diffusers import AutoModel

        vae = _load(
            AutoModel, gen_cfg.model, "generate.model (vae)", subfolder="vae",
            dtype=compute_dtype(gen_cfg.dtype, device), **_variant(gen_cfg),
        )
    return _configure_vae(vae, gen_cfg).to(device).eval()


def load_model_vae(ref: ModelRef, role: str = "model.latents.vae"):
    """The generator's AutoencoderKL alone (float32, eval): `tiny:sdxl-base` is rebuilt, anything
    else loads the `vae/` subfolder of the pipeline folder (world:sdxl) or Hub id."""
    if ref.is_tiny:
        if ref.id != TINY_SDXL_BASE:
            raise ModelUnavailableError(f"{role}: '{ref.id}' is not a tiny generator with a VAE (known: {TINY_SDXL_BASE})")
        vae = build_tiny_sdxl(seed=0)[0].vae.to(torch.float32)
    else:
        from diffusers import AutoModel

        vae = _load(AutoModel, ref, role, subfolder="vae", dtype=torch.float32)
    return vae.eval()


def generator_family(gen_cfg) -> str:
    """The family (`models.families`) whose decode policy a decode of stored latents repeats.

    `pipeline: auto` names no family, so the model's `model_index.json` says which pipeline class
    it is (SDXL decodes fp16 VAEs upcast to fp32 and watermarks: a decode of stored latents must
    do the same to reproduce pixel mode).
    """
    if gen_cfg.pipeline != AUTO.name:
        return gen_cfg.pipeline
    if gen_cfg.model.is_tiny:
        return (family_of_tiny(gen_cfg.model.id) or FAMILIES["sdxl"]).name
    from diffusers import DiffusionPipeline

    try:
        ref = gen_cfg.model
        index = DiffusionPipeline.load_config(str(ref.path) if ref.is_local else ref.id, revision=ref.revision)
    except Exception as err:
        raise ModelUnavailableError(
            f"cannot read generate.model '{gen_cfg.model.id}' (model_index.json): {type(err).__name__}; {offline_hint('generate.model')}"
        ) from None
    return family_of_class(str(index.get("_class_name", ""))).name
