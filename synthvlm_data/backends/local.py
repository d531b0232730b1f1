"""The local backend: one process runs every unit of a stage, skipping complete shards."""

from __future__ import annotations

from tqdm.auto import tqdm

from synthvlm_data.stages import RunContext, Stage
from synthvlm_data.workunits import WorkUnit


def pending(ctx: RunContext, units: list[WorkUnit]) -> list[WorkUnit]:
    """Units without a complete, checksum-verified shard (resume redoes only these)."""
    return [u for u in units if not ctx.store.is_complete(u)]


def run_stage(stage: Stage, ctx: RunContext, units: list[WorkUnit], progress: bool = True) -> int:
    """Run the stage's pending units; returns how many ran."""
    todo = pending(ctx, units)
    if not todo:
        return 0
    stage.setup(ctx)
    for unit in tqdm(todo, desc=stage.name, unit="shard", disable=not progress):
        ctx.store.write(unit, stage.run(ctx, unit))
    return len(todo)
