"""BLIP image-text matching against a caption's ORIGINAL image (SynthVLM Table 1: [0.8, 1.0])."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from synthvlm_data.captions.filters.base import BuildContext, Filter, ImageStep
from synthvlm_data.models.refs import ModelRef


class BlipItmFilter(Filter):
    """BLIP image-text matching probability against the caption's original image (transformers)."""

    type: Literal["blip_itm"]
    model: ModelRef = Field(default=ModelRef(id="Salesforce/blip-itm-base-coco"))
    min_score: float = Field(default=0.8, ge=0.0, le=1.0, description="SynthVLM Table 1: [0.8, 1.0].")
    max_score: float = Field(default=1.0, ge=0.0, le=1.0)
    batch_size: int = Field(default=16, ge=1)
    on_missing_image: Literal["error", "keep", "drop"] = Field(
        default="error", description="As for clip_similarity: stop (default), keep or drop captions without an original image.")

    def models(self, captions) -> list[tuple[str, ModelRef | None]]:
        return [(self.role, self.model)]

    def build(self, ctx: BuildContext) -> BlipItmStep:
        return BlipItmStep(self, ctx.models, ctx.device)


class BlipItmStep(ImageStep):
    """P(match) from BLIP's image-text matching head (`BlipForImageTextRetrieval`, use_itm_head)."""

    def __init__(self, cfg: BlipItmFilter, models, device: str = "cpu"):
        super().__init__(cfg)
        from synthvlm_data.models.text import load_blip_itm

        self.model, self.processor = models.get(("blip", cfg.model.id, cfg.model.revision),
                                                lambda: load_blip_itm(cfg.model, cfg.role, device))
        self.device = device
        self.params = {"type": cfg.type, "model": cfg.model.id, "revision": cfg.model.revision,
                       "min_score": cfg.min_score, "max_score": cfg.max_score}

    def score(self, images, captions) -> np.ndarray:
        import torch

        with torch.inference_mode():
            enc = self.processor(images=images, text=list(captions), padding=True, truncation=True,
                                 return_tensors="pt").to(self.device)
            logits = self.model(**enc, use_itm_head=True).itm_score
            return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()

    def passes(self, v: float) -> bool:
        return self.cfg.min_score <= v <= self.cfg.max_score
