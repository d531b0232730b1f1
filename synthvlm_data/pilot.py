"""`synthvlm pilot`: time the generate stage on a few captions and forecast the full run's cost.

Generation dominates a SynthVLM build (60 SDXL steps at 1024 px per image), so before renting
GPUs for ~1M images it pays to measure s/image on the target hardware with the recipe's own
settings (model, steps, size, batch size, refiner) and multiply:

    device-hours = s/image x (captions x images_per_caption) / 3600
    disk         = stored bytes/image (the recipe's image format, measured) x images

Model loading and one warm-up batch are timed separately and excluded from s/image. The pilot
runs in a throwaway work dir and never touches the recipe's runs.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from synthvlm_data.config import Recipe, recipe_from_dict


@dataclass
class PilotResult:
    recipe: str
    device: str
    captions: int
    images: int
    batch_size: int
    load_s: float
    warmup_s: float
    seconds: float
    total_captions: int | None
    images_per_caption: int
    count_from: str = "given"  # where total_captions came from: given, work dir, curated now, limit
    bytes_per_image: float = 0.0  # mean stored size of a generated image (or latent) in the recipe's format
    stored_as: str = "png"  # the recipe's image format, or "latents"
    flops_per_image: float | None = None  # denoiser steps + VAE decode (models.flops); None: not countable
    device_name: str = ""  # the GPU's name (its peak for the FLOP-limit line)

    def flop_limit_s(self) -> tuple[str, float, float] | None:
        """(GPU, its dense 16-bit peak TFLOP/s, the fastest possible s/image on it): this pilot's GPU
        when its peak is known, else the reference H100."""
        from synthvlm_data.models.flops import REFERENCE_GPU, peak_tflops

        if not self.flops_per_image:
            return None
        peak = peak_tflops(self.device_name) if self.device.startswith("cuda") else None
        name, peak = (self.device_name, peak) if peak else REFERENCE_GPU
        return name, peak, self.flops_per_image / (peak * 1e12)

    @property
    def s_per_image(self) -> float:
        return self.seconds / self.images

    @property
    def total_images(self) -> int | None:
        return None if self.total_captions is None else self.total_captions * self.images_per_caption

    def device_hours(self, images: int | None = None) -> float | None:
        images = self.total_images if images is None else images
        return None if images is None else self.s_per_image * images / 3600.0

    def disk_gb(self, images: int | None = None) -> float | None:
        """What the work dir's generate shards hold for `images` (default: the full recipe's)."""
        images = self.total_images if images is None else images
        return None if images is None else self.bytes_per_image * images / 1e9


def _with_limit(recipe: Recipe, n: int) -> Recipe:
    """The recipe cut to about n captions: curated ones capped by `limit`, synthesis (if any)
    asked for at most n (one per concept over the first n concepts), in one shard of n."""
    over: dict = {"captions": {"limit": n}, "rows_per_shard": n}
    syn = recipe.captions.synthesis
    if syn is not None:
        over["captions"]["synthesis"] = {"n_per_concept": 1, "max_concepts": min(n, syn.max_concepts or n)}
    return recipe_from_dict(recipe.model_dump(mode="json"), f"{recipe.name} (pilot)", over)


def full_caption_count(recipe: Recipe, work_dir: Path | None) -> tuple[int | None, str]:
    """Curated captions of the full recipe, if known without running its curation: from a work
    dir's captions manifest, else (offline profiles only, where curation takes seconds) by curating."""
    from synthvlm_data.workdir import WorkDir

    given = [WorkDir(work_dir)] if work_dir is not None else []
    for work in [*given, WorkDir.default(recipe)]:
        count = work.caption_count()
        if count is not None:
            return count, f"work dir {work.root}"
    if recipe.captions.limit is not None and recipe.profile == "full":
        return recipe.captions.limit, "captions.limit"
    if recipe.profile != "full":
        from synthvlm_data.captions.pipeline import run_captions

        print(f"pilot: no work dir holds {recipe.name}'s caption count; curating its captions now to count them "
              "(pass --captions N or --work-dir to skip this)", flush=True)
        return len(run_captions(recipe.captions, seed=recipe.seed, profile=recipe.profile).rows), "curated now"
    return None, "unknown"


def run_pilot(recipe: Recipe, n: int = 8, total_captions: int | None = None, work_dir: Path | None = None) -> PilotResult:
    """Generate images for `n` captions of the recipe and time it (nothing is exported)."""
    from synthvlm_data.backends import BackendOptions, get_backend
    from synthvlm_data.build import execute, preflight
    from synthvlm_data.models.devices import pinned_threads, resolve_device
    from synthvlm_data.stages import CaptionsStage, CurateStage, GenerateStage, RunContext
    from synthvlm_data.workdir import WorkDir

    preflight(recipe)  # a full recipe offline stops here, with the usual one-line message
    count_from = "given"
    if total_captions is None:
        total_captions, count_from = full_caption_count(recipe, work_dir)
    small = _with_limit(recipe, n)
    with tempfile.TemporaryDirectory(prefix="synthvlm-pilot-") as tmp:
        options = BackendOptions.from_env()
        ctx = RunContext(recipe=small, work=WorkDir(tmp), cpu_threads=options.cpu_threads)
        for caption_stage in (CurateStage(), CaptionsStage()):
            execute(caption_stage, ctx, get_backend("local", options), progress=False)
        stage = GenerateStage()
        units = stage.plan(ctx)[:1]  # the first n captions (curated + synthesised)
        with pinned_threads(stage.device(ctx), options.cpu_threads):
            t0 = time.perf_counter()
            stage.setup(ctx)
            load_s = time.perf_counter() - t0
            first = stage.batches(ctx, units[0])[0]
            t0 = time.perf_counter()
            stage.generator([j[1] for j in first], [j[3] for j in first])  # warm-up (allocator, kernels)
            warmup_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            tables = [stage.run(ctx, u) for u in units]
            seconds = time.perf_counter() - t0
        flops = _image_flops(stage.generator, recipe)
    images = sum(t.num_rows for t in tables)
    column = "latent" if "latent" in tables[0].column_names else "image"
    stored = sum(len(b) for t in tables for b in t[column].to_pylist() if b is not None)
    return PilotResult(
        recipe=recipe.name, device=resolve_device(recipe.generate.device),
        captions=images // recipe.generate.images_per_caption,
        images=images, batch_size=recipe.generate.batch_size, load_s=load_s, warmup_s=warmup_s, seconds=seconds,
        total_captions=total_captions, images_per_caption=recipe.generate.images_per_caption, count_from=count_from,
        bytes_per_image=stored / max(images, 1),
        stored_as="latents" if column == "latent" else recipe.generate.image_format,
        flops_per_image=flops, device_name=_device_name(resolve_device(recipe.generate.device)),
    )


def _image_flops(generator, recipe: Recipe) -> float | None:
    """FLOPs of what the timed stage does for one image with the loaded generator; None (the row is
    left out) when its denoiser is not one the counter knows (`models.flops`)."""
    from synthvlm_data.models.flops import image_flops

    try:
        flops = image_flops(generator.pipe, generator.refiner, recipe.generate)
    except Exception:  # a pipeline family the counter cannot drive: the pilot's timing still stands
        return None
    # latent mode: the timed generate stage stops before the VAE (the decode stage decodes later)
    return flops.total - (flops.decode if recipe.generate.output == "latents" else 0.0)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return device


def visible_devices(device: str) -> int:
    """GPUs this machine shows for a CUDA pilot; 1 (this machine) for a CPU one."""
    if device.startswith("cuda"):
        import torch

        return max(1, torch.cuda.device_count())
    return 1


def _stored_noun(res: PilotResult) -> str:
    """What the generate stage stores: images, or latents (whose decoded images, made for scoring by
    the decode stage, take disk on top)."""
    return "latents (decoded images for scoring on top)" if res.stored_as == "latents" else "images"


def format_pilot(res: PilotResult, devices: int | None = None) -> list[tuple[str, str]]:
    """Rows of the pilot's table (the CLI prints them). `devices`: GPUs for the wall-clock line
    (default: the GPUs visible here; a CPU pilot forecasts this machine)."""
    kind = "GPU" if res.device.startswith("cuda") else res.device.upper()
    devices = devices or visible_devices(res.device)
    on = f"{devices} {kind}s" if kind == "GPU" or devices > 1 else "this machine"
    rows = [
        ("device", res.device),
        ("pilot", f"{res.captions} captions x {res.images_per_caption} = {res.images} images, batch {res.batch_size}"),
        ("model load (s, excluded)", f"{res.load_s:.1f}"),
        ("warm-up batch (s, excluded)", f"{res.warmup_s:.2f}"),
        ("s/image", f"{res.s_per_image:.3f}"),
        ("images/s", f"{1.0 / res.s_per_image:.2f}"),
        (f"stored per image ({res.stored_as})", f"{res.bytes_per_image / 1e6:,.3f} MB"),
    ]
    limit = res.flop_limit_s()
    if limit is not None:
        gpu, peak, secs = limit
        what = "denoiser" if res.stored_as == "latents" else "denoiser + VAE decode"
        rows.append((f"FLOPs per image ({what})", f"{res.flops_per_image / 1e12:,.3f} TFLOP"))
        rows.append((f"FLOP-limit s/image on {gpu} ({peak:,.0f} TFLOP/s dense 16-bit)", f"{secs:.4f}"))
        if res.device.startswith("cuda") and gpu == res.device_name:
            rows.append(("measured / FLOP-limit", f"{res.s_per_image / secs:,.1f}x"))
    if res.total_images is None:
        per = res.device_hours(1_000_000)
        rows += [
            ("full recipe", "caption count unknown: pass --captions N (SynthVLM curates ~1M)"),
            (f"{kind}-hours per 1M images", f"{per:,.1f}"),
            (f"wall-clock on {on} per 1M images (h)", f"{per / devices:,.2f}"),
            (f"disk per 1M {_stored_noun(res)} (GB)", f"{res.disk_gb(1_000_000):,.1f}"),
        ]
    else:
        hours = res.device_hours()
        rows += [
            ("full recipe", f"{res.total_captions:,} captions x {res.images_per_caption} = {res.total_images:,} images"
             + ("" if res.count_from == "given" else f" (count: {res.count_from})")),
            (f"{kind}-hours (1 device)", f"{hours:,.2f}"),
            (f"wall-clock on {on} (h)", f"{hours / devices:,.2f}"),
            (f"disk for the generated {_stored_noun(res)} (GB)", f"{res.disk_gb():,.1f}"),
        ]
    return rows
