"""`synthvlm decode`: turn a latent-mode run's stored latents into images, later.

Runs the decode stage (`stages.DecodeStage`: the generator's VAE only, in the generation
batches) over a work dir on any backend; it is resumable like every stage, and a latent build
runs it itself before scoring. Optionally writes the images as files too.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from synthvlm_data.errors import SynthVLMError


def decode_run(work_dir: Path, *, backend: str = "local", images_dir: Path | None = None, progress: bool = True) -> int:
    """Decode every generate shard of a latent run into `decode/` shards; returns the image count."""
    from synthvlm_data.backends import get_backend
    from synthvlm_data.stages import GENERATE, DecodeStage, RunContext
    from synthvlm_data.workdir import WorkDir
    from synthvlm_data.workunits import WorkUnit

    work = WorkDir(work_dir)
    recipe = work.recipe()
    ctx = RunContext(recipe=recipe, work=work)
    stage = DecodeStage()
    units = stage.plan(ctx)  # raises for pixel-mode runs
    missing = [u.index for u in units if not ctx.store.is_complete(WorkUnit(GENERATE, u.index, u.num_units))]
    if missing:
        raise SynthVLMError(f"{len(missing)} generate shard(s) of {work.root} are not complete; finish the build first (re-run it)")
    runner = get_backend(backend)
    main = runner.is_main_process()
    with work.lock() if main else contextlib.nullcontext():
        runner.run_stage(stage, ctx, units, progress=progress)
        if main:
            work.write_manifest(stage.name, units)
    n = 0
    for u in units:
        table = ctx.store.read(u, ["id", "repeat", "image"] if images_dir and main else ["id"])
        n += table.num_rows
        if images_dir and main:
            out = Path(images_dir)
            out.mkdir(parents=True, exist_ok=True)
            ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[recipe.generate.image_format]
            for sid, rep, data in zip(table["id"].to_pylist(), table["repeat"].to_pylist(), table["image"].to_pylist(), strict=True):
                (out / f"{sid}-{rep}.{ext}").write_bytes(data)
    return n
