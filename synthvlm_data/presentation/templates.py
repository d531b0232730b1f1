"""The one Jinja environment of every card and report. The templates live in the top-level `cards/`
folder, installed as the package `synthvlm_data.card_templates` (so a wheel carries them)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

DATASET_CARD = "dataset_card.md.j2"
MODEL_CARD = "model_card.md.j2"
QUALITY_REPORT = "quality_report.md.j2"


def templates_dir() -> Path:
    """The card templates: `cards/` of the checkout, installed as `synthvlm_data.card_templates`.

    A source checkout's own `cards/` wins: with a checkout on PYTHONPATH next to an editable install
    of another checkout, `synthvlm_data.card_templates` resolves to the other one's templates."""
    checkout = Path(__file__).resolve().parents[2] / "cards"
    if (checkout / DATASET_CARD).is_file():
        return checkout
    return Path(str(resources.files("synthvlm_data.card_templates")))


def md_cell(value: object, limit: int | None = None) -> str:
    """Quote user text (captions) for a Markdown table cell or list item: one line, no HTML, no `|`."""
    text = " ".join(str(value).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def fmt4(stats: dict, key: str = "mean") -> str:
    """A summary statistic to 4 decimals, or '-' for an empty set (`summarize` gives count 0)."""
    return f"{stats[key]:.4f}" if stats.get("count") else "-"


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(templates_dir()),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md_cell"] = md_cell
    env.filters["fmt4"] = fmt4
    return env


def render(template: str, /, **context) -> str:
    """Render a template of cards/ (positional-only: a context may carry a `name` or `template` key)."""
    return environment().get_template(template).render(**context)
