"""Synth^2's embedding path: a LLaVA model that reads the generator's VAE latents, not pixels.

Training rows carry the `latent` column of a latent-mode build (`generate.output: latents`: the
denoised latents the pipeline would have decoded, fp16, in the pipeline's scaled latent space), so
no image is ever decoded. At evaluation a real image goes through the same VAE's *encoder*
(`LatentEncoder`) into that same space.

The vision tower is `tiny:latent-vit` (`models.tiny.latent_vision_config`): a real transformers
`CLIPVisionModel` whose patch embedding is a conv over the latent's channels (4 x 16 x 16 for
world:sdxl at 64 px, 4-latent-pixel patches -> 16 image tokens, the pixel tower's count). Why a
CLIP ViT rather than a bespoke module: `LlavaForConditionalGeneration` takes it unchanged (the
latents are its `pixel_values`), so training, saving, `from_pretrained` and generation are the
standard LLaVA ones; only the input side (this module) differs. Its weights start seeded random,
like `tiny:clip-vit`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from synthvlm_data.errors import InputDataError
from synthvlm_data.models.diffusion import load_model_vae as load_vae
from synthvlm_data.models.llava import num_image_tokens
from synthvlm_data.models.refs import ModelRef

LATENT_INFO = "latent_input.json"  # written next to a latent-mode checkpoint: which VAE, which size


# --------------------------------------------------------------------------- the VAE


def vae_scale(vae) -> int:
    """Pixels per latent pixel (diffusers' `vae_scale_factor`)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


class LatentEncoder:
    """Real images -> latents in the space a latent-mode build stores (the inverse of
    `stages.decode.LatentDecoder`'s un-normalisation): the encoder's posterior mode, then
    `(z - latents_mean) * scaling_factor / latents_std` when the VAE config has them, else
    `(z - shift_factor) * scaling_factor`. Images are resized to `size * vae_scale` pixels with
    diffusers' `VaeImageProcessor` (to [-1, 1]), as the pipelines do."""

    def __init__(self, vae, size: int):
        from diffusers.image_processor import VaeImageProcessor

        self.vae, self.size = vae, size
        self.pixels = size * vae_scale(vae)
        self.processor = VaeImageProcessor(vae_scale_factor=vae_scale(vae))

    @torch.inference_mode()
    def __call__(self, images: list) -> torch.Tensor:
        x = self.processor.preprocess([im.convert("RGB") for im in images], height=self.pixels, width=self.pixels)
        z = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode()
        cfg = self.vae.config
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            c = z.shape[1]
            z = (z - torch.tensor(mean).view(1, c, 1, 1)) * cfg.scaling_factor / torch.tensor(std).view(1, c, 1, 1)
        else:
            z = (z - (getattr(cfg, "shift_factor", None) or 0.0)) * cfg.scaling_factor
        return z.float()


# --------------------------------------------------------------------------- model and processor


def build_latent_tower(latents, seed: int = 0):
    """The `tiny:latent-vit` tower for a config's `model.latents` (channels read from the VAE config)."""
    from synthvlm_data.models.tiny import build_latent_vision_tower

    channels = load_vae(latents.vae).config.latent_channels
    return build_latent_vision_tower(channels, latents.size, latents.patch_size, seed=seed)


class LatentProcessor:
    """A LlavaProcessor whose images are latent tensors (C, H, W): `pixel_values` are the stacked
    latents and each `<image>` becomes the tower's token count. Everything else (chat template,
    tokenizer, decode) is the wrapped processor's, so TRL's `DataCollatorForVisionLanguageModeling`
    builds the same prompt/completion layout and labels as for pixels."""

    def __init__(self, processor, n_image_tokens: int):
        self._processor, self.n_image_tokens = processor, n_image_tokens

    def __getattr__(self, name: str) -> Any:
        return getattr(self._processor, name)

    def __call__(self, images=None, text=None, **kwargs):
        kwargs.pop("images_kwargs", None)
        token = self._processor.image_token
        texts = [text] if isinstance(text, str) else list(text or [])
        flat = [im for group in (images or []) for im in (group if isinstance(group, (list, tuple)) else [group])]
        if sum(t.count(token) for t in texts) != len(flat):
            raise InputDataError(f"{len(flat)} latents for {sum(t.count(token) for t in texts)} {token} placeholders")
        texts = [t.replace(token, token * self.n_image_tokens) for t in texts]
        out = self._processor.tokenizer(texts, **kwargs)
        if flat:
            out["pixel_values"] = torch.stack([torch.as_tensor(im, dtype=torch.float32) for im in flat])
        return out


def image_token_count(model_or_config) -> int:
    config = getattr(model_or_config, "config", model_or_config)
    return num_image_tokens(config.vision_config, config.vision_feature_select_strategy)


def latent_batch(batch: dict[str, list]) -> dict[str, list]:
    """`latent` column (fp16 nested lists) -> `image` float32 tensors (what the collator stacks)."""
    out = {k: v for k, v in batch.items() if k != "latent"}
    out["image"] = [torch.as_tensor(x, dtype=torch.float32) for x in batch["latent"]]
    return out


def check_latent_shape(ds, latents, where: str) -> None:
    shape = getattr(ds.features["latent"], "shape", None)
    if shape is not None and tuple(shape[1:]) != (latents.size, latents.size):
        raise InputDataError(f"dataset {where} holds {'x'.join(map(str, shape))} latents but model.latents.size is "
                             f"{latents.size}; set model.latents.size: {shape[1]}")


def write_latent_info(output_dir: Path, latents) -> Path:
    path = Path(output_dir) / LATENT_INFO
    path.write_text(json.dumps(latents.model_dump(mode="json"), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_latent_llava(folder: str | Path):
    """(model, LatentProcessor, LatentEncoder) of a saved latent-mode checkpoint: real images are
    encoded by the VAE named in its `latent_input.json`, then answered like training rows."""
    from synthvlm_data.models.llava import load_llava
    from synthvlm_data.training.config import LatentInput

    folder = Path(folder)
    info = folder / LATENT_INFO
    if not info.is_file():
        raise InputDataError(f"{folder} is not a latent-mode checkpoint (no {LATENT_INFO}); load it with "
                             "AutoModelForImageTextToText")
    latents = LatentInput.model_validate(json.loads(info.read_text(encoding="utf-8")))
    model, processor = load_llava(ModelRef(id=str(folder)), "float32", role="checkpoint")
    model.eval()
    encoder = LatentEncoder(load_vae(latents.vae), latents.size)
    return model, LatentProcessor(processor, image_token_count(model)), encoder


def latent_inputs(processor: LatentProcessor, encoder: LatentEncoder, images: list, prompts: list[str]) -> dict:
    """Model inputs for real images + user prompts (one image each), through the VAE encoder."""
    latents = encoder(images)
    texts = []
    for prompt in prompts:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    return processor(images=list(latents), text=texts, return_tensors="pt", padding=True, padding_side="left",
                     add_special_tokens=False)
