"""Errors a user can act on.

Every error raised for bad input or an unavailable resource derives from `SynthVLMError`; the CLI
prints its message on one line and exits non-zero, without a traceback. The message must say what
is wrong, where, and what to do.
"""

from __future__ import annotations

import os

# The Makefile sets this to `RECIPE=tiny`: hints then name what the user typed (make's variable);
# everywhere else they name the command line's flag.
TINY_HINT_ENV = "SYNTHVLM_TINY_HINT"


def tiny_recipe_hint() -> str:
    """How to switch to the offline `tiny` recipe, in the words of the command that was run."""
    return os.environ.get(TINY_HINT_ENV) or "`--recipe tiny`"


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


def one_line(err: BaseException, limit: int = 160) -> str:
    """'Type: first line of the message' (or just the type for an empty message), for one-line errors."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:limit]}" if lines else type(err).__name__


def os_error_message(err: OSError) -> str:
    """One line for a disk / file-system failure anywhere in a command (full disk, read-only dir).

    Stage shards and exports are written atomically, so whatever was complete before the error is
    still complete, and re-running the command resumes from it.
    """
    where = f" {err.filename}" if err.filename else ""
    return (
        f"file system error on{where}: {err.strerror or err} (errno {err.errno}); complete shards and an "
        "existing dataset folder are kept: fix the disk (free space, permissions) and re-run the same command to resume"
    )


def import_optional(module: str, extra: str, purpose: str):
    """Import a package of an optional extra, or raise one line naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SynthVLMError(f"{purpose} needs the '{module}' package: pip install 'synthvlm-data[{extra}]'") from None
