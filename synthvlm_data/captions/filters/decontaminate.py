"""Drop captions that overlap evaluation text (GPT-3's 13-gram contamination rule; `synthvlm_data.decontam`).

Runs before any image exists, so it checks captions only; `synthvlm decontaminate DIR` checks a
built dataset's captions and images (perceptual hash) and writes the card's contamination report.
"""

from __future__ import annotations

from typing import Literal

from synthvlm_data.captions.filters.base import RuleFilter, RuleStep
from synthvlm_data.decontam import TextDecontamConfig, build_index


class DecontaminateFilter(RuleFilter, TextDecontamConfig):
    """1 if the caption shares an n-gram (or a whole short text, or an exact text) with an evaluation
    set, else 0; kept when 0."""

    type: Literal["decontaminate"]
    card_note = ("decontaminate: captions sharing a 13-gram (or a whole short text) with an evaluation set "
                 "were removed (GPT-3's rule), so the dataset does not teach the benchmark's answers.")

    def step(self) -> RuleStep:
        cfg = TextDecontamConfig.model_validate(self.model_dump(include=set(TextDecontamConfig.model_fields)))
        index = build_index(cfg, images=False)  # once per run: the caption stage builds its steps once
        checked = "; ".join(f"{s['name']} ({s['captions']} texts)" for s in index.sets)
        return RuleStep(self, lambda t: 0.0 if index.caption_hit(t) is None else 1.0, 0.0, 0.0,
                        {"ngram": self.ngram, "min_ngram": self.min_ngram, "minhash_threshold": self.minhash_threshold,
                         "checked": checked})
