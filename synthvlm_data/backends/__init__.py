"""Execution backends: who runs which work unit. Every backend writes the same shard files."""

from __future__ import annotations

from synthvlm_data.errors import SynthVLMError

BACKENDS = ("local",)


def get_backend(name: str):
    if name == "local":
        from synthvlm_data.backends import local

        return local
    raise SynthVLMError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
