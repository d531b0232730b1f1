"""Dataset cards: YAML metadata the Hub and `load_dataset` read, plus a body rendered from a
Jinja template in the top-level `cards/` folder."""

from __future__ import annotations

from pathlib import Path

import datasets
import huggingface_hub
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData
from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "cards"


def templates_dir() -> Path:
    if not TEMPLATES_DIR.is_dir():
        raise FileNotFoundError(f"card templates not found in {TEMPLATES_DIR}: install synthvlm-data from a source checkout")
    return TEMPLATES_DIR


def render_template(name: str, **context) -> str:
    env = Environment(loader=FileSystemLoader(templates_dir()), undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.get_template(name).render(**context)


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "10M<n<100M"


def dataset_card_data(
    *, recipe, features: datasets.Features, num_rows: int, num_bytes: int, num_shards: int
) -> DatasetCardData:
    """The card's YAML: license, task, size, `configs:` (data files) and `dataset_info:`."""
    exp = recipe.export
    card_data = DatasetCardData(
        license=exp.license,
        language=list(exp.language),
        task_categories=["image-to-text", "text-to-image"],
        size_categories=[size_category(num_rows)],
        tags=list(exp.tags) + ([] if recipe.profile == "full" else ["tiny-random-models"]),
        pretty_name=exp.pretty_name or exp.name,
    )
    MetadataConfigs({"default": {"data_files": [{"split": "train", "path": "data/train-*.parquet"}]}}).to_dataset_card_data(card_data)
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_bytes=num_bytes, num_examples=num_rows))
    info = DatasetInfo(features=features, splits=splits, dataset_size=num_bytes)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    return card_data


def write_dataset_card(out_dir: Path, card_data: DatasetCardData, **context) -> Path:
    """Render `cards/dataset_card.md.j2` with the YAML header and write README.md."""
    body = render_template(
        "dataset_card.md.j2",
        versions={
            "datasets": datasets.__version__,
            "huggingface_hub": huggingface_hub.__version__,
            **context.pop("versions", {}),
        },
        **context,
    )
    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")
    path = Path(out_dir) / "README.md"
    card.save(path)
    return path
