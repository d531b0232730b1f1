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

from synthvlm_data.training.errors import SynthVLMError

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
