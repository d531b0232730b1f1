"""False positives and recall of the contamination check on the miniature world.

Evaluation set: N held-out world scenes (`eval` split), captions and renders. Pool: M rows of the
world's caption pool (other scenes, same caption templates: the hard case for n-grams), plus K
planted evaluation captions (re-cased / quoted in a longer caption) and K planted renders (resized,
JPEG re-encoded). Prints recall on the planted rows and the false-positive rate on the others.

    python bench/bench_decontam.py [--eval 500] [--pool 2000] [--plant 100]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from synthvlm_data.decontam import DecontamConfig, EvalIndex, _add_text, image_hash
from synthvlm_data.world.data import split_scenes
from synthvlm_data.world.pool import pool_rows
from synthvlm_data.world.render import render
from synthvlm_data.world.text import caption


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval", type=int, default=500)
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--plant", type=int, default=100)
    args = ap.parse_args()

    scenes = split_scenes("eval", args.eval)
    caps = [caption(s, np.random.default_rng([7, i])) for i, s in enumerate(scenes)]
    imgs = [render(s) for s in scenes]
    cfg = DecontamConfig(against=[{"name": "world-eval", "images": "."}])
    index = EvalIndex(cfg)
    for i, c in enumerate(caps):
        _add_text(index, "world-eval", c, str(i))
    hashes = [image_hash(im) for im in imgs]
    index.hashes = np.asarray([h for h, _ in hashes], dtype=np.uint64)
    index.thumbs = np.stack([t.reshape(-1) for _, t in hashes])
    index.hash_sets = ["world-eval"] * len(hashes)

    pool = list(pool_rows(args.pool, 0))
    t0 = time.perf_counter()
    cap_fp = sum(index.caption_hit(r["caption"]) is not None for r in pool)
    pool_imgs = [image_hash(Image.open(io.BytesIO(r["image"]["bytes"]))) for r in pool]
    img_fp = sum(h is not None for h in index.image_hits(pool_imgs))
    k = min(args.plant, args.eval)
    planted_caps = [c.upper().rstrip(".") + "!" if j % 2 else f"Photo, from an old album: {c.lower()} Lovely colours."
                    for j, c in enumerate(caps[:k])]
    cap_tp = sum(index.caption_hit(c) is not None for c in planted_caps)
    rows = []
    for size, q in ((128, 85), (64, 85), (96, 60), (64, 50)):
        planted = []
        for im in imgs[:k]:
            buf = io.BytesIO()
            im.resize((size, size), Image.BICUBIC).save(buf, format="JPEG", quality=q)
            planted.append(image_hash(Image.open(buf)))
        rows.append((f"renders {size} px JPEG q{q}", sum(h is not None for h in index.image_hits(planted)), k))
    dt = time.perf_counter() - t0
    print(f"| eval set: {args.eval} world scenes; pool: {args.pool} other scenes | found | of |")
    print("|---|---|---|")
    print(f"| planted captions (re-cased / quoted) | {cap_tp} | {k} |")
    for name, tp, n in rows:
        print(f"| planted {name} | {tp} | {n} |")
    print(f"| pool captions flagged (false positives) | {cap_fp} | {args.pool} |")
    print(f"| pool renders flagged (false positives) | {img_fp} | {args.pool} |")
    print(f"({dt:.1f} s for the checks)")


if __name__ == "__main__":
    main()
