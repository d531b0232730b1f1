"""The arithmetic of one generated image, counted by PyTorch's own FLOP counter.

Each denoiser (UNet or SD3 transformer) and the VAE decoder are rebuilt from their configs on the
meta device (no memory, no weights) and run once under `torch.utils.flop_counter.FlopCounterMode`
with the recipe's latent size, text length and classifier-free guidance batch. The counter counts
the matrix products and convolutions (attention included), 2 FLOPs per multiply-add; elementwise
work is left out, so the FLOP-limit time it gives is a lower bound.

Per image: denoiser calls x FLOPs per call (the base's and the refiner's, split at `high_noise_frac`
by the schedulers' own timesteps, as diffusers splits them) + one VAE decode. Divided by a GPU's dense 16-bit peak,
that is the fastest any implementation could make an image on it: the pilot prints it next to the
measured s/image, so a user sees how far from the hardware a run is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Dense bf16/fp16 tensor-core peak (no sparsity), TFLOP/s, from the vendors' data sheets; the first
# name contained in torch.cuda.get_device_name() wins (so "H100 PCIe" before "H100").
PEAK_TFLOPS = {
    "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4, "H800": 989.4, "GH200": 989.4,
    "B200": 2250.0, "A100": 312.0, "A800": 312.0, "L40S": 362.1, "L40": 181.0, "L4": 121.0, "A10G": 70.0,
    "A10": 125.0, "RTX 4090": 165.2, "RTX 6000 Ada": 364.2, "V100": 125.0, "T4": 65.0,
}
REFERENCE_GPU = ("H100 SXM", 989.4)  # what a CPU pilot compares against


def peak_tflops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in device_name), None)


@dataclass
class ImageFlops:
    base_steps: int
    base_per_step: float  # FLOPs of one denoiser call at the guidance batch (2 with CFG)
    refiner_steps: int
    refiner_per_step: float
    decode: float  # one VAE decode of one image

    @property
    def total(self) -> float:
        return self.base_steps * self.base_per_step + self.refiner_steps * self.refiner_per_step + self.decode


def _counted(module: torch.nn.Module, call) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        call(module)
    return float(counter.get_total_flops())


def _meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    with torch.device("meta"):
        return type(module).from_config(module.config)


def denoiser_step_flops(pipe, height: int, width: int, batch: int, text_len: int | None = None) -> float:
    """FLOPs of one call of `pipe`'s UNet or SD3 transformer on `batch` latents of an image of
    height x width (text of the pipeline's own length unless `text_len`)."""
    scale = getattr(pipe, "vae_scale_factor", 8)
    h, w = height // scale, width // scale
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        model = _meta_copy(unet)
        cfg = model.config
        with torch.device("meta"):
            args = dict(sample=torch.zeros(batch, cfg.in_channels, h, w), timestep=torch.zeros(batch),
                        encoder_hidden_states=torch.zeros(batch, text_len or 77, cfg.cross_attention_dim))
            if cfg.addition_embed_type == "text_time":  # SDXL: pooled text + time ids
                text_dim = pipe.text_encoder_2.config.projection_dim
                n_ids = (cfg.projection_class_embeddings_input_dim - text_dim) // cfg.addition_time_embed_dim
                args["added_cond_kwargs"] = {"text_embeds": torch.zeros(batch, text_dim),
                                             "time_ids": torch.zeros(batch, n_ids)}
        return _counted(model, lambda m: m(**args))
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise ValueError(f"{type(pipe).__name__} has neither a unet nor a transformer to count")
    model = _meta_copy(transformer)
    cfg = model.config
    with torch.device("meta"):
        args = dict(hidden_states=torch.zeros(batch, cfg.in_channels, h, w), timestep=torch.zeros(batch),
                    encoder_hidden_states=torch.zeros(batch, text_len or 77 + 256, cfg.joint_attention_dim),
                    pooled_projections=torch.zeros(batch, cfg.pooled_projection_dim))
    return _counted(model, lambda m: m(**args))


def decode_flops(vae, height: int, width: int, scale: int = 8) -> float:
    model = _meta_copy(vae)
    with torch.device("meta"):
        z = torch.zeros(1, model.config.latent_channels, height // scale, width // scale)
    return _counted(model, lambda m: m.decode(z))


def denoiser_calls(pipe, refiner, cfg) -> tuple[int, int]:
    """(base, refiner) denoiser calls of one image, as diffusers' SDXL pipelines split the steps: the
    base runs the scheduler's timesteps at or above the `high_noise_frac` cutoff, the refiner those
    below it (its own schedule of `steps`; +1 for a second-order scheduler on an even count)."""
    import copy

    if refiner is None:
        return cfg.steps, 0
    n_train = pipe.scheduler.config.num_train_timesteps
    cutoff = int(round(n_train - cfg.high_noise_frac * n_train))
    base = copy.deepcopy(pipe.scheduler)
    base.set_timesteps(cfg.steps)
    ref = copy.deepcopy(refiner.scheduler)
    ref.set_timesteps(cfg.steps)
    ref_n = int((ref.timesteps < cutoff).sum())
    if getattr(ref, "order", 1) == 2 and ref_n % 2 == 0:
        ref_n += 1
    return int((base.timesteps >= cutoff).sum()), ref_n


def image_flops(pipe, refiner, cfg) -> ImageFlops:
    """FLOPs of one image with a loaded generator (`pipe`, `refiner` or None) and the recipe's
    `generate` section: steps, refiner split, guidance, size, T5 length."""
    batch = 2 if cfg.guidance_scale > 1 else 1
    text_len = None if cfg.max_sequence_length is None or getattr(pipe, "unet", None) is not None \
        else 77 + cfg.max_sequence_length
    base_steps, refiner_steps = denoiser_calls(pipe, refiner, cfg)
    per_step = denoiser_step_flops(pipe, cfg.height, cfg.width, batch, text_len)
    ref_per_step = denoiser_step_flops(refiner, cfg.height, cfg.width, batch) if refiner is not None else 0.0
    vae = pipe.vae
    return ImageFlops(base_steps=base_steps, base_per_step=per_step, refiner_steps=refiner_steps,
                      refiner_per_step=ref_per_step,
                      decode=decode_flops(vae, cfg.height, cfg.width, getattr(pipe, "vae_scale_factor", 8)))
