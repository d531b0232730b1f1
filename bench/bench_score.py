"""Score stage throughput at 1024 px: the stage (decode + CLIP preprocessing + SSIM on worker
threads, the next batch prepared while CLIP encodes) against a bare open_clip + scikit-image loop.

    python bench/bench_score.py [--images 64] [--format png|jpeg]

Images: scikit-image's colour photographs resized to 1024x1024, stored as the recipe would store
them. The CLIP model is the `tiny` recipe's open_clip CLIP (no weights download offline), so the
table measures the CPU side of scoring, which is what holds a GPU back: the image decode, the
resizes of CLIP preprocessing and of the SSIM round trip (the synthvlm-100k recipe's 768 -> 336 ->
768, grayscale, 7x7 window) and SSIM itself. Every configuration's scores are compared with the
one-thread stage's: the stage's are the same bytes at any thread count.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat")


def _images(n: int, fmt: str) -> list[bytes]:
    from skimage import data

    from synthvlm_data.columns import encode_image

    base = [Image.fromarray(np.asarray(getattr(data, p)()[..., :3], dtype=np.uint8)).resize((1024, 1024), Image.LANCZOS)
            for p in PHOTOS]
    out = []
    for i in range(n):  # each image a little different (a shifted crop), so no two blobs are equal
        im = base[i % len(base)]
        shift = (i // len(base)) * 8
        out.append(encode_image(im.crop((shift, shift, 1024, 1024)).resize((1024, 1024)), fmt, 95))
    return out


def _recipe(fmt: str):
    from synthvlm_data.config import load_recipe, recipe_from_dict

    paper = load_recipe("synthvlm-100k")
    tiny = load_recipe("tiny").model_dump(mode="json")
    tiny["score"]["ssim"] = paper.score.ssim.model_dump(mode="json")
    tiny["score"]["batch_size"] = 16
    tiny["score"]["clip"]["batch_size"] = 16
    tiny["generate"]["image_format"] = fmt
    return recipe_from_dict(tiny)


def _work(root, recipe, blobs: list[bytes], k: int = 4):
    import pyarrow as pa

    from synthvlm_data.columns import CAPTION_SCHEMA, GENERATE_SCHEMA
    from synthvlm_data.stages.base import RunContext
    from synthvlm_data.workdir import CAPTIONS, GENERATE, WorkDir
    from synthvlm_data.workunits import WorkUnit

    n_caps = -(-len(blobs) // k)
    caps = [{"id": f"c{i:04d}", "caption": f"a photograph, number {i}", "prompt": "Describe the image.", "source": "s",
             "source_id": str(i), "concept": None} for i in range(n_caps)]
    work = WorkDir(root)
    work.store.write(WorkUnit(CAPTIONS, 0, 1), pa.Table.from_pylist(caps, schema=CAPTION_SCHEMA))
    work.write_manifest(CAPTIONS, [WorkUnit(CAPTIONS, 0, 1)], {"rows": n_caps})
    gen = [{"id": caps[j // k]["id"], "repeat": j % k, "seed": j, "image": b, "generator": "bench"}
           for j, b in enumerate(blobs)]
    work.store.write(WorkUnit(GENERATE, 0, 1), pa.Table.from_pylist(gen, schema=GENERATE_SCHEMA))
    return RunContext(recipe=recipe, work=work)


def stage_run(ctx, threads: int) -> tuple[float, object]:
    from synthvlm_data.models.devices import torch_threads
    from synthvlm_data.stages.score import ScoreStage
    from synthvlm_data.workdir import SCORE
    from synthvlm_data.workunits import WorkUnit

    ctx = dataclasses.replace(ctx, cpu_threads=threads)
    stage = ScoreStage()
    with torch_threads(threads):
        stage.setup(ctx)
        t0 = time.perf_counter()
        table = stage.run(ctx, WorkUnit(SCORE, 0, 1))
    return time.perf_counter() - t0, table


def bare_loop(ctx, blobs: list[bytes]) -> tuple[float, np.ndarray, np.ndarray]:
    """What a script would write: decode, preprocess, encode, skimage SSIM, one image after another."""
    import io

    import torch
    from skimage.metrics import structural_similarity

    from synthvlm_data.models.devices import torch_threads
    from synthvlm_data.scoring.clipscore import ClipScorer

    recipe = ctx.recipe
    cfg = recipe.score.ssim
    captions = [f"a photograph, number {j // 4}" for j in range(len(blobs))]
    with torch_threads(1):
        scorer = ClipScorer(recipe.score.clip, "cpu")
        t0 = time.perf_counter()
        clip, ssim, pixels = [], [], []
        for j, b in enumerate(blobs):
            im = Image.open(io.BytesIO(b)).convert("RGB")
            pixels.append(scorer.preprocess(im))
            ref = im.resize((cfg.size, cfg.size), Image.BILINEAR)  # the paper's order: resize, then grayscale
            back = ref.resize((cfg.down, cfg.down), Image.BILINEAR).resize((cfg.size, cfg.size), Image.BILINEAR)
            ssim.append(structural_similarity(np.asarray(ref.convert("L")), np.asarray(back.convert("L")),
                                              win_size=cfg.win_size, data_range=255))
            if len(pixels) == recipe.score.clip.batch_size or j == len(blobs) - 1:
                clip.append(scorer.score_pixels(torch.stack(pixels), captions[j + 1 - len(pixels): j + 1]))
                pixels = []
        return time.perf_counter() - t0, np.concatenate(clip), np.asarray(ssim)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--format", default="png", choices=["png", "jpeg"])
    args = p.parse_args(argv)
    blobs = _images(args.images, args.format)
    recipe = _recipe(args.format)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _work(tmp, recipe, blobs)
        secs, ref = stage_run(ctx, 1)
        rows.append(("score stage, 1 thread", secs, "reference"))
        secs2, table2 = stage_run(ctx, 2)
        same = table2.equals(ref)
        rows.append(("score stage, 2 threads", secs2, "same bytes" if same else "DIFFERENT"))
        secs_b, clip_b, ssim_b = bare_loop(ctx, blobs)
        d_clip = float(np.abs(clip_b - ref["clip_score"].to_numpy()).max())
        d_ssim = float(np.abs(ssim_b - ref["ssim"].to_numpy()).max())
        rows.insert(0, ("bare open_clip + skimage loop, 1 thread", secs_b,
                        f"max |dCLIP| {d_clip:.1e}, |dSSIM| {d_ssim:.1e}"))
    table = Table(title=f"score stage at 1024x1024 {args.format.upper()}, {args.images} images (tiny CLIP, "
                        "SSIM 768 -> 336 -> 768)")
    for col in ("what", "seconds", "images/s", "vs bare loop", "scores"):
        table.add_column(col, justify="left" if col in ("what", "scores") else "right")
    for what, secs, note in rows:
        table.add_row(what, f"{secs:.2f}", f"{args.images / secs:.1f}", f"{secs_b / secs:.2f}x", note)
    Console(width=140).print(table)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
