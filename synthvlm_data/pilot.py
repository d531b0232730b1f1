"""`synthvlm pilot`: time the generate stage on a few captions and forecast the full run's cost.

Generation dominates a SynthVLM build (60 SDXL steps at 1024 px per image), so before renting
GPUs for ~1M images it pays to measure s/image on the target hardware with the recipe's own
settings (model, steps, size, batch size, refiner) and multiply:

    device-hours = s/image x (captions x images_per_caption) / 3600

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

    @property
    def s_per_image(self) -> float:
        return self.seconds / self.images

    @property
    def total_images(self) -> int | None:
        return None if self.total_captions is None else self.total_captions * self.images_per_caption

    def device_hours(self, images: int | None = None) -> float | None:
        images = self.total_images if images is None else images
        return None if images is None else self.s_per_image * images / 3600.0


def _with_limit(recipe: Recipe, n: int) -> Recipe:
    return recipe_from_dict(recipe.model_dump(mode="json"), f"{recipe.name} (pilot)", {"captions": {"limit": n}})


def full_caption_count(recipe: Recipe, work_dir: Path | None) -> int | None:
    """Curated captions of the full recipe, if known without running its curation: from a work
    dir's captions manifest, else (offline profiles only, where curation takes seconds) by curating."""
    from synthvlm_data.workdir import WorkDir

    given = [WorkDir(work_dir)] if work_dir is not None else []
    for work in [*given, WorkDir.default(recipe)]:
        count = work.caption_count()
        if count is not None:
            return count
    if recipe.captions.limit is not None and recipe.profile == "full":
        return recipe.captions.limit
    if recipe.profile != "full":
        from synthvlm_data.captions.pipeline import run_captions

        return len(run_captions(recipe.captions, seed=recipe.seed, profile=recipe.profile).rows)
    return None


def run_pilot(recipe: Recipe, n: int = 8, total_captions: int | None = None, work_dir: Path | None = None) -> PilotResult:
    """Generate images for `n` captions of the recipe and time it (nothing is exported)."""
    from synthvlm_data.backends import BackendOptions, get_backend, pinned_threads
    from synthvlm_data.build import execute, preflight
    from synthvlm_data.models.devices import resolve_device
    from synthvlm_data.stages import CaptionsStage, GenerateStage, RunContext
    from synthvlm_data.workdir import WorkDir

    preflight(recipe)  # a full recipe offline stops here, with the usual one-line message
    if total_captions is None:
        total_captions = full_caption_count(recipe, work_dir)
    small = _with_limit(recipe, n)
    with tempfile.TemporaryDirectory(prefix="synthvlm-pilot-") as tmp:
        ctx = RunContext(recipe=small, work=WorkDir(tmp))
        options = BackendOptions.from_env()
        execute(CaptionsStage(), ctx, get_backend("local", options), progress=False)
        stage = GenerateStage()
        units = stage.plan(ctx)
        with pinned_threads(stage, ctx, options.cpu_threads):
            t0 = time.perf_counter()
            stage.setup(ctx)
            load_s = time.perf_counter() - t0
            first = stage.batches(ctx, units[0])[0]
            t0 = time.perf_counter()
            stage.generator([j[1] for j in first], [j[3] for j in first])  # warm-up (allocator, kernels)
            warmup_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            images = sum(stage.run(ctx, u).num_rows for u in units)
            seconds = time.perf_counter() - t0
    return PilotResult(
        recipe=recipe.name, device=resolve_device(recipe.generate.device),
        captions=images // recipe.generate.images_per_caption,
        images=images, batch_size=recipe.generate.batch_size, load_s=load_s, warmup_s=warmup_s, seconds=seconds,
        total_captions=total_captions, images_per_caption=recipe.generate.images_per_caption,
    )


def format_pilot(res: PilotResult, devices: int = 8) -> list[tuple[str, str]]:
    """Rows of the pilot's table (the CLI prints them)."""
    kind = "GPU" if res.device.startswith("cuda") else res.device.upper()
    rows = [
        ("device", res.device),
        ("pilot", f"{res.captions} captions x {res.images_per_caption} = {res.images} images, batch {res.batch_size}"),
        ("model load (s, excluded)", f"{res.load_s:.1f}"),
        ("warm-up batch (s, excluded)", f"{res.warmup_s:.2f}"),
        ("s/image", f"{res.s_per_image:.3f}"),
        ("images/s", f"{1.0 / res.s_per_image:.2f}"),
    ]
    if res.total_images is None:
        per = res.device_hours(1_000_000)
        rows += [
            ("full recipe", "caption count unknown: pass --captions N (SynthVLM curates ~1M)"),
            (f"{kind}-hours per 1M images", f"{per:,.1f}"),
            (f"wall-clock on {devices} {kind}s per 1M images (h)", f"{per / devices:,.2f}"),
        ]
    else:
        hours = res.device_hours()
        rows += [
            ("full recipe", f"{res.total_captions:,} captions x {res.images_per_caption} = {res.total_images:,} images"),
            (f"{kind}-hours (1 device)", f"{hours:,.2f}"),
            (f"wall-clock on {devices} {kind}s (h)", f"{hours / devices:,.2f}"),
        ]
    return rows
