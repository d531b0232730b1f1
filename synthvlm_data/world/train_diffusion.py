"""Train the world text-to-image model in the SDXL pipeline classes the paper's recipe uses.

`StableDiffusionXLPipeline` with every component trained here on world renders and captions:
an `AutoencoderKL` (64 px <-> 16x16x4 latents), two CLIP text encoders (`CLIPTextModel` and
`CLIPTextModelWithProjection`, their penultimate hidden states concatenated and the second's
projection pooled, as SDXL does) and a `UNet2DConditionModel` with SDXL's `text_time` added
conditioning. Saved with `save_pretrained` (safetensors, fp16) and loaded back by the generate
stage like `stabilityai/stable-diffusion-xl-base-1.0`: a local directory instead of a Hub id.

Two phases, both deterministic for a fixed seed and thread count:
1. the VAE (L1 + MSE reconstruction, a small KL term), then latents of the training renders are
   encoded once (posterior means, scaled to unit variance: SD's `scaling_factor`);
2. the UNet and both text encoders, epsilon prediction on SD's noise schedule with Min-SNR
   weighting (gamma 5, Hang et al. 2023: ~3x faster convergence), 10% caption dropout for
   classifier-free guidance, and an EMA of the weights (diffusers `EMAModel`) that is what is saved.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthvlm_data.world.data import render_array, split_scenes
from synthvlm_data.world.scene import IMAGE_SIZE
from synthvlm_data.world.text import caption
from synthvlm_data.world.tokenizer import CONTEXT_LENGTH, EOS, PAD, BOS, build_tokenizer

LATENT = IMAGE_SIZE // 4  # 16


@dataclass(frozen=True)
class DiffusionTrainConfig:
    seed: int = 0
    n_train: int = 20000
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_crop: int = 32  # the VAE is fully convolutional: 32 px crops train it at a quarter of the cost
    vae_lr: float = 1e-3
    unet_steps: int = 2400
    unet_batch: int = 64
    unet_lr: float = 5e-4
    warmup: int = 100
    caption_dropout: float = 0.1
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    # stop each phase after this many steps of its schedule (the real run's first steps, bit for bit:
    # how `build-models --repeat --stop-after` measures determinism cheaply)
    stop_after: int | None = None


def build_components(vocab_size: int, seed: int):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tok = build_tokenizer()
    text_cfg = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                    num_attention_heads=4, max_position_embeddings=CONTEXT_LENGTH, projection_dim=32,
                    pad_token_id=tok.convert_tokens_to_ids(PAD), bos_token_id=tok.convert_tokens_to_ids(BOS),
                    eos_token_id=tok.convert_tokens_to_ids(EOS), hidden_act="gelu")
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(16, 32, 64), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        latent_channels=4, norm_num_groups=8, sample_size=IMAGE_SIZE, mid_block_add_attention=False)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg))
    unet = UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8, norm_num_groups=16,
        cross_attention_dim=64,  # 32 + 32: both encoders' hidden states, concatenated (SDXL)
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled projection
    )
    return tok, vae, text_encoder, text_encoder_2, unet


def _to_pixels(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _crops(batch: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if size >= batch.shape[1]:
        return batch
    ys, xs = rng.integers(0, batch.shape[1] - size + 1, size=(2, len(batch)))
    return np.stack([im[y : y + size, x : x + size] for im, y, x in zip(batch, ys, xs)])


def train_vae(vae, images: np.ndarray, cfg: DiffusionTrainConfig, log=print) -> float:
    from diffusers.optimization import get_cosine_schedule_with_warmup

    rng = np.random.default_rng(cfg.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(cfg.warmup, cfg.vae_steps // 10), cfg.vae_steps)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    t0, losses = time.perf_counter(), []
    vae.train()
    for step in range(min(cfg.vae_steps, cfg.stop_after or cfg.vae_steps)):
        x = _to_pixels(_crops(images[rng.choice(len(images), size=cfg.vae_batch, replace=False)], cfg.vae_crop, rng))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.vae_steps - 1:
            log(f"vae step {step}/{cfg.vae_steps} loss {np.mean(losses[-100:]):.4f} ({time.perf_counter() - t0:.0f}s)")
    vae.eval()
    return float(np.mean(losses[-100:]))


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Posterior means of every image (unscaled)."""
    return torch.cat([vae.encode(_to_pixels(images[s : s + batch])).latent_dist.mean for s in range(0, len(images), batch)])


def text_conditioning(text_encoder, text_encoder_2, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states for cross-attention, pooled embedding), as StableDiffusionXLPipeline.encode_prompt."""
    h1 = text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    out2 = text_encoder_2(ids, output_hidden_states=True)
    return torch.cat([h1, out2.hidden_states[-2]], dim=-1), out2.text_embeds


def train_unet(unet, text_encoder, text_encoder_2, tok, latents: torch.Tensor, scenes, cfg: DiffusionTrainConfig, log=print) -> float:
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel, compute_snr

    noise_sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    params = list(unet.parameters()) + list(text_encoder.parameters()) + list(text_encoder_2.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=1e-2)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup, cfg.unet_steps)
    modules = torch.nn.ModuleList([unet, text_encoder, text_encoder_2])
    ema = EMAModel(modules.parameters(), decay=cfg.ema_decay)
    rng = np.random.default_rng(cfg.seed + 3)
    gen = torch.Generator().manual_seed(cfg.seed + 4)
    time_ids = torch.tensor([[IMAGE_SIZE, IMAGE_SIZE, 0, 0, IMAGE_SIZE, IMAGE_SIZE]], dtype=torch.float32)
    t0, losses = time.perf_counter(), []
    modules.train()
    for step in range(min(cfg.unet_steps, cfg.stop_after or cfg.unet_steps)):
        idx = rng.choice(len(scenes), size=cfg.unet_batch, replace=False)
        texts = ["" if rng.random() < cfg.caption_dropout else caption(scenes[i], rng) for i in idx]
        ids = tok(texts, padding="max_length", truncation=True, max_length=CONTEXT_LENGTH, return_tensors="pt").input_ids
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(idx),), generator=gen)
        xt = noise_sched.add_noise(x0, noise, t)
        hidden, pooled = text_conditioning(text_encoder, text_encoder_2, ids)
        pred = unet(xt, t, hidden, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids.expand(len(idx), -1)}).sample
        snr = compute_snr(noise_sched, t)
        weight = torch.clamp(snr, max=cfg.snr_gamma) / snr
        loss = (F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3)) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(modules.parameters())
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.unet_steps - 1:
            log(f"unet step {step}/{cfg.unet_steps} loss {np.mean(losses[-100:]):.4f} ({time.perf_counter() - t0:.0f}s)")
    ema.copy_to(modules.parameters())
    modules.eval()
    return float(np.mean(losses[-100:]))


def assemble_pipeline(tok, vae, text_encoder, text_encoder_2, unet):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        timestep_spacing="trailing",
    )
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tok, tokenizer_2=copy.deepcopy(tok),
        unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=False, add_watermarker=False,
    )


def train_diffusion(out_dir: Path, cfg: DiffusionTrainConfig = DiffusionTrainConfig(), log=print) -> dict:
    t0 = time.perf_counter()
    tok = build_tokenizer()
    tok, vae, te1, te2, unet = build_components(len(tok), cfg.seed)
    scenes = split_scenes("train", cfg.n_train)
    images = render_array(scenes)
    vae_loss = train_vae(vae, images, cfg, log)
    latents = encode_latents(vae, images)
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    latents = latents * scale
    unet_loss = train_unet(unet, te1, te2, tok, latents, scenes, cfg, log)
    pipe = assemble_pipeline(tok, vae, te1, te2, unet)
    pipe.to(torch.float16)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return {"vae_loss": vae_loss, "unet_loss": unet_loss, "scaling_factor": scale, "seconds": time.perf_counter() - t0}
