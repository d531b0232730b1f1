"""Character repetition (Data-Juicer character_repetition_filter; SynthVLM Table 1: rep_len 10,
<= 0.0937)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

from pydantic import Field

from synthvlm_data.captions.filters.base import RepetitionFilter


def char_repetition_ratio(text: str, rep_len: int = 10) -> float:
    """Share of all char n-grams covered by the sqrt(#distinct n-grams) most frequent repeated ones."""
    n_grams = len(text) - rep_len + 1
    if n_grams <= 0:
        return 0.0
    freq = Counter(text[i : i + rep_len] for i in range(n_grams))
    counts = sorted(freq.values(), reverse=True)
    n_once = sum(1 for c in counts if c == 1)
    n_rep = min(int(math.sqrt(len(counts))), len(counts) - n_once)
    return sum(counts[:n_rep]) / n_grams


class CharRepetitionFilter(RepetitionFilter):
    """Data-Juicer character_repetition_filter: mass of the sqrt(#distinct) most frequent char
    n-grams among all char n-grams."""

    type: Literal["char_repetition"]
    rep_len: int = Field(default=10, ge=1, description="SynthVLM Table 1: rep_len 10.")
    min_ratio: float = Field(default=0.0, ge=0.0, le=1.0)
    max_ratio: float = Field(default=0.09373663, ge=0.0, le=1.0, description="SynthVLM Table 1.")

    ratio = staticmethod(char_repetition_ratio)
