"""Word repetition (Data-Juicer word_repetition_filter; SynthVLM Table 1: rep_len 10, <= 0.0309)."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from synthvlm_data.captions.filters.base import RepetitionFilter
from synthvlm_data.captions.filters.text import words


def word_repetition_ratio(text: str, rep_len: int = 10) -> float:
    """Share of word n-grams that occur more than once."""
    ws = words(text)
    n_grams = len(ws) - rep_len + 1
    if n_grams <= 0:
        return 0.0
    freq = Counter(" ".join(ws[i : i + rep_len]) for i in range(n_grams))
    return sum(c for c in freq.values() if c > 1) / n_grams


class WordRepetitionFilter(RepetitionFilter):
    """Data-Juicer word_repetition_filter: share of word n-grams that occur more than once."""

    type: Literal["word_repetition"]
    rep_len: int = Field(default=10, ge=1, description="SynthVLM Table 1: rep_len 10.")
    min_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    max_ratio: float = Field(default=0.03085751, ge=0.0, le=1.0, description="SynthVLM Table 1.")

    ratio = staticmethod(word_repetition_ratio)
