"""The local backend: one process runs every unit of a stage, skipping complete shards."""

from __future__ import annotations

import os

from synthvlm_data.backends.base import BackendOptions, pending, run_units
from synthvlm_data.errors import SynthVLMError
from synthvlm_data.stages.base import RunContext, Stage
from synthvlm_data.workunits import WorkUnit


class LocalBackend:
    name = "local"

    def __init__(self, options: BackendOptions):
        self.options = options

    def is_main_process(self) -> bool:
        # WORLD_SIZE is how accelerate launch / torchrun tell a process it is one of several ranks.
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1:  # every rank would run every unit and then fight over the work-dir lock
            raise SynthVLMError(
                f"this process is one of {world} launched ranks (accelerate launch / torchrun); "
                "pass --backend accelerate so that they share the work"
            )
        return True

    def wait_for_everyone(self) -> None:
        """One process: nothing to wait for."""

    def broadcast(self, obj):
        return obj

    def run_stage(self, stage: Stage, ctx: RunContext, units: list[WorkUnit], progress: bool = True) -> int:
        """Run the stage's pending units; returns how many ran."""
        return run_units(stage, ctx, pending(ctx, units), self.options.cpu_threads, progress=progress)
