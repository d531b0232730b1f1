"""Stage 2, generate: text-to-image generation with diffusers, in pixel or latent space.

One CPU `torch.Generator` per sample (seeded from the sample's stable seed) makes each image
reproducible regardless of where it runs; batches are fixed by the work-unit plan because batch
composition changes float results (~1e-6). SDXL runs base + refiner the way the diffusers docs
hand off: base `output_type="latent", denoising_end=f`, refiner `denoising_start=f` (the official
SynthVLM code passes denoising_end to the refiner, which skips the hand-off). SD3 takes
`max_sequence_length` (its T5 prompt length); any other text-to-image pipeline comes through
`AutoPipelineForText2Image`, called with the recipe options its `__call__` accepts.

Latent mode (Synth^2's embedding space) asks the pipeline for `output_type="latent"`, skipping
the VAE decode, and stores the latents as little-endian float16 (`synthvlm_data.columns`); the
decode stage (`stages.decode`) turns them into images later, with the same VAE.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import pyarrow as pa
import torch
from PIL import Image

from synthvlm_data.columns import GENERATE_SCHEMA, LATENT_SCHEMA, encode_image, latent_to_bytes
from synthvlm_data.config import GenerateConfig
from synthvlm_data.errors import SynthVLMError
from synthvlm_data.models.devices import resolve_device
from synthvlm_data.models.diffusion import load_generator
from synthvlm_data.stages.base import RunContext, ShardwiseStage
from synthvlm_data.workdir import CAPTIONS, GENERATE
from synthvlm_data.workunits import WorkUnit, chunk, derive_seed


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


class GenerateStage(ShardwiseStage):
    """caption shard i -> generate shard i: k images (or latents) per caption, each with its own seed.

    Generation batches are fixed here (consecutive `batch_size` jobs of the shard), never by
    a backend: batch composition changes float results.
    """

    name = GENERATE

    def setup(self, ctx: RunContext) -> None:
        self.generator = ImageGenerator(ctx.recipe.generate)

    @staticmethod
    def batches(ctx: RunContext, unit: WorkUnit) -> list[list[tuple[str, str, int, int]]]:
        """The unit's fixed generation batches of (id, caption, repeat, seed)."""
        cfg = ctx.recipe.generate
        caps = ctx.store.read(WorkUnit(CAPTIONS, unit.index, unit.num_units), ["id", "caption"]).to_pylist()
        jobs = [
            (c["id"], c["caption"], r, derive_seed(ctx.recipe.seed, c["id"], r))
            for c in caps
            for r in range(cfg.images_per_caption)
        ]
        return [jobs[b.start : b.stop] for b in chunk(len(jobs), cfg.batch_size)]

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        cfg = ctx.recipe.generate
        latent_mode = cfg.output == "latents"
        rows = []
        for part in self.batches(ctx, unit):
            prompts, seeds = [j[1] for j in part], [j[3] for j in part]
            outputs = self.generator.latents(prompts, seeds) if latent_mode else self.generator(prompts, seeds)
            for (sid, _, rep, seed), out in zip(part, outputs, strict=True):
                row = {"id": sid, "repeat": rep, "seed": seed, "generator": self.generator.name}
                if latent_mode:
                    row["latent"], row["latent_shape"] = latent_to_bytes(out), list(out.shape)
                else:
                    row["image"] = encode_image(out, cfg.image_format, cfg.image_quality)
                rows.append(row)
        return pa.Table.from_pylist(rows, schema=LATENT_SCHEMA if latent_mode else GENERATE_SCHEMA)
