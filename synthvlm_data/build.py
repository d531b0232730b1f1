"""`synthvlm build`: run a recipe's stages over a work directory, then export the dataset.

The work dir (`runs/<recipe name>/` by default) holds every stage's shards; re-running the same
build resumes from the complete shards. A work dir remembers the fingerprint of the recipe that
made it, so a different recipe can never silently mix its shards with another's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from synthvlm_data.models.refs import check_available
from synthvlm_data.backends import get_backend
from synthvlm_data.config import Recipe
from synthvlm_data.errors import SynthVLMError, WorkDirLockedError
from synthvlm_data.shards import ShardStore, atomic_write_bytes
from synthvlm_data.stages import CAPTIONS, SELECT, STAGES, RunContext, captions_done, prepare_captions, stages_for

STAGE_ORDER = (CAPTIONS, *(s.name for s in STAGES), "export")


@dataclass
class BuildResult:
    out_dir: Path
    work_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    main_process: bool = True  # False on the other ranks of a multi-process backend


def preflight(recipe: Recipe) -> None:
    """Check every model the recipe names can load here, before any stage runs."""
    check_available(recipe.generate.model, "generate.model")
    if recipe.generate.refiner is not None:
        check_available(recipe.generate.refiner, "generate.refiner")
    check_available(recipe.score.clip.model, "score.clip.model")
    from synthvlm_data.captions.pipeline import check_models

    check_models(recipe.captions)
    check_accelerator(recipe)


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
        "set generate.device: cpu in the recipe to run on the CPU anyway, or use RECIPE=tiny"
    )


def default_work_dir(recipe: Recipe) -> Path:
    """`runs/<name>-<fingerprint>`: a changed recipe never resumes another recipe's shards."""
    return Path("runs") / f"{recipe.name}-{recipe.shards_fingerprint()[:8]}"


def invalidate_stale_selection(ctx: RunContext) -> None:
    """Selection is cheap: redo it whenever the selection rule changed since it was written."""
    marker = ctx.work_dir / SELECT / "config.json"
    current = json.dumps(ctx.recipe.select.model_dump(mode="json"), sort_keys=True)
    if marker.is_file() and marker.read_text() == current:
        return
    for path in (ctx.work_dir / SELECT).glob("*.parquet*"):
        path.unlink()
    atomic_write_bytes(marker, current.encode())


def init_work_dir(work_dir: Path, recipe: Recipe) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    meta_path = work_dir / "run.json"
    fp = recipe.shards_fingerprint()
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fp:
            raise SynthVLMError(
                f"work dir {work_dir} holds a run of a different recipe (fingerprint {meta.get('fingerprint')} "
                f"vs {fp}); pass another --work-dir or delete it to start over"
            )
        return
    atomic_write_bytes(work_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False).encode())
    atomic_write_bytes(meta_path, json.dumps({"recipe": recipe.name, "fingerprint": fp}, indent=2).encode())


def sweep_leftovers(work_dir: Path, out_dir: Path) -> list[Path]:
    """Delete what killed runs left behind: temporary shard files and unfinished exports.

    Called under the work-dir lock, before any stage runs, so no writer of this work dir is alive
    (temp files are never read as data anyway; this only frees the disk). An export's staging
    folder is removed only when the process that made it is gone: at full scale each one is a
    whole copy of the dataset.
    """
    removed = [p for p in work_dir.rglob(".tmp-*") if p.is_file()]
    for path in removed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    from synthvlm_data.export import stale_export_dirs

    for path in stale_export_dirs(out_dir):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def work_dir_lock(work_dir: Path) -> Iterator[None]:
    """One build per work dir at a time (the lock dies with the process, even on SIGKILL)."""
    lock_path = work_dir / ".lock"
    with lock_path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkDirLockedError(
                f"another build is running on {work_dir}; wait for it to finish or use another --work-dir"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def collect_stats(ctx: RunContext) -> dict:
    report = json.loads((ctx.work_dir / CAPTIONS / "report.json").read_text())
    selection = json.loads((ctx.work_dir / SELECT / "stats.json").read_text())
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
    progress: bool = True,
) -> BuildResult:
    preflight(recipe)
    work_dir = Path(work_dir) if work_dir else default_work_dir(recipe)
    runner = get_backend(backend)
    # Multi-process backends (accelerate) run build() on every rank: global steps run on the
    # main process between barriers, and only it holds the work-dir lock (the others work under it).
    main = runner.is_main_process()
    if main:
        work_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(recipe=recipe, store=ShardStore(work_dir), work_dir=work_dir)
    timings: dict[str, float] = {}
    # The lock comes first: a refused second build must not touch the work dir (run.json, recipe).
    with work_dir_lock(work_dir) if main else contextlib.nullcontext():
        if main:
            init_work_dir(work_dir, recipe)
            sweep_leftovers(work_dir, Path(out_dir))
        runner.wait_for_everyone()
        t0 = time.perf_counter()
        if main:
            if not captions_done(ctx):
                prepare_captions(ctx)
            invalidate_stale_selection(ctx)
        runner.wait_for_everyone()
        timings[CAPTIONS] = time.perf_counter() - t0
        for stage_cls in stages_for(recipe):
            stage = stage_cls()
            t0 = time.perf_counter()
            units = stage.plan(ctx)
            runner.run_stage(stage, ctx, units, progress=progress)  # returns once all ranks are done
            if main:
                ctx.store.write_manifest(stage.name, units)
            timings[stage.name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if main:
            from synthvlm_data.export import export_dataset

            export_dataset(ctx, out_dir, collect_stats(ctx))
        timings["export"] = time.perf_counter() - t0
        runner.wait_for_everyone()
        stats = collect_stats(ctx)
    if main:
        atomic_write_bytes(work_dir / "timings.json", json.dumps(timings, indent=2).encode())
    return BuildResult(out_dir=Path(out_dir), work_dir=work_dir, timings=timings, stats=stats, main_process=main)


__all__ = ["BuildResult", "build", "preflight"]
