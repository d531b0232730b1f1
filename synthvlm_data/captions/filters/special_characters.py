"""Share of special characters (Data-Juicer special_characters_filter; SynthVLM Table 1:
[0.165, 0.420])."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from synthvlm_data.captions.filters.base import RuleFilter, RuleStep
from synthvlm_data.captions.filters.text import special_char_ratio


class SpecialCharactersFilter(RuleFilter):
    """Share of special characters (punctuation, digits, whitespace, symbols/emoji), as in
    Data-Juicer special_characters_filter. Whitespace counts, hence the non-zero minimum."""

    card_note: ClassVar[str] = (
        "special_characters: SynthVLM's Table 1 keeps captions whose share of special characters is in "
        "[0.165, 0.420], counting whitespace and punctuation as Data-Juicer does; the lower bound also drops "
        "plain captions with long words and few spaces (\"A chef slicing vegetables in a busy restaurant "
        "kitchen.\" scores 0.164): 6.6% of the 272 captions shipped with the tiny recipe, 1.3% of the world's "
        "true captions.")

    type: Literal["special_characters"]
    min_ratio: float = Field(default=0.16534802, ge=0.0, le=1.0, description="SynthVLM Table 1.")
    max_ratio: float = Field(default=0.42023757, ge=0.0, le=1.0, description="SynthVLM Table 1.")

    def step(self) -> RuleStep:
        return RuleStep(self, special_char_ratio, self.min_ratio, self.max_ratio,
                        {"min_ratio": self.min_ratio, "max_ratio": self.max_ratio})
