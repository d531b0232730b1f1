"""Devices, dtypes, seeded weight building and CPU thread pinning: one place for every model family.

CPU float results depend on the number of intra-op threads (a different reduction order moves a
pixel by one level now and then), so CPU work runs with a pinned thread count: the build's stages
and training with `SYNTHVLM_CPU_THREADS` (default 1), SSIM with one thread. Keep it equal across
runs you compare or resume; GPU runs are unaffected.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterator

import torch

from synthvlm_data.errors import SynthVLMError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CPU_THREADS_ENV = "SYNTHVLM_CPU_THREADS"


def resolve_device(device: str | None) -> str:
    """The device asked for, else `cuda` when a GPU is visible, else `cpu`."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def torch_dtype(name: str, device: str) -> torch.dtype:
    """A config's dtype name on `device`; `auto` is bfloat16 on CUDA and float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return DTYPES[name]


def compute_dtype(name: str, device: str) -> torch.dtype:
    """Like `torch_dtype`, but a CPU always computes in float32: fp16 there is slow and partly
    unsupported (diffusion pipelines)."""
    return torch.float32 if device == "cpu" else torch_dtype(name, device)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for building weights without leaking RNG state to the caller."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def cpu_threads_from_env() -> int:
    """`SYNTHVLM_CPU_THREADS` (default 1): the intra-op threads of CPU stages and CPU training."""
    raw = os.environ.get(CPU_THREADS_ENV, "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise SynthVLMError(f"{CPU_THREADS_ENV} must be a positive integer, got {raw!r}")
    return n


@contextlib.contextmanager
def pinned_threads(device: str, cpu_threads: int) -> Iterator[None]:
    """Run a block with `cpu_threads` intra-op threads if it computes on the CPU (`device`), restored
    afterwards; other devices leave the count alone. Every backend runs a CPU stage this way, so a unit
    gives the same bytes whichever process runs it."""
    with torch_threads(cpu_threads if device == "cpu" else None):
        yield


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch CPU threads, then restore the previous count (None: leave it).

    With torch's OpenMP backend the setting is per calling thread, so torch work already running
    in other threads keeps its own.
    """
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"num_threads must be a positive integer or None, got {n!r}")
    previous = torch.get_num_threads()
    if previous == n:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
