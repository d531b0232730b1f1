"""The Hugging Face Hub: check a folder is publishable (`validate`), then publish it (`publish`).

`synthvlm publish` and `train/*.py --push-to-hub` share both, so the rule of what a repo receives
(datasets: card + shards + plots; models: safetensors, configs, processor, card, never pickles or
trainer/tracker state) is written once.
"""

from __future__ import annotations

from synthvlm_data.errors import SynthVLMError


class HubError(SynthVLMError):
    """Publishing cannot proceed: offline, no or bad token, bad repo id, invalid folder, Hub refusal."""

    exit_code = 4
