"""Benchmark: LLaVA stage 1 on VAE latents (Synth^2) vs on pixels, same LLM, same token count.

    python bench/bench_latent_training.py [--n 16 --batch 4 --steps 5 --repeats 3]

Both models are the shipped tiny configs: SmolLM2-135M-Instruct + a tiny CLIP ViT reading 64-px
pixels (`train/configs/tiny.yaml`, 16 px patches) or world:sdxl's 4 x 16 x 16 latents
(`train/configs/tiny-latent.yaml`, 4-latent-pixel patches): 16 image tokens each, so the LLM does the
same work. The data are world renders with true captions; their latents come from world:sdxl's
encoder (the shape a latent-mode build stores). Rows:

- data side, per sample: what a pixel dataset costs after generation and a latent one does not:
  the VAE decode (`stages.decode.LatentDecoder`) + PNG encode; and the bytes stored.
- collate, per batch: PNG decode + LLaVA image preprocessing vs stacking latents (TRL's collator, both).
- training step, per batch: forward + backward + AdamW on the projector (stage 1), both models.
- encode, per sample: the cost a latent model pays at evaluation for a real image (VAE encoder).

Times are best-of --repeats wall-clock seconds (median in brackets), 1 intra-op thread.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="samples (world renders)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="training steps timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.stages.decode import LatentDecoder
    from synthvlm_data.training.assembly import build_model
    from synthvlm_data.training.config import load_config
    from synthvlm_data.training.data import caption_to_prompt_completion
    from synthvlm_data.training.freezing import freeze_for_pretrain
    from synthvlm_data.training.latent import LatentEncoder, LatentProcessor, image_token_count, load_vae
    from synthvlm_data.world.data import split_scenes
    from synthvlm_data.world.render import render
    from synthvlm_data.world.text import caption
    from synthvlm_data.config import GenerateConfig

    pixel_cfg = load_config(ROOT / "train/configs/tiny.yaml")
    latent_cfg = load_config(ROOT / "train/configs/tiny-latent.yaml")
    scenes = split_scenes("train", args.n)
    images = [render(s) for s in scenes]
    captions = [caption(s, np.random.default_rng(i)) for i, s in enumerate(scenes)]
    encoder = LatentEncoder(load_vae(latent_cfg.model.latents.vae), latent_cfg.model.latents.size)
    latents = encoder(images)
    gen_cfg = GenerateConfig(pipeline="sdxl", model={"id": "world:sdxl"}, height=64, width=64, dtype="float32",
                             device="cpu")
    decoder = LatentDecoder(gen_cfg, "cpu", vae=encoder.vae, family="sdxl")

    def decode_and_png():
        out = []
        for img in decoder(latents):
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            out.append(buf.getvalue())
        return out

    pngs = decode_and_png()
    rows: list[tuple[str, str, str]] = []
    best, med = timed(decode_and_png, args.repeats)
    rows.append(("data: VAE decode + PNG encode, per sample", f"{1e3 * best / args.n:.2f} ms ({1e3 * med / args.n:.2f})",
                 "0 (latents stored as generated)"))
    rows.append(("data: bytes stored per sample", f"{np.mean([len(p) for p in pngs]):,.0f} (PNG)",
                 f"{latents[0].numel() * 2:,} (fp16 latent)"))
    best, med = timed(lambda: encoder(images), args.repeats)
    rows.append(("eval: VAE encode of a real image, per sample", "0 (pixels as they are)",
                 f"{1e3 * best / args.n:.2f} ms ({1e3 * med / args.n:.2f})"))

    results = {}
    for name, cfg in (("pixels", pixel_cfg), ("latents", latent_cfg)):
        model, processor = build_model(cfg.model, seed=cfg.seed)
        freeze_for_pretrain(model)
        model.train()
        proc = LatentProcessor(processor, image_token_count(model)) if name == "latents" else processor
        collator = DataCollatorForVisionLanguageModeling(processor=proc, max_length=256, completion_only_loss=True)
        prompt = "Give a brief description of the image."

        def examples(i: int):
            out = []
            for j in range(i, i + args.batch):
                k = j % args.n
                image = latents[k] if name == "latents" else Image.open(io.BytesIO(pngs[k]))
                out.append({"image": image, **caption_to_prompt_completion(prompt, captions[k])})
            return out

        batches = [collator(examples(i * args.batch)) for i in range(args.steps)]
        tokens = int(batches[0]["input_ids"].shape[1])
        best, med = timed(lambda: [collator(examples(i * args.batch)) for i in range(args.steps)], args.repeats)
        collate = (best / args.steps, med / args.steps)
        optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

        def steps():
            for batch in batches:
                loss = model(**batch).loss
                loss.backward()
                optim.step()
                optim.zero_grad()

        steps()  # warm-up
        best, med = timed(steps, args.repeats)
        tower = sum(p.numel() for p in model.model.vision_tower.parameters())
        results[name] = {"collate": collate, "step": (best / args.steps, med / args.steps), "tokens": tokens,
                         "tower": tower, "pixel_values": tuple(batches[0]["pixel_values"].shape)}
        del model, optim

    p, q = results["pixels"], results["latents"]
    rows.append(("collate, per batch", f"{1e3 * p['collate'][0]:.1f} ms ({1e3 * p['collate'][1]:.1f})",
                 f"{1e3 * q['collate'][0]:.1f} ms ({1e3 * q['collate'][1]:.1f})"))
    rows.append(("training step, per batch", f"{p['step'][0]:.3f} s ({p['step'][1]:.3f})",
                 f"{q['step'][0]:.3f} s ({q['step'][1]:.3f})"))
    rows.append(("model input (pixel_values)", "x".join(map(str, p["pixel_values"])), "x".join(map(str, q["pixel_values"]))))
    rows.append(("sequence length / vision tower params", f"{p['tokens']} / {p['tower']:,}", f"{q['tokens']} / {q['tower']:,}"))

    table = Table(title=f"stage 1 on pixels vs VAE latents ({args.n} world renders, batch {args.batch}, "
                        f"{args.steps} steps, best of {args.repeats} (median))")
    for col in ("measurement", "pixels (tiny.yaml)", "latents (tiny-latent.yaml)"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
