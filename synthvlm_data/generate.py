"""Text-to-image generation with diffusers, in pixel or latent space.

One CPU `torch.Generator` per sample (seeded from the sample's stable seed) makes each image
reproducible regardless of where it runs; batches are fixed by the work-unit plan because batch
composition changes float results (~1e-6). SDXL runs base + refiner the way the diffusers docs
hand off: base `output_type="latent", denoising_end=f`, refiner `denoising_start=f` (the official
SynthVLM code passes denoising_end to the refiner, which skips the hand-off). SD3 takes
`max_sequence_length` (its T5 prompt length); any other text-to-image pipeline comes through
`AutoPipelineForText2Image`, called with the recipe options its `__call__` accepts.

Latent mode (Synth^2's embedding space) asks the pipeline for `output_type="latent"`, skipping
the VAE decode, and stores the latents as little-endian float16. `LatentDecoder` is the decode the
pipeline would have done (un-scaling, VAE, post-processing), so stored latents can become images
later, with the same VAE: on a GPU fp16 run the stored latents are exactly what the VAE would have
decoded; on CPU (fp32) the fp16 rounding moves pixels by at most one uint8 level (tested).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from PIL import Image

from synthvlm_data.config import GenerateConfig
from synthvlm_data.errors import SynthVLMError
from synthvlm_data.models.devices import resolve_device
from synthvlm_data.models.diffusion import generator_family, load_generator, load_vae


def _accepted(pipe, kwargs: dict, recipe_keys: dict[str, str]) -> dict:
    """Keep the call arguments `pipe.__call__` takes.

    An argument the recipe sets explicitly (`recipe_keys`: argument -> recipe key) that the
    pipeline does not take is an error naming the key, not a silent no-op.
    """
    # Named parameters only: many pipelines also take **kwargs (deprecated callbacks) and would
    # swallow an option they ignore.
    params = {n for n, p in inspect.signature(pipe.__call__).parameters.items() if p.kind is not p.VAR_KEYWORD}
    for arg, key in recipe_keys.items():
        if arg in kwargs and arg not in params:
            raise SynthVLMError(
                f"generate.{key} is set but {type(pipe).__name__} takes no '{arg}'; remove it from the recipe"
            )
    return {k: v for k, v in kwargs.items() if k in params}


class ImageGenerator:
    """Holds the loaded pipeline(s); one instance per worker, models loaded once."""

    def __init__(self, cfg: GenerateConfig, device: str | None = None):
        self.cfg = cfg
        self.device = resolve_device(device or cfg.device)
        self.pipe, self.refiner = load_generator(cfg, self.device)

    @property
    def name(self) -> str:
        ids = [self.cfg.model.id] + ([self.cfg.refiner.id] if self.cfg.refiner else [])
        return " + ".join(ids)

    @property
    def final_pipe(self):
        """The pipeline whose output is the image (the refiner when there is one)."""
        return self.refiner if self.refiner is not None else self.pipe

    def _generators(self, seeds: Sequence[int]) -> list[torch.Generator]:
        return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def _common(self, pipe, prompts: Sequence[str]) -> dict:
        cfg = self.cfg
        kwargs = dict(
            prompt=list(prompts),
            # The official SynthVLM configs pass negative_prompt="" (encoded, not zeroed).
            negative_prompt=[cfg.negative_prompt] * len(prompts),
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
        )
        explicit = {"num_inference_steps": "steps", "guidance_scale": "guidance_scale"}
        if cfg.negative_prompt:
            explicit["negative_prompt"] = "negative_prompt"
        if cfg.max_sequence_length is not None:
            kwargs["max_sequence_length"] = cfg.max_sequence_length
            explicit["max_sequence_length"] = "max_sequence_length"
        return _accepted(pipe, kwargs, explicit)

    @torch.inference_mode()
    def _run(self, prompts: Sequence[str], seeds: Sequence[int], output_type: str):
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        cfg = self.cfg
        size = dict(height=cfg.height, width=cfg.width)
        if self.refiner is None:
            return self.pipe(
                **self._common(self.pipe, prompts), **size, generator=self._generators(seeds), output_type=output_type
            ).images
        latents = self.pipe(
            **self._common(self.pipe, prompts), **size, generator=self._generators(seeds),
            denoising_end=cfg.high_noise_frac, output_type="latent",
        ).images
        return self.refiner(
            **self._common(self.refiner, prompts), image=latents, generator=self._generators(seeds),
            denoising_start=cfg.high_noise_frac, output_type=output_type,
        ).images

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[Image.Image]:
        """Generate one image per (prompt, seed); `len(prompts)` is the batch size."""
        return self._run(prompts, seeds, "pil")

    def latents(self, prompts: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        """The denoised latents (B, C, H, W) the pipeline would decode, skipping the VAE."""
        lat = self._run(prompts, seeds, "latent")
        unpack = getattr(type(self.final_pipe), "_unpack_latents", None)
        if lat.ndim == 3 and unpack is not None:  # Flux-style packed tokens -> spatial latents
            lat = unpack(lat, self.cfg.height, self.cfg.width, self.final_pipe.vae_scale_factor)
        return lat


class LatentDecoder:
    """The VAE decode of a diffusers text-to-image pipeline, applied to stored latents.

    Mirrors the pipelines' own code (SDXL, SD3, Flux, SD 1.x): SDXL decodes fp16 VAEs with
    `force_upcast` in float32 (the others decode in the VAE's dtype); latents are un-normalised with `latents_mean`/`latents_std` when the VAE
    config has them, else `latents / scaling_factor + shift_factor`; then `VaeImageProcessor`
    post-processing (and SDXL's invisible watermark when the pipeline would apply it).
    """

    def __init__(self, cfg: GenerateConfig, device: str | None = None, vae=None, family: str | None = None):
        from diffusers.image_processor import VaeImageProcessor

        self.cfg = cfg
        self.device = resolve_device(device or cfg.device)
        self.vae = vae if vae is not None else load_vae(cfg, self.device)
        if family is None:
            family = generator_family(cfg)
        if family == "sdxl" and self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            # What the SDXL pipelines do before decoding (a copy: the generator's VAE stays fp16).
            import copy

            self.vae = copy.deepcopy(self.vae).to(torch.float32)
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.processor = VaeImageProcessor(vae_scale_factor=scale)
        self.watermark = None
        if family == "sdxl":
            from diffusers.utils.import_utils import is_invisible_watermark_available

            if is_invisible_watermark_available():  # the SDXL pipelines' default (add_watermarker=None)
                from diffusers.pipelines.stable_diffusion_xl.watermark import StableDiffusionXLWatermarker

                self.watermark = StableDiffusionXLWatermarker()

    @classmethod
    def from_generator(cls, gen: ImageGenerator) -> LatentDecoder:
        """Reuse a loaded generator's VAE (no second load)."""
        family = "sdxl" if "StableDiffusionXL" in type(gen.final_pipe).__name__ else gen.cfg.pipeline
        return cls(gen.cfg, gen.device, vae=gen.final_pipe.vae, family=family)

    @torch.inference_mode()
    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        vae = self.vae
        cfg = vae.config
        latents = latents.to(self.device, vae.dtype)
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            c = latents.shape[1]
            mean = torch.tensor(mean).view(1, c, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, c, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / cfg.scaling_factor + mean
        else:
            latents = latents / cfg.scaling_factor
            shift = getattr(cfg, "shift_factor", None)
            if shift is not None:
                latents = latents + shift
        image = vae.decode(latents, return_dict=False)[0]
        if self.watermark is not None:
            image = self.watermark.apply_watermark(image)
        return self.processor.postprocess(image, output_type="pil")
