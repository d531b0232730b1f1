"""The Accelerate backend: the ranks of `accelerate launch` (or torchrun) share a stage's units.

    accelerate launch --multi_gpu --num_processes N -m synthvlm_data.cli build --backend accelerate ...

One rank per GPU (several nodes: the usual `--num_machines/--machine_rank/--main_process_ip`);
on a CPU-only machine the same command starts N CPU processes that talk over gloo. Every rank
runs `build()`; the global steps (captions, manifests, export) run on the main process between
barriers, and only the main process holds the work-dir lock.

Per stage, the main process lists the pending units (checksums of complete shards) and
broadcasts the list, so all ranks split the same list: rank r runs `pending[r::N]` (round-robin
over the fixed unit list, `workunits.shard_of`), loading its models only if it has work. Output
bytes do not depend on N: units and generation batches are fixed before distribution, and CPU
stages run with the pinned thread count of every backend (`BackendOptions.cpu_threads`).

Barriers wait up to `BackendOptions.dist_timeout_s` (default 48 h): ranks wait for the main
process while it runs the caption stage, and for the slowest rank at the end of every stage.
"""

from __future__ import annotations

from datetime import timedelta

from synthvlm_data.backends.base import BackendOptions, pending, run_units
from synthvlm_data.stages.base import RunContext, Stage
from synthvlm_data.workunits import WorkUnit, shard_of

__all__ = ["AccelerateBackend", "state"]


def state(timeout_s: float):
    """The process group of this launch (a single process when not launched).

    CPU processes (no CUDA, or `accelerate launch --cpu`) use gloo; GPU ranks use NCCL with one
    device per local rank, which PartialState selects (`torch.cuda.set_device`). The launcher tells
    each rank (ACCELERATE_USE_CPU, RANK, WORLD_SIZE, ...) through its environment.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu, timeout=timedelta(seconds=timeout_s))


def _broadcast(obj):
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj], from_process=0)[0]


class AccelerateBackend:
    name = "accelerate"

    def __init__(self, options: BackendOptions):
        self.options = options

    def _state(self):
        return state(self.options.dist_timeout_s)

    def is_main_process(self) -> bool:
        return self._state().is_main_process

    def wait_for_everyone(self) -> None:
        self._state().wait_for_everyone()

    def broadcast(self, obj):
        self._state()  # the process group exists before the collective
        return _broadcast(obj)

    def run_stage(self, stage: Stage, ctx: RunContext, units: list[WorkUnit], progress: bool = True) -> int:
        """Run this rank's share of the pending units, then wait for all ranks; returns how many ran here."""
        st = self._state()
        todo = _broadcast(pending(ctx, units) if st.is_main_process else None)
        mine = shard_of(todo, st.process_index, st.num_processes)
        run_units(stage, ctx, mine, self.options.cpu_threads, desc=f"{stage.name} (rank 0 of {st.num_processes})",
                  progress=progress and st.is_main_process)
        st.wait_for_everyone()
        return len(mine)
