"""Execution backends: who runs which work unit. Every backend writes the same shard files.

A backend is a module with
- `run_stage(stage, ctx, units, progress)`: run the stage's *pending* units (those without a
  complete, checksum-verified shard), each written through the run's `ShardStore`;
- `is_main_process()` / `wait_for_everyone()`: where the build's global steps (captions,
  manifests, export) run, and the barrier around them (trivial for one-driver backends).

Stages never know which backend runs them; work units and generation batches are fixed before
any backend sees them, so a run started on one backend can be resumed on another.

CPU float results depend on the number of intra-op threads (a different reduction order moves
a pixel by one level now and then), so every backend runs CPU stages with the same pinned
thread count: `SYNTHVLM_CPU_THREADS` (default 1). Keep it equal across runs you compare or
resume; GPU runs are unaffected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from synthvlm_data.errors import SynthVLMError
from synthvlm_data.models.devices import CPU_THREADS_ENV  # noqa: F401  (documented here)
from synthvlm_data.models.devices import cpu_threads_from_env as cpu_threads

BACKENDS = ("local", "accelerate", "ray")


def get_backend(name: str):
    if name == "local":
        from synthvlm_data.backends import local

        return local
    if name == "accelerate":
        from synthvlm_data.backends import accelerate

        return accelerate
    if name == "ray":
        from synthvlm_data.backends import ray

        return ray
    raise SynthVLMError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")


def runs_on_cpu(ctx) -> bool:
    from synthvlm_data.models.devices import resolve_device

    return resolve_device(ctx.recipe.generate.device) == "cpu"


@contextlib.contextmanager
def pinned_threads(ctx) -> Iterator[None]:
    """Run a CPU stage with `SYNTHVLM_CPU_THREADS` intra-op threads (restored afterwards)."""
    from synthvlm_data.models.devices import torch_threads

    with torch_threads(cpu_threads() if runs_on_cpu(ctx) else None):
        yield


def pending(ctx, units):
    """Units without a complete, checksum-verified shard (resume redoes only these)."""
    return [u for u in units if not ctx.store.is_complete(u)]
