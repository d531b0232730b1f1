"""What every backend shares: its options, the protocol the build calls, and the one loop that runs a
stage's units in a process (pending units -> pinned CPU threads -> the stage's setup -> each unit
written through the run's `ShardStore`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from tqdm.auto import tqdm

from synthvlm_data.errors import SynthVLMError
from synthvlm_data.models.devices import CPU_THREADS_ENV, cpu_threads_from_env, pinned_threads

WORKERS_ENV = "SYNTHVLM_RAY_WORKERS"
ADDRESS_ENV = "SYNTHVLM_RAY_ADDRESS"
TMPDIR_ENV = "SYNTHVLM_RAY_TMPDIR"
TIMEOUT_ENV = "SYNTHVLM_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 48 * 3600


@dataclass(frozen=True)
class BackendOptions:
    """How a backend runs the stages.

    cpu_threads: intra-op threads of CPU stages (every backend, every worker).
    workers: Ray actor pool size (default: one per GPU of the cluster, or per `cpu_threads` CPUs).
    ray_address: a Ray cluster to join (`auto`, `ray://head:10001`); default: a private local Ray.
    ray_tmpdir: the local Ray's temporary directory (its socket paths must stay short).
    dist_timeout_s: how long accelerate ranks wait at a barrier (for the main process's global
        steps and for the slowest rank at the end of a stage).
    """

    cpu_threads: int = 1
    workers: int | None = None
    ray_address: str | None = None
    ray_tmpdir: str | None = None
    dist_timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self):
        if self.cpu_threads < 1:
            raise SynthVLMError(f"cpu_threads must be a positive integer, got {self.cpu_threads}")
        if self.workers is not None and self.workers < 1:
            raise SynthVLMError(f"workers must be a positive integer, got {self.workers}")

    @classmethod
    def from_env(cls, **given) -> BackendOptions:
        """The options a user set in the environment (SYNTHVLM_CPU_THREADS, SYNTHVLM_RAY_WORKERS,
        SYNTHVLM_RAY_ADDRESS or Ray's RAY_ADDRESS, SYNTHVLM_RAY_TMPDIR, SYNTHVLM_DIST_TIMEOUT),
        overridden by the `given` ones that are not None (command-line flags)."""
        workers = os.environ.get(WORKERS_ENV)
        if workers is not None and (not workers.isdigit() or int(workers) < 1):
            raise SynthVLMError(f"{WORKERS_ENV} must be a positive integer, got {workers!r}")
        env = {
            "cpu_threads": cpu_threads_from_env(),
            "workers": int(workers) if workers else None,
            "ray_address": os.environ.get(ADDRESS_ENV) or os.environ.get("RAY_ADDRESS") or None,
            "ray_tmpdir": os.environ.get(TMPDIR_ENV) or None,
            "dist_timeout_s": float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)),
        }
        return cls(**{**env, **{k: v for k, v in given.items() if v is not None}})


class Backend(Protocol):
    """What the build needs from an execution backend."""

    name: str

    def is_main_process(self) -> bool:
        """Whether this process runs the build's global steps (a stage's prepare, manifests, export)."""

    def wait_for_everyone(self) -> None:
        """A barrier across the build's processes (nothing to wait for with one driver)."""

    def broadcast(self, obj):
        """The main process's `obj` on every process (a barrier too); one driver: `obj` itself."""

    def run_stage(self, stage, ctx, units, progress: bool = True) -> int:
        """Run the stage's pending units and return once every process is done; returns how many ran here."""


def pending(ctx, units):
    """Units without a complete, checksum-verified shard (resume redoes only these)."""
    return [u for u in units if not ctx.store.is_complete(u)]



def run_units(stage, ctx, units, cpu_threads: int, desc: str | None = None, progress: bool = True) -> int:
    """Run `units` (already pending) of `stage` in this process; returns how many ran.

    The stage is set up once (its models load once), under the pinned CPU thread count when it
    computes on the CPU, and each unit's table is written as its shard before the next starts.
    """
    if not units:
        return 0
    with pinned_threads(stage.device(ctx), cpu_threads):
        stage.setup(ctx)
        for unit in tqdm(units, desc=desc or stage.name, unit="shard", disable=not progress):
            ctx.store.write(unit, stage.run(ctx, unit))
    return len(units)


__all__ = ["CPU_THREADS_ENV", "Backend", "BackendOptions", "pending", "run_units"]
