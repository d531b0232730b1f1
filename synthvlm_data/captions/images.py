"""Caption-vs-ORIGINAL-image filters (SynthVLM Table 1): open_clip cosine and BLIP ITM.

Only captions whose source carries an image are scored; the others get `None` and the step's
`on_missing_image` decides (counted as `no_image` in the report). Images are opened lazily, one
batch at a time, from a path or a `datasets` {"bytes", "path"} reference.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from synthvlm_data.models.text import ModelCache, load_blip_itm


def open_image(ref) -> Image.Image | None:
    try:
        if isinstance(ref, Image.Image):
            return ref.convert("RGB")
        if isinstance(ref, dict):
            if ref.get("bytes"):
                return Image.open(io.BytesIO(ref["bytes"])).convert("RGB")
            ref = ref.get("path")
        if isinstance(ref, str) and ref:
            with Image.open(ref) as im:
                return im.convert("RGB")
    except (OSError, ValueError):
        return None
    return None


class _ImageStep:
    kind = "image"

    def __init__(self, cfg):
        self.cfg = cfg
        self.label = cfg.label
        self.unreadable = 0

    def values(self, rows: list[dict]) -> list[float | None]:
        out: list[float | None] = [None] * len(rows)
        todo = []
        for i, r in enumerate(rows):
            if r.get("image") is None:
                continue
            im = open_image(r["image"])
            if im is None:
                self.unreadable += 1
                continue
            todo.append((i, im))
        bs = self.cfg.batch_size
        for s in range(0, len(todo), bs):
            part = todo[s : s + bs]
            scores = self.score([im for _, im in part], [rows[i]["caption"] for i, _ in part])
            for (i, _), v in zip(part, scores):
                out[i] = float(v)
        return out


class ClipSimilarityStep(_ImageStep):
    """The CLIP cosine of the caption and its original image: the score stage's `ClipScorer`, without
    the CLIPScore text prefix."""

    def __init__(self, cfg, models: ModelCache, device: str = "cpu"):
        super().__init__(cfg)
        from synthvlm_data.config import ClipScoreConfig
        from synthvlm_data.models.refs import check_available
        from synthvlm_data.scoring.clipscore import ClipScorer

        role = f"captions filter '{cfg.label}'"
        scorer_cfg = ClipScoreConfig(model=cfg.model, text_prefix="", batch_size=cfg.batch_size)

        def build() -> ClipScorer:
            check_available(cfg.model, role)
            return ClipScorer(scorer_cfg, device, role=role)

        self.scorer = models.get(("clip", cfg.model.id, cfg.model.revision, device, cfg.batch_size), build)
        self.params = {"type": cfg.type, "model": cfg.model.id, "revision": cfg.model.revision,
                       "min_similarity": cfg.min_similarity, "max_similarity": cfg.max_similarity}

    def score(self, images, captions) -> np.ndarray:
        return self.scorer(images, list(captions))

    def passes(self, v: float) -> bool:
        return self.cfg.min_similarity <= v <= self.cfg.max_similarity


class BlipItmStep(_ImageStep):
    """P(match) from BLIP's image-text matching head (`BlipForImageTextRetrieval`, use_itm_head)."""

    def __init__(self, cfg, models: ModelCache, device: str = "cpu"):
        super().__init__(cfg)
        role = f"captions filter '{cfg.label}'"
        self.model, self.processor = models.get(("blip", cfg.model.id, cfg.model.revision),
                                                lambda: load_blip_itm(cfg.model, role, device))
        self.device = device
        self.params = {"type": cfg.type, "model": cfg.model.id, "revision": cfg.model.revision,
                       "min_score": cfg.min_score, "max_score": cfg.max_score}

    @torch.inference_mode()
    def score(self, images, captions) -> np.ndarray:
        enc = self.processor(images=images, text=list(captions), padding=True, truncation=True,
                             return_tensors="pt").to(self.device)
        logits = self.model(**enc, use_itm_head=True).itm_score
        return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()

    def passes(self, v: float) -> bool:
        return self.cfg.min_score <= v <= self.cfg.max_score
