"""`synthvlm build`: run a recipe's stages over a work directory, then export the dataset.

The work dir (`runs/<recipe name>-<fingerprint>/` by default, `synthvlm_data.workdir`) holds every
stage's shards; re-running the same build resumes from the complete shards. A work dir remembers
the fingerprint of the recipe that made it, so a different recipe can never silently mix its shards
with another's.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from synthvlm_data.models.preflight import check_available
from synthvlm_data.backends import BackendOptions, get_backend
from synthvlm_data.config import Recipe
from synthvlm_data.dataset_dir import DatasetDir
from synthvlm_data.errors import SynthVLMError, tiny_recipe_hint
from synthvlm_data.stages import RunContext, Stage, stages_for
from synthvlm_data.workdir import GENERATE, WorkDir
from synthvlm_data.workunits import WorkUnit

@dataclass
class BuildResult:
    out_dir: Path
    work_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    main_process: bool = True  # False on the other ranks of a multi-process backend


def preflight(recipe: Recipe) -> None:
    """Check every local caption file exists and every model the recipe names can load here,
    before any stage runs (and `synthvlm validate` runs the same checks)."""
    check_source_files(recipe)
    check_available(recipe.generate.model, "generate.model")
    if recipe.generate.refiner is not None:
        check_available(recipe.generate.refiner, "generate.refiner")
    if recipe.generate.vae is not None:
        check_available(recipe.generate.vae, "generate.vae")
    check_available(recipe.score.clip.model, "score.clip.model")
    from synthvlm_data.captions.preflight import check_models

    check_models(recipe.captions)
    check_accelerator(recipe)
    check_llm_memory(recipe)


def check_source_files(recipe: Recipe) -> None:
    """A local caption file that is missing is an error now, not after the models have loaded."""
    from synthvlm_data.data import resolve_path
    from synthvlm_data.errors import InputDataError

    for src in recipe.captions.sources:
        if src.type in ("file", "llava") and not src.dataset and not resolve_path(src.path or "").is_file():
            raise InputDataError(f"caption source '{src.name}': file {resolve_path(src.path or '')} does not exist; "
                                 "fix `path` in the recipe")


def check_accelerator(recipe: Recipe) -> None:
    """A full-scale recipe on a machine without a GPU would not fail: it would run for weeks.

    Refused unless the recipe asks for the CPU explicitly (`generate.device: cpu`), which is what
    a user with a small custom model on a CPU box wants.
    """
    import torch

    if recipe.profile != "full" or recipe.generate.device is not None or torch.cuda.is_available():
        return
    raise SynthVLMError(
        f"recipe '{recipe.name}' generates {recipe.generate.width}x{recipe.generate.height} images with "
        f"'{recipe.generate.model.id}' and needs a CUDA GPU, but none is visible; run it on a GPU machine, "
        f"set generate.device: cpu in the recipe to run on the CPU anyway, or use {tiny_recipe_hint()}"
    )


def check_llm_memory(recipe: Recipe) -> None:
    """An in-process LLM step (perplexity LM, judge, synthesis) whose model does not fit the device
    it would run on is refused now, before its weights download (`models.llm_memory`)."""
    from synthvlm_data.models.devices import resolve_device
    from synthvlm_data.models.llm_memory import check_lm_memory

    check_lm_memory(recipe.captions, resolve_device)


def execute(stage: Stage, ctx: RunContext, runner, progress: bool = True) -> list[WorkUnit]:
    """Run one stage on a backend: `prepare` on the main process, then every rank plans and the
    backend runs the pending units; the main process records the manifest. Returns the units."""
    main = runner.is_main_process()
    if main:
        stage.prepare(ctx)
    runner.wait_for_everyone()
    units = stage.plan(ctx)
    runner.run_stage(stage, ctx, units, progress=progress)  # returns once all ranks are done
    if main:
        ctx.work.write_manifest(stage.name, units, stage.manifest_extra(ctx))
    return units


def sweep_leftovers(work: WorkDir, out_dir: Path) -> list[Path]:
    """Delete what killed runs left behind: temporary shard files and unfinished exports.

    Called under the work-dir lock, before any stage runs, so no writer of this work dir is alive.
    An export's staging folder is removed only when the process that made it is gone: at full scale
    each one is a whole copy of the dataset.
    """
    from synthvlm_data.stages.export import sweep_stale_exports
    from synthvlm_data.stages.formats import FORMATS, default_out

    removed = work.sweep_temporaries()
    for target in [out_dir, *(default_out(out_dir, f) for f in FORMATS)]:
        removed += sweep_stale_exports(target)
    return removed


def check_destinations(recipe: Recipe, out_dir: Path, overwrite: bool = False) -> None:
    """The dataset folder (and each `export.formats` folder next to it) may receive this build's
    output (`synthvlm_data.outdir.check_destination`): checked before anything runs or is written."""
    from synthvlm_data.outdir import check_destination
    from synthvlm_data.stages.formats import default_out

    check_destination(out_dir, "dataset", overwrite=overwrite)
    for fmt in recipe.export.formats or []:
        check_destination(default_out(out_dir, fmt), fmt, overwrite=overwrite, flag="--out (the formats go next to it)")


def _previous_report(out_dir: Path) -> dict | None:
    """The quality report `synthvlm report` left in the dataset folder a build is about to replace."""
    import json

    path = DatasetDir(out_dir).quality_file
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def regenerate_report(recipe: Recipe, out_dir: Path, work_dir: Path, previous: dict) -> None:
    """Re-export with other rows: the old report no longer describes them, so it is made again (same
    reference set) rather than dropped. A failure is a warning: the dataset itself is complete."""
    import sys

    from synthvlm_data.presentation.cards import refresh_if_dataset
    from synthvlm_data.presentation.report import report_into_dataset

    reference = previous.get("reference") or "builtin"
    try:
        report_into_dataset(out_dir, work_dir, recipe=recipe, reference=reference)
        refresh_if_dataset(out_dir, recipe)
    except SynthVLMError as err:
        print(f"warning: the quality report of {out_dir} was not regenerated ({err}); run `synthvlm report "
              f"{out_dir} --work-dir {work_dir} --reference {reference}`", file=sys.stderr)


def collect_stats(work: WorkDir) -> dict:
    report = work.caption_report()
    selection = work.selection_stats()
    steps = report.get("steps", [])
    captions_in = steps[0]["seen"] if steps else report.get("captions_out")
    return {
        "captions_in": captions_in,
        "captions_out": report.get("captions_out"),
        "caption_report": report,
        "images_generated": selection["images_scored"],
        **selection,
    }


def build(
    recipe: Recipe,
    out_dir: Path,
    *,
    work_dir: Path | None = None,
    backend: str = "local",
    options: BackendOptions | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> BuildResult:
    """Run (or resume) every stage of `recipe` in its work dir on `backend`, then export `out_dir`.

    `options` default to the ones set in the environment (`BackendOptions.from_env`). `out_dir`
    must be new, empty or this package's output (`check_destinations`; `overwrite`: of another
    kind too): that is checked first, before the work dir exists.
    """
    check_destinations(recipe, Path(out_dir), overwrite)
    preflight(recipe)
    work = WorkDir(work_dir) if work_dir else WorkDir.default(recipe)
    from synthvlm_data.outdir import check_not_inside

    check_not_inside(out_dir, work.root, what="the work dir")  # an export would replace (or sit in) the stages' shards
    options = options if options is not None else BackendOptions.from_env()
    runner = get_backend(backend, options)
    # Multi-process backends (accelerate) run build() on every rank: global steps run on the
    # main process between barriers, and only it holds the work-dir lock (the others work under it).
    main = runner.is_main_process()
    if main:
        work.root.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(recipe=recipe, work=work, cpu_threads=options.cpu_threads)
    timings: dict[str, float] = {}
    # The lock comes first: a refused second build must not touch the work dir (run.json, recipe).
    with work.lock() if main else contextlib.nullcontext():
        if main:
            work.init(recipe)
            sweep_leftovers(work, Path(out_dir))
        runner.wait_for_everyone()
        for stage_cls in stages_for(recipe):
            t0 = time.perf_counter()
            execute(stage_cls(), ctx, runner, progress=progress)
            timings[stage_cls.name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if main:
            from synthvlm_data.stages.export import export_dataset

            previous = _previous_report(out_dir)
            checked = DatasetDir(out_dir).contamination_file.is_file()
            export_dataset(ctx, out_dir, collect_stats(work))
            if previous is not None and not DatasetDir(out_dir).quality_file.is_file():
                regenerate_report(recipe, Path(out_dir), work.root, previous)
            if checked and not DatasetDir(out_dir).contamination_file.is_file():
                import sys

                print(f"warning: {out_dir} had a contamination check (decontamination.json) that does not describe "
                      "the re-exported rows (a re-export undoes `decontaminate --remove`): run `synthvlm decontaminate "
                      f"{out_dir} --against ...` again", file=sys.stderr)
            if recipe.export.formats:
                from synthvlm_data.stages.formats import export_formats

                export_formats(out_dir, recipe.export.formats, shard_size=recipe.export.webdataset_shard_size,
                               overwrite=overwrite)
        timings["export"] = time.perf_counter() - t0
        runner.wait_for_everyone()
        stats = collect_stats(work)
    if main:
        work.write_timings(timings)
    return BuildResult(out_dir=Path(out_dir), work_dir=work.root, timings=timings, stats=stats, main_process=main)


__all__ = ["BuildResult", "build", "check_destinations", "preflight"]


def decode_run(work_dir: Path, *, backend: str = "local", options=None, images_dir: Path | None = None,
               progress: bool = True) -> int:
    """Decode every generate shard of a latent run into `decode/` shards; returns the image count.

    `images_dir` also receives the images as files `<id>-<repeat>.<ext>`: a new or empty folder,
    or one an earlier decode wrote (checked before anything runs; no file of anyone else's is touched).
    """
    from synthvlm_data.outdir import check_destination, ensure_marker
    from synthvlm_data.stages.decode import DecodeStage

    if images_dir is not None:
        check_destination(Path(images_dir), "images", flag="--images", replaces=False)
    work = WorkDir(work_dir)
    recipe = work.recipe()
    ctx = RunContext(recipe=recipe, work=work)
    stage = DecodeStage()
    units = stage.plan(ctx)  # raises for pixel-mode runs
    missing = [u.index for u in units if not ctx.store.is_complete(WorkUnit(GENERATE, u.index, u.num_units))]
    if missing:
        raise SynthVLMError(f"{len(missing)} generate shard(s) of {work.root} are not complete; finish the build first (re-run it)")
    runner = get_backend(backend, options if options is not None else BackendOptions.from_env())
    main = runner.is_main_process()
    with work.lock() if main else contextlib.nullcontext():
        execute(stage, ctx, runner, progress=progress)
    n = 0
    out = Path(images_dir) if images_dir and main else None
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[recipe.generate.image_format]
    if out:
        ensure_marker(out, "images")  # before the first file: a killed decode resumes in its own folder
    for u in units:
        table = ctx.store.read(u, ["id", "repeat", "image"] if out else ["id"])
        n += table.num_rows
        if out:
            for sid, rep, data in zip(table["id"].to_pylist(), table["repeat"].to_pylist(), table["image"].to_pylist(), strict=True):
                (out / f"{sid}-{rep}.{ext}").write_bytes(data)
    return n
