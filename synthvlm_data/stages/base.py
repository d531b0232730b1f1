"""What every stage is: a pure function from one work unit (a shard of input rows) to one output
table, plus the context it reads.

A stage knows nothing about processes or machines: the backends (`synthvlm_data.backends`) decide who
runs which unit, and every backend writes the same bytes because units (and generation batches
inside them) are fixed before any of them runs. Models are loaded in `setup`, once per worker.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from synthvlm_data.config import Recipe
from synthvlm_data.models.devices import resolve_device
from synthvlm_data.shards import ShardStore
from synthvlm_data.workdir import CAPTIONS, WorkDir
from synthvlm_data.workunits import WorkUnit, plan_units


@dataclass
class RunContext:
    """What every stage may read: the recipe, the run's work directory and the CPU thread budget
    (`--cpu-threads`: for CPU-side models of a stage that otherwise runs on a GPU, e.g. the safety
    detector next to CLIP, so they neither take every core nor vary with the machine)."""

    recipe: Recipe
    work: WorkDir
    cpu_threads: int = 1

    @property
    def store(self) -> ShardStore:
        return self.work.store

    def caption_units(self) -> list[WorkUnit]:
        """The caption shards: every later stage has one unit per caption shard."""
        return self.work.units(CAPTIONS)


class Stage(abc.ABC):
    """A stage maps each of its work units to one table.

    The build runs a stage as: `prepare` (main process only), `plan` (every process), the backend
    runs `setup` once and `run` for each pending unit, then the main process writes the manifest
    (with `manifest_extra`).
    """

    name: ClassVar[str] = ""

    def device(self, ctx: RunContext) -> str:
        """Where the stage's models compute ("cpu" or a CUDA device). Backends pin the CPU thread
        count of CPU stages (float results depend on it) and give GPU stages one GPU per worker."""
        return "cpu"

    def prepare(self, ctx: RunContext) -> None:
        """Global work the units depend on, done once on the main process before planning."""

    @abc.abstractmethod
    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        """The stage's work units, fixed before anything runs."""

    def setup(self, ctx: RunContext) -> None:
        """Load models once per worker (called only if some unit still needs to run)."""

    @abc.abstractmethod
    def run(self, ctx: RunContext, unit: WorkUnit) -> pa.Table:
        """Compute one unit's output table (pure: same unit, same bytes)."""

    def manifest_extra(self, ctx: RunContext) -> dict:
        """Stage-level facts recorded in the manifest next to the shard checksums."""
        return {}


class ShardwiseStage(Stage):
    """A stage with one unit per caption shard (shard i of its input -> shard i of its output),
    whose models compute on the generator's device: generate, decode and score."""

    def device(self, ctx: RunContext) -> str:
        return resolve_device(ctx.recipe.generate.device)

    def plan(self, ctx: RunContext) -> list[WorkUnit]:
        return plan_units(self.name, len(ctx.caption_units()))
