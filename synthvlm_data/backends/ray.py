"""The Ray backend: Ray Data actor pools run a stage's units, one model load per worker.

    synthvlm build --backend ray --workers 8 [--ray-address auto] ...   (pip install 'synthvlm-data[ray]')

The driver lists the pending units and hands them to `ray.data.from_items(...).map_batches(
_StageWorker, batch_size=1, compute=ActorPoolStrategy(size=N))`: each actor runs
`stage.setup` once in its constructor, then runs units and writes each shard itself through the
run's `ShardStore` (same bytes as every backend), returning only the shard's name and checksum.

Locally (no address) the driver starts a private Ray instance with one CPU slot per worker.
With `--ray-address` (default `SYNTHVLM_RAY_ADDRESS` or Ray's own `RAY_ADDRESS`) it joins a
cluster: every node needs synthvlm-data installed and the work dir at the same path (a shared file
system), since workers read their inputs from it and write their shards into it.

Workers: `--workers` (default `SYNTHVLM_RAY_WORKERS`, else one per GPU of the cluster for GPU
stages, or one per `cpu_threads` CPUs for CPU stages). GPU workers reserve one GPU each; CPU
workers reserve as many CPUs as the pinned thread count they run with (`--cpu-threads`, the same
on every backend).
"""

from __future__ import annotations

import os

from synthvlm_data.backends.base import BackendOptions, pending
from synthvlm_data.errors import ShardError, SynthVLMError
from synthvlm_data.stages.base import RunContext, Stage
from synthvlm_data.workunits import WorkUnit

__all__ = ["RayBackend"]


def _ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise SynthVLMError("the ray backend needs Ray Data: pip install 'synthvlm-data[ray]'") from None
    return ray


class _StageWorker:
    """One Ray actor: the stage's models, loaded once; runs units and writes their shards."""

    def __init__(self, stage_cls: type[Stage], ctx: RunContext, cpu_threads: int):
        self.ctx = ctx
        self.stage = stage_cls()
        if self.stage.device(ctx) == "cpu":  # the actor's own process: pinned for its lifetime
            import torch

            torch.set_num_threads(cpu_threads)
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


class RayBackend:
    name = "ray"

    def __init__(self, options: BackendOptions):
        self.options = options

    def is_main_process(self) -> bool:
        return True  # one driver; workers are Ray actors, not copies of the build

    def wait_for_everyone(self) -> None:
        """One driver: `run_stage` returns when every unit is written."""

    def broadcast(self, obj):
        return obj

    def init(self) -> None:
        """Join the configured cluster, or start a local Ray instance (once per driver process)."""
        ray = _ray()
        if ray.is_initialized():
            return
        common = dict(include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        if self.options.ray_address:
            ray.init(address=self.options.ray_address, **common)
        else:
            slots = max((self.options.workers or 0) * self.options.cpu_threads, os.cpu_count() or 1)
            ray.init(num_cpus=slots, _temp_dir=self.options.ray_tmpdir, **common)

    def run_stage(self, stage: Stage, ctx: RunContext, units: list[WorkUnit], progress: bool = True) -> int:
        """Run the pending units on an actor pool; returns how many ran."""
        todo = pending(ctx, units)
        if not todo:
            return 0
        ray = _ray()
        self.init()
        data_ctx = ray.data.DataContext.get_current()
        data_ctx.enable_progress_bars = progress
        data_ctx.print_on_execution_start = progress
        cpu = stage.device(ctx) == "cpu"
        resources = ray.cluster_resources()
        per_worker = self.options.cpu_threads if cpu else 1
        default = int(resources.get("CPU", 1) // per_worker if cpu else resources.get("GPU", 1)) or 1
        workers = max(1, min(self.options.workers or default, len(todo)))
        items = [{"stage": u.stage, "index": u.index, "num_units": u.num_units} for u in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _StageWorker,
            fn_constructor_args=(type(stage), ctx, self.options.cpu_threads),
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
