"""Benchmark: batched SSIM vs scikit-image called once per image.

    python bench/bench_ssim.py [--n 32 --size 768 --repeats 3]

The workload is the real one: pairs of (reference, 336-px round trip) made by
`resize_roundtrip` from the natural images that ship with scikit-image, repeated to --n images.
Times are best-of --repeats wall-clock seconds (median in brackets) for the whole batch.
"cpu speedup" compares process CPU time (best of --repeats), which a busy shared machine
disturbs less than wall time; run the script more than once anyway. "max |diff|" is against
scikit-image's result for the same pairs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import skimage.data
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage.metrics import structural_similarity

from synthvlm_data.config import SSIMConfig
from synthvlm_data.scoring.ssim import resize_roundtrip, ssim_roundtrip, structural_similarity_batch

SOURCES = ["astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field", "immunohistochemistry", "moon"]


def source_images(n: int) -> list[Image.Image]:
    """n natural images (cycled) of assorted sizes, as the generator's PIL output would be."""
    base = [Image.fromarray(getattr(skimage.data, name)()) for name in SOURCES]
    return [base[i % len(base)] for i in range(n)]


def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, float, float, np.ndarray]:
    """(best wall, median wall, best CPU) seconds over `repeats` runs, and the last result."""
    walls, cpus, out = [], [], np.empty(0)
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), statistics.median(walls), min(cpus), out


def skimage_loop(a: np.ndarray, b: np.ndarray, **kwargs: object) -> np.ndarray:
    return np.array([structural_similarity(x, y, **kwargs) for x, y in zip(a, b)])


def paper_loop(images: list[Image.Image], cfg: SSIMConfig) -> np.ndarray:
    """The paper's per-image recipe: PIL resizes + one skimage call per image."""
    out = []
    for img in images:
        ref = img.convert("RGB").resize((cfg.size, cfg.size), Image.Resampling.BILINEAR)
        back = ref.resize((cfg.down, cfg.down), Image.Resampling.BILINEAR)
        back = back.resize((cfg.size, cfg.size), Image.Resampling.BILINEAR)
        out.append(structural_similarity(np.array(ref.convert("L")), np.array(back.convert("L"))))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="images per batch")
    parser.add_argument("--size", type=int, default=768, help="square image side (the recipe's ssim.size)")
    parser.add_argument("--down", type=int, default=336, help="round-trip side (the recipe's ssim.down)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (best is reported)")
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    images = source_images(args.n)
    gray_cfg = SSIMConfig(size=args.size, down=args.down)
    rgb_cfg = SSIMConfig(size=args.size, down=args.down, grayscale=False)
    gray_a, gray_b = resize_roundtrip(images, gray_cfg)
    rgb_a, rgb_b = resize_roundtrip(images, rgb_cfg)

    table = Table(title=f"SSIM, batch of {args.n} images {args.size}x{args.size} (round trip via {args.down})")
    columns = ("workload", "device / threads", "skimage loop s", "batched s", "speedup", "cpu speedup", "max |diff|")
    for col in columns:
        table.add_column(col, justify="left" if col in columns[:2] else "right")

    ref_cache: dict[Callable[[], np.ndarray], tuple[float, float, float, np.ndarray]] = {}

    def row(name: str, where: str, ref_fn: Callable[[], np.ndarray], fn: Callable[[], np.ndarray]) -> None:
        if ref_fn not in ref_cache:  # the slow skimage loop is timed once per workload
            ref_cache[ref_fn] = timed(ref_fn, args.repeats)
        ref_best, ref_med, ref_cpu, ref = ref_cache[ref_fn]
        best, med, cpu, got = timed(fn, args.repeats)
        table.add_row(
            name,
            where,
            f"{ref_best:.3f} ({ref_med:.3f})",
            f"{best:.3f} ({med:.3f})",
            f"{ref_best / best:.1f}x",
            f"{ref_cpu / cpu:.1f}x",
            f"{np.abs(got - ref).max():.1e}",
        )

    def gray_ref() -> np.ndarray:
        return skimage_loop(gray_a, gray_b)

    gray_f = gray_a.astype(np.float64), gray_b.astype(np.float64)
    row("gray uint8", "cpu / 1", gray_ref, lambda: structural_similarity_batch(gray_a, gray_b))
    if default_threads > 1:
        row(
            "gray uint8",
            f"cpu / {default_threads}",
            gray_ref,
            lambda: structural_similarity_batch(gray_a, gray_b, num_threads=None),
        )
    where = "cpu / 1"
    row(
        "gray float64, data_range=255",
        where,
        lambda: skimage_loop(*gray_f, data_range=255.0),
        lambda: structural_similarity_batch(*gray_f, data_range=255.0),
    )
    row(
        "RGB uint8, channel_axis=-1",
        where,
        lambda: skimage_loop(rgb_a, rgb_b, channel_axis=-1),
        lambda: structural_similarity_batch(rgb_a, rgb_b, channel_axis=-1),
    )
    row(
        "end to end: PIL resizes + SSIM",
        where,
        lambda: paper_loop(images, gray_cfg),
        lambda: ssim_roundtrip(images, gray_cfg),
    )
    if torch.cuda.is_available():
        row("gray uint8", "cuda", gray_ref, lambda: structural_similarity_batch(gray_a, gray_b, device="cuda"))

    console = Console(width=None if sys.stdout.isatty() else 150)
    console.print(table)
    console.print(
        f"torch {torch.__version__}, default threads {default_threads}; times are best (median) of "
        f"{args.repeats}; speedup = best skimage / best batched. Shared machines are noisy: rerun."
    )


if __name__ == "__main__":
    main()
