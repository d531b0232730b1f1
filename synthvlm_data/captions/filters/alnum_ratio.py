"""Share of alphanumeric characters (Data-Juicer alphanumeric_filter; SynthVLM Table 1: >= 0.60)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synthvlm_data.captions.filters.base import RuleFilter, RuleStep


def alnum_ratio(text: str) -> float:
    """Alphanumeric characters / characters."""
    return sum(map(str.isalnum, text)) / len(text) if text else 0.0


class AlnumRatioFilter(RuleFilter):
    """Share of alphanumeric characters (Data-Juicer alphanumeric_filter, no tokenization)."""

    type: Literal["alnum_ratio"]
    min_ratio: float = Field(default=0.60, ge=0.0, le=1.0, description="SynthVLM Table 1: >= 0.60.")
    max_ratio: float = Field(default=1.0, ge=0.0, le=1.0)

    def step(self) -> RuleStep:
        return RuleStep(self, alnum_ratio, self.min_ratio, self.max_ratio,
                        {"min_ratio": self.min_ratio, "max_ratio": self.max_ratio})
