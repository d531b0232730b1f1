"""`--push-to-hub`: publish a finished model folder through the project's publishing code.

The output dir is handed to `synthvlm_data.hub.publish.publish_folder` as is: that package owns the rule of
what a model repo receives (safetensors weights, configs, processor, card, loss curve, training
log), so trainer checkpoints, tracker logs and pickles stay local here exactly as they do for
`synthvlm publish DIR --repo-type model`.
"""

from __future__ import annotations

from pathlib import Path

from synthvlm_data.training.errors import SynthVLMError


def push_model_folder(output_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                      dry_run: bool = False):
    """Publish `output_dir` as a model repo via `synthvlm_data.hub.publish.publish_folder`."""
    from synthvlm_data.hub import publish  # lazy: huggingface_hub's upload machinery is only needed here

    output_dir = Path(output_dir)
    if not (output_dir / "config.json").is_file() or not (output_dir / "README.md").is_file():
        raise SynthVLMError(f"{output_dir} is not a finished model folder (config.json and README.md expected)")
    return publish.publish_folder(output_dir, repo_id, repo_type="model", private=private, revision=revision,
                              dry_run=dry_run)
