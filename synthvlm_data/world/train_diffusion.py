"""Train the world text-to-image model in the SDXL pipeline classes the paper's recipe uses.

`StableDiffusionXLPipeline` with every component trained here on world renders and captions:
an `AutoencoderKL` (64 px <-> 16x16x4 latents), two CLIP text encoders (`CLIPTextModel` and
`CLIPTextModelWithProjection`, their penultimate hidden states concatenated and the second's
projection pooled, as SDXL does) and a `UNet2DConditionModel` with SDXL's `text_time` added
conditioning. Saved with `save_pretrained` (safetensors, fp16) and loaded back by the generate
stage like `stabilityai/stable-diffusion-xl-base-1.0`: a local directory instead of a Hub id.

Two phases, both deterministic for a fixed seed and thread count. The defaults (v1, the packaged
`world:sdxl`):
1. the VAE on 32 px crops (L1 + MSE, a small KL term); latents of the training renders are encoded
   once (posterior means, scaled to unit variance: SD's `scaling_factor`); its round trip of
   validation renders is measured and recorded (`quality.vae_round_trip`);
2. the UNet and both text encoders: epsilon prediction on SD's scaled-linear schedule, Min-SNR
   weighting (gamma 5, Hang et al. 2023), 10% caption dropout for classifier-free guidance, and an
   EMA of the weights (diffusers `EMAModel`) that is what is saved; DPM-Solver++ samples it.
`V2` (under development, `build-models --preset v2`): the VAE on whole 64 px renders with object
pixels weighted up by the renderer's coverage mask, then a **gate** (below `quality.VAE_GATE` the
build stops before the UNet trains); v-prediction on the schedule rescaled to zero terminal SNR
(Lin et al., WACV 2024) with trailing timesteps at sampling; cross-attention in the 16x16 block;
wider text encoders.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthvlm_data.world.data import render_array, render_layers_array, split_scenes
from synthvlm_data.world.scene import IMAGE_SIZE
from synthvlm_data.world.text import caption
from synthvlm_data.world.tokenizer import CONTEXT_LENGTH, EOS, PAD, BOS, build_tokenizer

LATENT = IMAGE_SIZE // 4  # 16


@dataclass(frozen=True)
class DiffusionTrainConfig:
    """The defaults are the settings that built the packaged `world:sdxl` (bit for bit); `V2` below
    holds the fixes under development (zero terminal SNR, v-prediction, an object-weighted VAE on
    whole images behind a gate, cross-attention from the first block, wider text encoders)."""

    seed: int = 0
    n_train: int = 20000
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_crop: int = 32  # px; IMAGE_SIZE trains on whole images (needed by the object weighting)
    vae_lr: float = 1e-3
    # the loss weight of an object pixel is 1 + this x its coverage (dilated by a pixel): objects cover
    # ~5% of an image, and an unweighted loss spends the VAE on backgrounds and blurs shapes into blobs
    vae_object_weight: float = 0.0
    # match the local texture statistics of the render (grain, pixel-to-pixel correlation): an L1/MSE
    # decoder otherwise paints a noisy background plain
    vae_texture_weight: float = 0.0
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_gate_n: int = 300  # validation renders the VAE's round trip is measured on
    # refuse to train the UNet on a VAE below these round-trip shares (`quality.VAE_GATE`); None: measure only
    vae_gate: tuple[tuple[str, float], ...] | None = None
    text_width: int = 32
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_cross_attention_16: bool = False  # cross-attention in the first (16x16) down block too
    attention_head_dim: int = 8
    unet_steps: int = 2400
    unet_batch: int = 64
    unet_lr: float = 5e-4
    warmup: int = 100
    caption_dropout: float = 0.1
    # Lin et al. (WACV 2024): a schedule rescaled to zero terminal SNR and v-prediction, so that
    # sampling from pure noise is a situation training has seen (SD's schedule keeps 6.8% of the image
    # at t=999: the tone leaks into training inputs and is never learned from the text)
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False
    snr_gamma: float = 5.0
    ema_decay: float = 0.999
    # stop each phase after this many steps of its schedule (the real run's first steps, bit for bit:
    # how `build-models --repeat --stop-after` measures determinism cheaply)
    stop_after: int | None = None

    def __post_init__(self):
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise ValueError("zero_terminal_snr needs prediction_type v_prediction: at snr = 0 an epsilon "
                             "prediction carries no information about the image (Lin et al. 2024)")


def _v2() -> DiffusionTrainConfig:
    from synthvlm_data.world.quality import VAE_GATE

    return DiffusionTrainConfig(vae_steps=1500, vae_batch=16, vae_crop=IMAGE_SIZE, vae_object_weight=12.0,
                                vae_gate=tuple(VAE_GATE.items()), text_width=64, unet_cross_attention_16=True,
                                attention_head_dim=16, unet_steps=2600, unet_batch=32, prediction_type="v_prediction",
                                zero_terminal_snr=True)


def build_components(vocab_size: int, seed: int, cfg: DiffusionTrainConfig = DiffusionTrainConfig()):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tok = build_tokenizer()
    w = cfg.text_width
    text_cfg = dict(vocab_size=vocab_size, hidden_size=w, intermediate_size=2 * w, num_hidden_layers=3,
                    num_attention_heads=4, max_position_embeddings=CONTEXT_LENGTH, projection_dim=w,
                    pad_token_id=tok.convert_tokens_to_ids(PAD), bos_token_id=tok.convert_tokens_to_ids(BOS),
                    eos_token_id=tok.convert_tokens_to_ids(EOS), hidden_act="gelu")
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=tuple(cfg.vae_channels), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        latent_channels=4, norm_num_groups=8, sample_size=IMAGE_SIZE, mid_block_add_attention=False)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg))
    unet = UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=tuple(cfg.unet_channels),
        # cross-attention in the first block (v2): shapes and positions are decided at 16x16 (the up path's
        # 16x16 block stays attention-free: it would triple a training step, measured)
        down_block_types=("CrossAttnDownBlock2D" if cfg.unet_cross_attention_16 else "DownBlock2D",
                          "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=cfg.attention_head_dim, norm_num_groups=16,
        cross_attention_dim=2 * w,  # both encoders' hidden states, concatenated (SDXL)
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + w,  # 6 time ids x 8 + pooled projection
    )
    return tok, vae, text_encoder, text_encoder_2, unet


def _to_pixels(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _crops(batch: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    ys, xs = rng.integers(0, batch.shape[1] - size + 1, size=(2, len(batch)))
    return np.stack([im[y : y + size, x : x + size] for im, y, x in zip(batch, ys, xs)])


def _texture(x: torch.Tensor) -> torch.Tensor:
    """Local texture statistics on 8x8 cells: the RMS of what a 3x3 box blur removes, and of the
    horizontal and vertical pixel differences. Together they fix a background's grain and how
    correlated it is from pixel to pixel (i.i.d. noise has large differences, stripes and smooth
    blotches small ones: what the verifier reads a pattern by)."""
    hp = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return torch.cat([(F.avg_pool2d(v.pow(2).mean(1, keepdim=True), 8) + 1e-6).sqrt() for v in (hp, dx, dy)], dim=1)


def vae_loss(rec: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, cfg: DiffusionTrainConfig) -> torch.Tensor:
    """Reconstruction loss with object pixels weighted up and the background's texture matched
    (with neither: L1 + MSE, the first generator's loss, computed as it was)."""
    if not cfg.vae_object_weight and not cfg.vae_texture_weight:
        return F.l1_loss(rec, x) + F.mse_loss(rec, x)
    cover = F.max_pool2d(mask[:, None], 3, stride=1, padding=1)  # coverage dilated by a pixel: edges both sides
    w = 1.0 + cfg.vae_object_weight * cover
    err = (rec - x).abs() + (rec - x).pow(2)
    loss = (err * w).sum() / (w.sum() * x.shape[1])
    if cfg.vae_texture_weight:
        loss = loss + cfg.vae_texture_weight * F.l1_loss(_texture(rec), _texture(x))
    return loss


def train_vae(vae, images: np.ndarray, masks: np.ndarray, cfg: DiffusionTrainConfig, log=print) -> float:
    from diffusers.optimization import get_cosine_schedule_with_warmup

    rng = np.random.default_rng(cfg.seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(cfg.warmup, cfg.vae_steps // 10), cfg.vae_steps)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    t0, losses = time.perf_counter(), []
    vae.train()
    for step in range(min(cfg.vae_steps, cfg.stop_after or cfg.vae_steps)):
        idx = rng.choice(len(images), size=cfg.vae_batch, replace=False)
        if cfg.vae_crop < images.shape[1]:  # crops (v1): the masks are not used
            x, mask = _to_pixels(_crops(images[idx], cfg.vae_crop, rng)), None
        else:
            x, mask = _to_pixels(images[idx]), torch.from_numpy(masks[idx])
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = vae_loss(rec, x, mask, cfg) + 1e-6 * post.kl().mean()
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


def schedule_config(cfg: DiffusionTrainConfig) -> dict:
    """The noise schedule training and sampling share (SD's scaled-linear betas, optionally
    rescaled to zero terminal SNR), with its prediction type."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                rescale_betas_zero_snr=cfg.zero_terminal_snr, prediction_type=cfg.prediction_type)


def loss_weight(noise_sched, t: torch.Tensor, cfg: DiffusionTrainConfig) -> torch.Tensor:
    """Per-sample loss weight. Epsilon: Min-SNR, min(snr, g) / snr (Hang et al. 2023). v: a variant,
    min(snr + 1, g) / (snr + 1): the plain v loss (weight 1) wherever snr < g - 1, only the easy
    low-noise steps weighted down. Min-SNR's own v form, min(snr, g) / (snr + 1), would give the
    terminal step (snr = 0 under a zero-terminal-SNR schedule, the step sampling starts from) weight 0."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_sched, t)
    if cfg.prediction_type == "v_prediction":
        return torch.clamp(snr + 1, max=cfg.snr_gamma) / (snr + 1)
    return torch.clamp(snr, max=cfg.snr_gamma) / snr


def train_unet(unet, text_encoder, text_encoder_2, tok, latents: torch.Tensor, scenes, cfg: DiffusionTrainConfig, log=print) -> float:
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    noise_sched = DDPMScheduler(**schedule_config(cfg))
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
        target = noise_sched.get_velocity(x0, noise, t) if cfg.prediction_type == "v_prediction" else noise
        loss = (F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3)) * loss_weight(noise_sched, t, cfg)).mean()
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


def assemble_pipeline(tok, vae, text_encoder, text_encoder_2, unet, cfg: DiffusionTrainConfig = DiffusionTrainConfig()):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    # trailing timesteps: the first sampling step is t=999, the one a zero-terminal-SNR schedule ends on
    scheduler = DPMSolverMultistepScheduler(**schedule_config(cfg), timestep_spacing="trailing")
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tok, tokenizer_2=copy.deepcopy(tok),
        unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=False, add_watermarker=False,
    )


V2 = _v2()


class VaeGateError(RuntimeError):
    """The trained VAE loses too much of what the UNet must learn; the UNet is not trained on it."""


def train_diffusion(out_dir: Path, cfg: DiffusionTrainConfig = DiffusionTrainConfig(), log=print) -> dict:
    from synthvlm_data.world.quality import vae_gate_failures, vae_round_trip

    t0 = time.perf_counter()
    tok = build_tokenizer()
    tok, vae, te1, te2, unet = build_components(len(tok), cfg.seed, cfg)
    scenes = split_scenes("train", cfg.n_train)
    # the coverage masks only where the VAE loss uses them (whole images); the renders are the same bytes
    images, masks = render_layers_array(scenes) if cfg.vae_crop >= IMAGE_SIZE else (render_array(scenes), None)
    vae_loss = train_vae(vae, images, masks, cfg, log)
    round_trip = vae_round_trip(vae, split_scenes("validation", cfg.vae_gate_n))
    log("vae round trip (validation): " + ", ".join(f"{a} {v['share']:.3f}" for a, v in round_trip.items() if "share" in v))
    failures = vae_gate_failures(round_trip, dict(cfg.vae_gate)) if cfg.vae_gate else []
    if failures and cfg.stop_after is None:
        raise VaeGateError(f"the VAE's round trip of {cfg.vae_gate_n} validation renders is below the gate "
                           f"({'; '.join(failures)}): the UNet is not trained on it")
    latents = encode_latents(vae, images)
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    latents = latents * scale
    unet_loss = train_unet(unet, te1, te2, tok, latents, scenes, cfg, log)
    pipe = assemble_pipeline(tok, vae, te1, te2, unet, cfg)
    pipe.to(torch.float16)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return {"vae_loss": vae_loss, "vae_round_trip": round_trip, "unet_loss": unet_loss, "scaling_factor": scale,
            "seconds": time.perf_counter() - t0}
