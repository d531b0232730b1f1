"""The Ray backend: Ray Data actor pools run a stage's units, one model load per worker.

    synthvlm build --backend ray --workers 8 [--ray-address auto] ...   (pip install 'synthvlm-data[ray]')

The driver lists the pending units and hands them to `ray.data.from_items(...).map_batches(
_StageWorker, batch_size=1, compute=ActorPoolStrategy(size=N))`: each actor runs
`stage.setup` once in its constructor, then runs units and writes each shard itself through the
run's `ShardStore` (same bytes as every backend), returning only the shard's name and checksum.

Locally (no address) the driver starts a private Ray instance with one CPU slot per worker.
With `--ray-address` / `SYNTHVLM_RAY_ADDRESS` (or Ray's own `RAY_ADDRESS`) it joins a cluster:
every node needs synthvlm-data installed and the work dir at the same path (a shared file
system), since workers read their inputs from it and write their shards into it.

Workers: `--workers` / `SYNTHVLM_RAY_WORKERS`; by default one per GPU of the cluster (GPU runs)
or one per `SYNTHVLM_CPU_THREADS` CPUs (CPU runs). GPU workers reserve one GPU each; CPU workers
reserve as many CPUs as the pinned thread count they run with (`SYNTHVLM_CPU_THREADS`, default
1, the same on every backend).
"""

from __future__ import annotations

import os

from synthvlm_data.backends import cpu_threads, pending, runs_on_cpu
from synthvlm_data.errors import ShardError, SynthVLMError
from synthvlm_data.stages import RunContext, Stage
from synthvlm_data.workunits import WorkUnit

ADDRESS_ENV = "SYNTHVLM_RAY_ADDRESS"
WORKERS_ENV = "SYNTHVLM_RAY_WORKERS"
TMPDIR_ENV = "SYNTHVLM_RAY_TMPDIR"

__all__ = ["init", "is_main_process", "run_stage", "wait_for_everyone"]


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise SynthVLMError("the ray backend needs Ray Data: pip install 'synthvlm-data[ray]'") from None
    return ray


def is_main_process() -> bool:
    return True  # one driver; workers are Ray actors, not copies of the build


def wait_for_everyone() -> None:
    """One driver: `run_stage` returns when every unit is written."""


def _requested_workers() -> int | None:
    raw = os.environ.get(WORKERS_ENV)
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise SynthVLMError(f"{WORKERS_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


def init() -> None:
    """Join the configured cluster, or start a local Ray instance (once per driver process)."""
    ray = _ray()
    if ray.is_initialized():
        return
    address = os.environ.get(ADDRESS_ENV) or os.environ.get("RAY_ADDRESS")
    common = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    if address:
        ray.init(address=address, **common)
    else:
        slots = max((_requested_workers() or 0) * cpu_threads(), os.cpu_count() or 1)
        ray.init(num_cpus=slots, _temp_dir=os.environ.get(TMPDIR_ENV) or None, **common)


class _StageWorker:
    """One Ray actor: the stage's models, loaded once; runs units and writes their shards."""

    def __init__(self, stage_cls: type[Stage], ctx: RunContext):
        if runs_on_cpu(ctx):
            import torch

            torch.set_num_threads(cpu_threads())
        self.ctx = ctx
        self.stage = stage_cls()
        self.stage.setup(ctx)

    def __call__(self, batch: dict) -> dict:
        names, digests = [], []
        store = self.ctx.store
        for stage, index, num in zip(batch["stage"], batch["index"], batch["num_units"], strict=True):
            unit = WorkUnit(str(stage), int(index), int(num))
            if store.is_complete(unit):  # a retried task after a worker died mid-way
                digest = store.recorded_checksum(unit)
            else:
                digest = store.write(unit, self.stage.run(self.ctx, unit))
            names.append(unit.name)
            digests.append(digest)
        return {"unit": names, "sha256": digests}


def run_stage(stage: Stage, ctx: RunContext, units: list[WorkUnit], progress: bool = True) -> int:
    """Run the pending units on an actor pool; returns how many ran."""
    todo = pending(ctx, units)
    if not todo:
        return 0
    ray = _ray()
    init()
    data_ctx = ray.data.DataContext.get_current()
    data_ctx.enable_progress_bars = progress
    data_ctx.print_on_execution_start = progress
    cpu = runs_on_cpu(ctx)
    resources = ray.cluster_resources()
    per_worker = cpu_threads() if cpu else 1
    workers = _requested_workers() or int(resources.get("CPU", 1) // per_worker if cpu else resources.get("GPU", 1)) or 1
    workers = max(1, min(workers, len(todo)))
    items = [{"stage": u.stage, "index": u.index, "num_units": u.num_units} for u in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _StageWorker,
        fn_constructor_args=(type(stage), ctx),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
        num_cpus=per_worker,
        num_gpus=0 if cpu else 1,
    )
    done = {row["unit"] for row in ds.take_all()}
    missing = [u.name for u in todo if u.name not in done or not ctx.store.is_complete(u)]
    if missing:
        raise ShardError(f"ray workers did not complete {len(missing)} {stage.name} shard(s) ({missing[0]}, ...); re-run to resume")
    return len(todo)
