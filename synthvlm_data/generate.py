"""Text-to-image generation with diffusers.

One CPU `torch.Generator` per sample (seeded from the sample's stable seed) makes each image
reproducible regardless of where it runs; batches are fixed by the work-unit plan because batch
composition changes float results (~1e-6). SDXL runs base + refiner the way the diffusers docs
hand off: base `output_type="latent", denoising_end=f`, refiner `denoising_start=f` (the official
SynthVLM code passes denoising_end to the refiner, which skips the hand-off).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch
from PIL import Image

from synthvlm_data.config import GenerateConfig
from synthvlm_data.models import load_generator, resolve_device


def encode_image(image: Image.Image, fmt: str, quality: int) -> bytes:
    """Encode deterministically (no timestamps or random metadata)."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", optimize=False, compress_level=6)
    elif fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    elif fmt == "webp":
        image.save(buf, format="WEBP", quality=quality, method=4)
    else:  # the recipe schema rejects anything else first
        raise ValueError(f"unknown image format {fmt!r}")
    return buf.getvalue()


class ImageGenerator:
    """Holds the loaded pipeline(s); one instance per worker, models loaded once."""

    def __init__(self, cfg: GenerateConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.pipe, self.refiner = load_generator(cfg, self.device)

    @property
    def name(self) -> str:
        ids = [self.cfg.model.id] + ([self.cfg.refiner.id] if self.cfg.refiner else [])
        return " + ".join(ids)

    def _generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        """Generate one image per (prompt, seed); `len(prompts)` is the batch size."""
        cfg = self.cfg
        common = dict(
            prompt=list(prompts),
            negative_prompt=[cfg.negative_prompt] * len(prompts) if cfg.negative_prompt else None,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
        )
        size = dict(height=cfg.height, width=cfg.width)
        if cfg.max_sequence_length is not None:
            common["max_sequence_length"] = cfg.max_sequence_length
        if self.refiner is None:
            return self.pipe(**common, **size, generator=self._generators(seeds), output_type="pil").images
        latents = self.pipe(
            **common, **size, generator=self._generators(seeds),
            denoising_end=cfg.high_noise_frac, output_type="latent",
        ).images
        return self.refiner(
            **common, image=latents, generator=self._generators(seeds),
            denoising_start=cfg.high_noise_frac, output_type="pil",
        ).images
