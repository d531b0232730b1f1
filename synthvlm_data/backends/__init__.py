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

import importlib

from synthvlm_data.backends.base import (ADDRESS_ENV, CPU_THREADS_ENV, TIMEOUT_ENV, TMPDIR_ENV, WORKERS_ENV, Backend,
                                         BackendOptions, pending, run_units)
from synthvlm_data.errors import SynthVLMError

# Every backend by name: its module and class (imported when chosen: Ray and accelerate are heavy).
# The CLI's --backend offers exactly these.
BACKENDS = {
    "local": ("synthvlm_data.backends.local", "LocalBackend"),
    "accelerate": ("synthvlm_data.backends.accelerate", "AccelerateBackend"),
    "ray": ("synthvlm_data.backends.ray", "RayBackend"),
}


def get_backend(name: str, options: BackendOptions | None = None) -> Backend:
    if name not in BACKENDS:
        raise SynthVLMError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)(options if options is not None else BackendOptions())


__all__ = ["ADDRESS_ENV", "BACKENDS", "CPU_THREADS_ENV", "TIMEOUT_ENV", "TMPDIR_ENV", "WORKERS_ENV", "Backend",
           "BackendOptions", "get_backend", "pending", "run_units"]
