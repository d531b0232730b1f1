"""Regular-expression filter: URLs and shop spam (not in SynthVLM's Table 1)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from synthvlm_data.captions.filters.base import RuleFilter, RuleStep

def compile_patterns(patterns: list[str], where: str) -> list[re.Pattern]:
    """The compiled patterns; an invalid one is a ValueError naming it (a recipe error)."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as err:
            raise ValueError(f"{where}: {p!r} is not a valid regex ({err})") from None
    return out


SPAM_PATTERNS = [
    r"(?i)\b(?:https?://|www\.)\S+",
    r"(?i)\b[\w-]+\.(?:com|net|org|biz|info|ru|cn)\b",
    r"(?i)\b(?:click here|buy now|free shipping|best deals?|order now|discount code)\b",
]


class RegexFilter(RuleFilter):
    """Drop captions matching any pattern (URLs, shop spam). Not in SynthVLM's Table 1: an extra
    step for web captions, in the spirit of Data-Juicer's link cleaners."""

    type: Literal["regex"]
    patterns: list[str] = Field(default_factory=lambda: list(SPAM_PATTERNS), min_length=1,
                                description="Python `re` patterns; a match drops the caption.")

    @model_validator(mode="after")
    def _compile(self) -> RegexFilter:
        compile_patterns(self.patterns, "regex filter")
        return self

    def step(self) -> RuleStep:
        pats = compile_patterns(self.patterns, "regex filter")
        return RuleStep(self, lambda t: float(any(p.search(t) for p in pats)), 0.0, 0.0, {"patterns": list(self.patterns)})
