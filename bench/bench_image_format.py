"""Image storage format: bytes per image, score shift and selection agreement against PNG.

    python bench/bench_image_format.py --work-dir runs/synthvlm-shapes-<fingerprint> [--photos-size 1024]

Two measurements, printed as tables (and written as JSON with --json):

1. The miniature world, a finished `shapes` build's work dir: every generated image (k per caption)
   re-encoded in each format, decoded, scored as the score stage scores the stored image (the
   recipe's CLIPScore with the world CLIP, its SSIM), then best-of-k picked by the recipe's combined
   score. Reported: bytes per image, mean and largest |change| of CLIPScore and SSIM against PNG,
   how many captions pick the same image as with PNG, and how many of the top-scored quarter of all
   images stay in it (the selection of a one-image-per-caption recipe such as synthvlm-100k).
   Two more rows score the PNGs with CLIP in fp16 and in bf16 (`score.clip.precision`: open_clip's
   mixed precision, which `auto` uses on CUDA; run here on the CPU, so it measures the rounding of
   the weights and activations, not a GPU's kernels) against the fp32 scores.
2. Real photographs: the colour photographs that ship with scikit-image, resized to
   `--photos-size` (SDXL's 1024 px by default): bytes per image and the SSIM shift of the
   synthvlm-100k recipe's SSIM. CLIPScore is not measured on them: OpenAI CLIP's weights do not
   install offline, and the world CLIP has never seen a photograph.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = (("png", 0), ("jpeg", 95), ("jpeg", 90), ("webp", 95), ("webp", 90))
PRECISIONS = ("fp16", "bf16")  # CLIP's weights, scored on the PNGs
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina", "cat")


def _label(fmt: str, quality: int) -> str:
    return fmt if fmt == "png" else f"{fmt} q{quality}"


def _roundtrip(images: list[Image.Image], fmt: str, quality: int) -> tuple[list[Image.Image], list[int]]:
    from synthvlm_data.columns import decode_image, encode_image

    blobs = [encode_image(im, fmt, quality) for im in images]
    return [decode_image(b) for b in blobs], [len(b) for b in blobs]


def world(work_dir: Path) -> dict:
    """Every generated image of a shapes build, per format: bytes, score shift, best-of-k agreement."""
    from synthvlm_data.columns import decode_image
    from synthvlm_data.models.devices import torch_threads
    from synthvlm_data.scoring.clipscore import ClipScorer
    from synthvlm_data.scoring.ssim import ssim_roundtrip
    from synthvlm_data.stages.select import combined_score
    from synthvlm_data.workdir import WorkDir, image_stage

    work = WorkDir(work_dir)
    recipe = work.recipe()
    captions = work.captions_by_id()
    ids, images = [], []
    for unit in work.units(image_stage(recipe)):
        gen = work.store.read(unit, ["id", "image"])
        ids += gen["id"].to_pylist()
        images += [decode_image(b) for b in gen["image"].to_pylist()]
    texts = [captions[i] for i in ids]
    fp32 = recipe.score.clip.model_copy(update={"precision": "fp32"})
    scorers = {"fp32": ClipScorer(fp32, "cpu")}
    scorers.update({p: ClipScorer(fp32.model_copy(update={"precision": p}), "cpu") for p in PRECISIONS})
    variants = [(fmt, q, "fp32") for fmt, q in FORMATS] + [("png", 0, p) for p in PRECISIONS]
    rows, base = [], None
    with torch_threads(1):
        for fmt, quality, precision in variants:
            decoded, sizes = _roundtrip(images, fmt, quality)
            clip = np.asarray(scorers[precision](decoded, texts), dtype=np.float64)
            ssim = np.asarray(ssim_roundtrip(decoded, recipe.score.ssim), dtype=np.float64)
            score = combined_score(clip, ssim, recipe.select)
            picks = {}
            for n, sid in enumerate(ids):  # best of k per caption (first on ties, as the select stage)
                if sid not in picks or score[n] > score[picks[sid]]:
                    picks[sid] = n
            # k = 1 recipes (synthvlm-100k) keep the best-scored share of all images: the top quarter here
            top = set(np.argsort(-score, kind="stable")[: len(score) // 4].tolist())
            if base is None:
                base = {"clip": clip, "ssim": ssim, "picks": picks, "top": top}
            same = sum(picks[s] == base["picks"][s] for s in picks)
            rows.append({
                "format": _label(fmt, quality) + ("" if precision == "fp32" else f", CLIP {precision}"),
                "images": len(images), "bytes_mean": float(np.mean(sizes)),
                "clip_abs_mean": float(np.abs(clip - base["clip"]).mean()),
                "clip_abs_max": float(np.abs(clip - base["clip"]).max()),
                "ssim_abs_mean": float(np.abs(ssim - base["ssim"]).mean()),
                "ssim_abs_max": float(np.abs(ssim - base["ssim"]).max()),
                "same_pick": same, "captions": len(picks), "top_quarter_same": len(top & base["top"]),
                "top_quarter": len(top),
            })
    return {"work_dir": str(work_dir), "recipe": recipe.name, "size": f"{recipe.generate.width}x{recipe.generate.height}",
            "k": recipe.generate.images_per_caption, "rows": rows}


def photos(size: int) -> dict:
    """scikit-image's colour photographs at `size` px: bytes per format and SSIM shift."""
    from skimage import data

    from synthvlm_data.config import load_recipe
    from synthvlm_data.scoring.ssim import ssim_roundtrip

    ssim_cfg = load_recipe("synthvlm-100k").score.ssim
    images = []
    for name in PHOTOS:
        arr = getattr(data, name)()
        if arr.ndim != 3 or arr.shape[2] < 3:
            continue
        images.append(Image.fromarray(np.asarray(arr[..., :3], dtype=np.uint8)).resize((size, size), Image.LANCZOS))
    rows, base = [], None
    for fmt, quality in FORMATS:
        decoded, sizes = _roundtrip(images, fmt, quality)
        ssim = np.asarray(ssim_roundtrip(decoded, ssim_cfg), dtype=np.float64)
        base = ssim if base is None else base
        rows.append({"format": _label(fmt, quality), "images": len(images), "bytes_mean": float(np.mean(sizes)),
                     "bytes_min": int(min(sizes)), "bytes_max": int(max(sizes)),
                     "ssim_abs_mean": float(np.abs(ssim - base).mean()), "ssim_abs_max": float(np.abs(ssim - base).max())})
    return {"size": f"{size}x{size}", "photos": [n for n in PHOTOS], "rows": rows}


def _print(title: str, rows: list[dict], cols: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for _, head in cols:
        table.add_column(head, justify="right")
    for r in rows:
        table.add_row(*[(f"{r[k]:,.0f}" if k.startswith("bytes") else f"{r[k]:.4f}" if isinstance(r[k], float) else
                         str(r[k])) for k, _ in cols])
    Console(width=140).print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, help="a finished shapes build's work dir (the world measurement)")
    p.add_argument("--photos-size", type=int, default=1024)
    p.add_argument("--json", type=Path, help="also write the tables here")
    args = p.parse_args(argv)
    out = {"photos": photos(args.photos_size)}
    _print(f"scikit-image photographs at {out['photos']['size']} ({out['photos']['rows'][0]['images']} images)",
           out["photos"]["rows"], [("format", "format"), ("bytes_mean", "bytes/image"), ("bytes_min", "min"),
                                   ("bytes_max", "max"), ("ssim_abs_mean", "|dSSIM| mean"), ("ssim_abs_max", "|dSSIM| max")])
    if args.work_dir is not None:
        out["world"] = world(args.work_dir)
        w = out["world"]
        _print(f"miniature world: {w['recipe']} build, {w['size']}, best of {w['k']}", w["rows"],
               [("format", "format"), ("bytes_mean", "bytes/image"), ("clip_abs_mean", "|dCLIP| mean"),
                ("clip_abs_max", "|dCLIP| max"), ("ssim_abs_mean", "|dSSIM| mean"), ("ssim_abs_max", "|dSSIM| max"),
                ("same_pick", "same best of k"), ("captions", "captions"), ("top_quarter_same", "same in top 1/4"),
                ("top_quarter", "top 1/4")])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
