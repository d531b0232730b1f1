"""Errors a user can act on.

Every error raised for bad input or an unavailable resource derives from `SynthVLMError`; the CLI
prints its message on one line and exits non-zero, without a traceback. The message must say what
is wrong, where, and what to do.
"""

from __future__ import annotations


class SynthVLMError(Exception):
    """Base class of user-facing errors (the CLI prints these without a traceback)."""

    exit_code = 2


class RecipeError(SynthVLMError):
    """A recipe file is missing, unparsable, or does not match the schema."""


class InputDataError(SynthVLMError):
    """An input file (captions, concepts, images, dataset) cannot be used."""


class ModelUnavailableError(SynthVLMError):
    """A model cannot be loaded (offline, missing local path, gated, no such id)."""

    exit_code = 3


class ShardError(SynthVLMError):
    """The shard store on disk is inconsistent in a way resume cannot repair on its own."""


class WorkDirLockedError(SynthVLMError):
    """Another build holds the work directory."""
