"""Execution backends: who runs which work unit. Every backend writes the same shard files.

A `Backend` runs a stage's *pending* units (those without a complete, checksum-verified shard),
each written through the run's `ShardStore`, and says where the build's global steps (a stage's
`prepare`, manifests, export) run (`is_main_process`) and how processes wait for each other
(`wait_for_everyone`). `get_backend(name, options)` makes one: `local` (one process), `accelerate`
(the ranks of `accelerate launch` / torchrun) or `ray` (a Ray Data actor pool).

Stages never know which backend runs them; work units and generation batches are fixed before
any backend sees them, so a run started on one backend can be resumed on another.

How a backend runs is given explicitly (`BackendOptions`, built by the CLI from its flags; the
environment variables named there are only defaults a user may set). CPU float results depend on
the number of intra-op threads (a different reduction order moves a pixel by one level now and
then), so every backend runs the stages whose device is the CPU with the same pinned thread count
(`cpu_threads`, default 1). Keep it equal across runs you compare or resume; GPU stages are
unaffected.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from synthvlm_data.errors import SynthVLMError
from synthvlm_data.models.devices import CPU_THREADS_ENV, cpu_threads_from_env

BACKENDS = ("local", "accelerate", "ray")
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


def get_backend(name: str, options: BackendOptions | None = None) -> Backend:
    options = options if options is not None else BackendOptions()
    if name == "local":
        from synthvlm_data.backends.local import LocalBackend

        return LocalBackend(options)
    if name == "accelerate":
        from synthvlm_data.backends.accelerate import AccelerateBackend

        return AccelerateBackend(options)
    if name == "ray":
        from synthvlm_data.backends.ray import RayBackend

        return RayBackend(options)
    raise SynthVLMError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")


@contextlib.contextmanager
def pinned_threads(stage, ctx, cpu_threads: int) -> Iterator[None]:
    """Run a stage with `cpu_threads` intra-op threads if it computes on the CPU (restored afterwards)."""
    from synthvlm_data.models.devices import torch_threads

    with torch_threads(cpu_threads if stage.device(ctx) == "cpu" else None):
        yield


def pending(ctx, units):
    """Units without a complete, checksum-verified shard (resume redoes only these)."""
    return [u for u in units if not ctx.store.is_complete(u)]


__all__ = ["BACKENDS", "CPU_THREADS_ENV", "Backend", "BackendOptions", "get_backend", "pending", "pinned_threads"]
