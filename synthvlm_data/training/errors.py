"""Training errors a user can act on (all `SynthVLMError`s: printed on one line, non-zero exit)."""

from __future__ import annotations

from synthvlm_data.errors import InputDataError, ModelUnavailableError, SynthVLMError

__all__ = ["InputDataError", "ModelUnavailableError", "SynthVLMError", "TrainConfigError", "CheckpointError"]


class TrainConfigError(SynthVLMError):
    """A training config (YAML file or command-line override) is missing, unparsable or invalid."""


class CheckpointError(SynthVLMError):
    """A checkpoint to resume from or a stage-1 model to start stage 2 from cannot be used."""
