"""Share of flagged words (Data-Juicer flagged_words_filter, en; SynthVLM Table 1: <= 0.0)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from synthvlm_data.captions.filters.base import RuleFilter, RuleStep
from synthvlm_data.captions.filters.text import words
from synthvlm_data.errors import InputDataError


def flagged_word_ratio(text: str, flagged: frozenset[str]) -> float:
    ws = words(text)
    return sum(1 for w in ws if w in flagged) / len(ws) if ws else 0.0


@lru_cache(maxsize=8)
def load_word_list(path: str) -> frozenset[str]:
    from synthvlm_data.data import resolve_path

    p = resolve_path(path)
    if not p.is_file():
        raise InputDataError(f"flagged-words list {p} does not exist; fix `words_file` in the recipe")
    out = set()
    with p.open(encoding="utf-8") as f:
        for line in f:
            w = line.split("#", 1)[0].strip().lower()
            if w:
                out.add(w)
    return frozenset(out)


class FlaggedWordsFilter(RuleFilter):
    """Share of words found in a flagged-words list (Data-Juicer flagged_words_filter, en)."""

    type: Literal["flagged_words"]
    words_file: str = Field(
        default="package://flagged_words_en.txt",
        description="One lower-case word or phrase per line; `#` comments.",
    )
    max_ratio: float = Field(default=0.0, ge=0.0, le=1.0, description="SynthVLM Table 1: <= 0.0.")

    def step(self) -> RuleStep:
        flagged = load_word_list(self.words_file)
        return RuleStep(self, lambda t: flagged_word_ratio(t, flagged), 0.0, self.max_ratio,
                        {"words_file": self.words_file, "n_words": len(flagged), "max_ratio": self.max_ratio})
