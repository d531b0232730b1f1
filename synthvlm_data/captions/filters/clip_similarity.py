"""CLIP similarity between a caption and its ORIGINAL image (SynthVLM Table 1: >= 0.28), with the
score stage's open_clip scorer."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from synthvlm_data.captions.filters.base import BuildContext, Filter, ImageStep
from synthvlm_data.models.refs import ModelRef


class ClipSimilarityFilter(Filter):
    """Cosine similarity between the caption and its ORIGINAL image (open_clip)."""

    type: Literal["clip_similarity"]
    model: ModelRef = Field(
        default=ModelRef(id="ViT-B-32", revision="openai"),
        description="open_clip arch + pretrained tag (= HF openai/clip-vit-base-patch32, the "
        "paper's model), a Hub open_clip repo, or tiny:clip.",
    )
    min_similarity: float = Field(default=0.28, ge=-1.0, le=1.0, description="SynthVLM Table 1: >= 0.28.")
    max_similarity: float = Field(default=1.0, ge=-1.0, le=1.0)
    batch_size: int = Field(default=32, ge=1)
    on_missing_image: Literal["error", "keep", "drop"] = Field(
        default="error", description="Captions without a readable original image: `error` (default: the "
        "build stops naming the folder and how many are missing), or `keep` / `drop` them (counted as `no_image`).")

    def models(self, captions) -> list[tuple[str, ModelRef | None]]:
        return [(self.role, self.model)]

    def build(self, ctx: BuildContext) -> ClipSimilarityStep:
        return ClipSimilarityStep(self, ctx.models, ctx.device)


class ClipSimilarityStep(ImageStep):
    """The CLIP cosine of the caption and its original image: the score stage's `ClipScorer`,
    without the CLIPScore text prefix."""

    def __init__(self, cfg: ClipSimilarityFilter, models, device: str = "cpu"):
        super().__init__(cfg)
        from synthvlm_data.config import ClipScoreConfig
        from synthvlm_data.models.preflight import check_available
        from synthvlm_data.scoring.clipscore import ClipScorer

        # fp32 on every device: a threshold on the cosine keeps the same captions wherever it runs
        scorer_cfg = ClipScoreConfig(model=cfg.model, text_prefix="", batch_size=cfg.batch_size, precision="fp32")

        def build() -> ClipScorer:
            check_available(cfg.model, cfg.role)
            return ClipScorer(scorer_cfg, device, role=cfg.role)

        self.scorer = models.get(("clip", cfg.model.id, cfg.model.revision, device, cfg.batch_size), build)
        self.params = {"type": cfg.type, "model": cfg.model.id, "revision": cfg.model.revision,
                       "min_similarity": cfg.min_similarity, "max_similarity": cfg.max_similarity}

    def score(self, images, captions) -> np.ndarray:
        return self.scorer(images, list(captions))

    def passes(self, v: float) -> bool:
        return self.cfg.min_similarity <= v <= self.cfg.max_similarity
