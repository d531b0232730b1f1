"""`datasets` builders for synthvlm-data recipes (used directly; never published as a script)."""

from builders.synthvlm import SynthVLM, SynthVLMConfig

__all__ = ["SynthVLM", "SynthVLMConfig"]
