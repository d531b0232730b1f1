"""Stage 2b (latent runs only), decode: stored latents -> images, with the generator's VAE alone.

Latent runs (`generate.output: latents`, Synth^2) decode before scoring, since CLIPScore and SSIM
are defined on pixels; the exported dataset still carries the latents. `LatentDecoder` is the
decode the pipeline would have done (un-scaling, VAE, post-processing): on a GPU fp16 run the stored
latents are exactly what the VAE would have decoded; on CPU (fp32) the fp16 rounding moves pixels by
at most one uint8 level (tested).

`synthvlm decode --work-dir W [--images DIR]` (`build.decode_run`) runs this stage over a work dir
later, on any backend (resumable like every stage), and can write the images as files too.
"""

from __future__ import annotations

import pyarrow as pa
import torch
from PIL import Image

from synthvlm_data.columns import GENERATE_SCHEMA, encode_image, latent_from_bytes
from synthvlm_data.config import GenerateConfig
from synthvlm_data.errors import ShardError
from synthvlm_data.models import families
from synthvlm_data.models.devices import resolve_device
from synthvlm_data.models.diffusion import generator_family, load_vae
from synthvlm_data.stages.base import RunContext, ShardwiseStage
from synthvlm_data.workdir import DECODE, GENERATE
from synthvlm_data.workunits import WorkUnit, chunk


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
        row = families.family(family if family is not None else generator_family(cfg))
        if row.upcast_fp16_vae and self.vae.dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False):
            # What the SDXL pipelines do before decoding (a copy: the generator's VAE stays fp16).
            import copy

            self.vae = copy.deepcopy(self.vae).to(torch.float32)
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.processor = VaeImageProcessor(vae_scale_factor=scale)
        self.watermark = None
        if row.watermark:
            from diffusers.utils.import_utils import is_invisible_watermark_available

            if is_invisible_watermark_available():  # the SDXL pipelines' default (add_watermarker=None)
                from diffusers.pipelines.stable_diffusion_xl.watermark import StableDiffusionXLWatermarker

                self.watermark = StableDiffusionXLWatermarker()

    @classmethod
    def from_generator(cls, gen) -> LatentDecoder:
        """Reuse a loaded generator's VAE (no second load)."""
        row = families.family_of_class(type(gen.final_pipe).__name__, default=gen.cfg.pipeline)
        return cls(gen.cfg, gen.device, vae=gen.final_pipe.vae, family=row.name)

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


class DecodeStage(ShardwiseStage):
    """generate shard i (latents) -> decode shard i (images, the pixel-mode generate schema).

    Uses only the generator's VAE, in the generation batches (same composition as the
    pipeline's own decode in pixel mode). Latent runs decode before scoring: CLIPScore and
    SSIM are defined on pixels. The exported dataset still carries the latents.
    """

    name = DECODE

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        if ctx.recipe.generate.output != "latents":
            raise ShardError("decode applies to latent-mode runs (generate.output: latents); this run stores images")
        return super().plan(ctx)

    def setup(self, ctx: RunContext) -> None:
        self.decoder = LatentDecoder(ctx.recipe.generate)

    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        cfg = ctx.recipe.generate
        gen = ctx.store.read(WorkUnit(GENERATE, unit.index, unit.num_units)).to_pylist()
        rows = []
        for part in chunk(len(gen), cfg.batch_size):
            batch = gen[part.start : part.stop]
            latents = torch.stack([latent_from_bytes(r["latent"], r["latent_shape"]) for r in batch])
            for r, img in zip(batch, self.decoder(latents), strict=True):
                rows.append({
                    "id": r["id"], "repeat": r["repeat"], "seed": r["seed"],
                    "image": encode_image(img, cfg.image_format, cfg.image_quality), "generator": r["generator"],
                })
        return pa.Table.from_pylist(rows, schema=GENERATE_SCHEMA)
