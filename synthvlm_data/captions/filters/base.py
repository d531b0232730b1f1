"""What every caption filter is: a recipe entry (a pydantic model with a literal `type`) that knows
how to build its step and which models that step loads.

A step turns rows into one value per caption (`values`) and keeps a caption when `passes(value)`;
the pipeline counts every kept and dropped caption in the report under the filter's `label`.
Rule filters (`RuleFilter`) are pure functions of the caption text; image filters (`ImageStep`)
score a caption against its ORIGINAL image and give `None` where there is none (the filter's
`on_missing_image` decides, counted as `no_image`).
"""

from __future__ import annotations

import abc
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from PIL import Image
from pydantic import Field

from synthvlm_data.models.refs import ModelRef
from synthvlm_data.schema import StrictModel


@dataclass
class BuildContext:
    """What a filter may use to build its step: the caption stage's config (its default LM), the
    run's loaded models and the device they run on."""

    captions: Any  # CaptionsConfig
    models: Any  # synthvlm_data.models.text.ModelCache
    device: str


class Filter(StrictModel):
    """A caption filter's recipe entry. Subclasses add `type: Literal["<name>"]` and their settings."""

    name: str | None = Field(default=None, description="Label in the report (default: `type`).")
    enabled: bool = True
    # What the dataset card tells a reader about this filter when it dropped captions.
    card_note: ClassVar[str] = ""

    @property
    def label(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]

    @property
    def role(self) -> str:
        """How errors and the model preflight name this filter."""
        return f"captions filter '{self.label}'"

    @abc.abstractmethod
    def build(self, ctx: BuildContext):
        """The step that filters captions (models loaded here, through `ctx.models`)."""

    def models(self, captions) -> list[tuple[str, ModelRef | None]]:
        """(role, model) of every model the step loads; None where the caption stage's default LM
        would be used but the recipe sets none (an error the recipe schema reports)."""
        return []


class RuleStep:
    """A rule filter's step: a statistic of the caption kept when lo <= value <= hi."""

    kind = "rule"

    def __init__(self, cfg: Filter, fn: Callable[[str], float], lo: float, hi: float, params: dict):
        self.cfg, self.fn, self.lo, self.hi = cfg, fn, lo, hi
        self.label = cfg.label
        self.params = {"type": cfg.type, **params}  # type: ignore[attr-defined]

    def value(self, caption: str) -> float:
        return self.fn(caption)

    def values(self, rows: list[dict]) -> list[float]:
        fn = self.fn
        return [fn(r["caption"]) for r in rows]

    def passes(self, v: float) -> bool:
        return self.lo <= v <= self.hi


class RuleFilter(Filter):
    """A filter on a statistic of the caption text alone (no model): synthesis reuses these."""

    @abc.abstractmethod
    def step(self) -> RuleStep:
        """The rule with this entry's thresholds."""

    def build(self, ctx: BuildContext) -> RuleStep:
        return self.step()


class RepetitionFilter(RuleFilter):
    """A rule on a repetition ratio of the caption's n-grams: subclasses declare `rep_len`,
    `min_ratio`, `max_ratio` and `ratio(text, rep_len)`."""

    @staticmethod
    @abc.abstractmethod
    def ratio(text: str, rep_len: int) -> float:
        """The statistic."""

    def step(self) -> RuleStep:
        n, ratio = self.rep_len, self.ratio  # type: ignore[attr-defined]
        return RuleStep(self, lambda t: ratio(t, n), self.min_ratio, self.max_ratio,  # type: ignore[attr-defined]
                        {"rep_len": n, "min_ratio": self.min_ratio, "max_ratio": self.max_ratio})  # type: ignore[attr-defined]


def open_image(ref) -> Image.Image | None:
    """A caption's original image from a path, a PIL image or a `datasets` {"bytes", "path"}
    reference; None when it cannot be read."""
    try:
        if isinstance(ref, Image.Image):
            return ref.convert("RGB")
        if isinstance(ref, dict):
            if ref.get("bytes"):
                return Image.open(io.BytesIO(ref["bytes"])).convert("RGB")
            ref = ref.get("path")
        if isinstance(ref, str) and ref:
            with Image.open(ref) as im:
                return im.convert("RGB")
    except (OSError, ValueError):
        return None
    return None


class ImageStep(abc.ABC):
    """A step scoring (image, caption) pairs; images are opened lazily, one batch at a time."""

    kind = "image"

    def __init__(self, cfg):
        self.cfg = cfg
        self.label = cfg.label
        self.unreadable = 0

    @abc.abstractmethod
    def score(self, images: list[Image.Image], captions: list[str]):
        """One score per pair."""

    @abc.abstractmethod
    def passes(self, v: float) -> bool:
        """Whether a caption with this score is kept."""

    def values(self, rows: list[dict]) -> list[float | None]:
        out: list[float | None] = [None] * len(rows)
        todo = []
        for i, r in enumerate(rows):
            if r.get("image") is None:
                continue
            im = open_image(r["image"])
            if im is None:
                self.unreadable += 1
                continue
            todo.append((i, im))
        bs = self.cfg.batch_size
        for s in range(0, len(todo), bs):
            part = todo[s : s + bs]
            scores = self.score([im for _, im in part], [rows[i]["caption"] for i, _ in part])
            for (i, _), v in zip(part, scores):
                out[i] = float(v)
        return out
