"""CLIPScore: our ClipScorer (the score stage's scorer) vs bare open_clip calls on the same batches.

Both sides use the same open_clip model object (the tiny `tiny:clip` CLIP, offline), the same
eval preprocessing, tokenizer, prefix and batch size; the bare side is the minimal loop
(preprocess + tokenize + encode_image + encode_text + normalise + dot product per batch). So the
ratio is the scorer's own overhead; with k images per caption it also shows the saving of
encoding each distinct caption once. Every configuration runs `--repeats` times interleaved and
the best time is reported (the machine is shared; the minimum is the least disturbed run); the
CPU-time ratio (process CPU seconds, all threads) is less disturbed by other processes.

    python bench/bench_clipscore.py [--n 256] [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from synthvlm_data.config import ClipScoreConfig  # noqa: E402
from synthvlm_data.models.refs import ModelRef  # noqa: E402
from synthvlm_data.scoring.clipscore import ClipScorer  # noqa: E402


def make_images(n: int, size: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
    return [Image.fromarray(b).resize((size, size), Image.Resampling.BILINEAR) for b in base]


def make_captions(n: int, k: int) -> list[str]:
    words = "red blue small large dog cat car tree river house boat city beach mountain bird street".split()
    rng = np.random.default_rng(1)
    unique = [" ".join(rng.choice(words, 12)) for _ in range(-(-n // k))]
    return [unique[i // k] for i in range(n)]


@torch.inference_mode()
def bare_open_clip(model, preprocess, tokenizer, prefix: str, images, captions, bs: int) -> np.ndarray:
    out = []
    for s in range(0, len(images), bs):
        pixels = torch.stack([preprocess(im.convert("RGB")) for im in images[s : s + bs]])
        tokens = tokenizer([prefix + c for c in captions[s : s + bs]])
        ie = F.normalize(model.encode_image(pixels), dim=-1)
        te = F.normalize(model.encode_text(tokens), dim=-1)
        out.append((ie * te).sum(-1).double().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="pairs per configuration")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    scorer = ClipScorer(ClipScoreConfig(model=ModelRef(id="tiny:clip"), batch_size=args.batch_size), device="cpu")
    prefix = scorer.cfg.text_prefix
    rows = []
    for size, k in ((64, 1), (64, 4), (512, 1), (512, 4)):
        images = make_images(args.n, size)
        captions = make_captions(args.n, k)
        ours = scorer(images, captions)  # warm-up + correctness
        bare = bare_open_clip(scorer.model, scorer.preprocess, scorer.tokenizer, prefix, images, captions, args.batch_size)
        max_diff = float(np.abs(ours - bare).max())
        t_ours, t_bare, c_ours, c_bare = [], [], [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            scorer(images, captions)
            t_ours.append(time.perf_counter() - t0)
            c_ours.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            bare_open_clip(scorer.model, scorer.preprocess, scorer.tokenizer, prefix, images, captions, args.batch_size)
            t_bare.append(time.perf_counter() - t0)
            c_bare.append(time.process_time() - c0)
        rows.append((size, k, args.n / min(t_ours), args.n / min(t_bare), min(t_ours) / min(t_bare),
                     min(c_ours) / min(c_bare), max_diff))

    print(f"CLIPScore: ClipScorer vs bare open_clip (tiny:clip, batch {args.batch_size}, n={args.n}, best of "
          f"{args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()})")
    print()
    print("| image px | images/caption | ClipScorer img/s | bare open_clip img/s | wall ratio (ours/bare) | CPU-time ratio | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for size, k, ours, bare, ratio, cpu_ratio, diff in rows:
        print(f"| {size} | {k} | {ours:,.0f} | {bare:,.0f} | {ratio:.2f} | {cpu_ratio:.2f} | {diff:.1e} |")


if __name__ == "__main__":
    main()
