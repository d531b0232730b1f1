"""`--push-to-hub`: publish a finished model folder through the project's publishing code.

Only the model itself is published (safetensors weights, configs, processor, card, loss curve,
training log); trainer checkpoints, tracker logs and pickles under the output dir stay local. They are left out by staging
the top-level files into a temporary folder of hard links (copies across file systems).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from synthvlm_data.training.errors import SynthVLMError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")  # training_args.bin etc.: never published


def publishable_files(output_dir: Path) -> list[Path]:
    """Top-level files of the model folder, without hidden files and pickles (subfolders stay local)."""
    return sorted(
        p for p in Path(output_dir).iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(PICKLE_SUFFIXES)
    )


def push_model_folder(output_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                      dry_run: bool = False):
    """Publish `output_dir` as a model repo via `synthvlm_data.hub.publish_folder` (imported lazily)."""
    output_dir = Path(output_dir)
    if not (output_dir / "config.json").is_file() or not (output_dir / "README.md").is_file():
        raise SynthVLMError(f"{output_dir} is not a finished model folder (config.json and README.md expected)")
    try:
        from synthvlm_data import hub
    except ImportError as err:
        raise SynthVLMError(f"--push-to-hub needs synthvlm_data.hub, which cannot be imported ({err})") from None
    staging = Path(tempfile.mkdtemp(prefix=f".publish-{output_dir.name}-", dir=output_dir.parent))
    try:
        for src in publishable_files(output_dir):
            try:
                os.link(src, staging / src.name)
            except OSError:
                shutil.copy2(src, staging / src.name)
        return hub.publish_folder(staging, repo_id, repo_type="model", private=private, revision=revision,
                                  dry_run=dry_run)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
