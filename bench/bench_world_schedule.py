"""Zero terminal SNR + v-prediction vs SD's schedule + epsilon, on the world's generator.

Trains the packaged UNet architecture (v1) from scratch with either schedule on latents of the
packaged VAE, for the same number of steps, then samples one image per validation caption with each
(DPM-Solver++, trailing timesteps, the shapes recipe's steps and guidance) and prints the verifier's
per-attribute agreement with 95% intervals. One thread; deterministic.

    python bench/bench_world_schedule.py --steps 1200 --n 200
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1200, help="UNet training steps per schedule")
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n", type=int, default=200, help="validation captions (one image each)")
    ap.add_argument("--schedules", default="v2,v1", help="v1: SD scaled-linear + epsilon; v2: zero terminal SNR + v")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    from diffusers import AutoencoderKL

    from synthvlm_data.config import load_recipe
    from synthvlm_data.world.build_models import WEIGHTS_DIR
    from synthvlm_data.world.data import render_array, split_scenes
    from synthvlm_data.world.quality import ATTRIBUTES, generator_alignment, split_captions
    from synthvlm_data.world.tokenizer import build_tokenizer
    from synthvlm_data.world.train_diffusion import (DiffusionTrainConfig, assemble_pipeline, build_components,
                                                    encode_latents, train_unet)

    gen = load_recipe("shapes").generate
    vae = AutoencoderKL.from_pretrained(WEIGHTS_DIR / "sdxl" / "vae", torch_dtype=torch.float32).eval()
    scenes = split_scenes("train", args.n_train)
    latents = encode_latents(vae, render_array(scenes)) * vae.config.scaling_factor
    val_scenes, val_captions = split_captions("validation", args.n)
    rows = {}
    for name in args.schedules.split(","):
        cfg = replace(DiffusionTrainConfig(), unet_steps=args.steps,
                      **({"prediction_type": "v_prediction", "zero_terminal_snr": True} if name == "v2" else {}))
        tok = build_tokenizer()
        tok, _, te1, te2, unet = build_components(len(tok), cfg.seed, cfg)
        t0 = time.perf_counter()
        train_unet(unet, te1, te2, tok, latents, scenes, cfg, log=lambda m: print(f"[{name}] {m}", flush=True))
        pipe = assemble_pipeline(tok, vae, te1, te2, unet, cfg)
        pipe.set_progress_bar_config(disable=True)
        rows[name] = generator_alignment(pipe, val_scenes, val_captions, steps=gen.steps, guidance=gen.guidance_scale)
        print(f"[{name}] trained {args.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n{args.steps} UNet steps each, {args.n} validation captions, one image each (steps {gen.steps}, "
          f"guidance {gen.guidance_scale})")
    print(f"{'':<10}" + "".join(f"{n:>22}" for n in rows))
    for a in ("alignment", *ATTRIBUTES):
        cells = []
        for r in rows.values():
            d = r.get(a)
            v = None if d is None else d.get("mean", d.get("share"))
            cells.append("-" if v is None else f"{v:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]")
        print(f"{a:<10}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
