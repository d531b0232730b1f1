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

from synthvlm_data.captions.models import ModelCache, resolve
from synthvlm_data.errors import ModelUnavailableError, one_line


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


def load_clip(ref, role: str, device: str):
    """(model, preprocess, tokenizer) via synthvlm_data.models, which owns open_clip loading."""
    from synthvlm_data import models as M

    M.check_available(ref, role)
    return M.load_clip_scorer(ref, device)


class ClipSimilarityStep(_ImageStep):
    def __init__(self, cfg, models: ModelCache, device: str = "cpu"):
        super().__init__(cfg)
        key = ("clip", cfg.model.id, cfg.model.revision, device)
        self.model, self.preprocess, self.tokenizer = models.get(
            key, lambda: load_clip(cfg.model, f"captions filter '{cfg.label}'", device))
        self.device = device
        self.params = {"type": cfg.type, "model": cfg.model.id, "revision": cfg.model.revision,
                       "min_similarity": cfg.min_similarity, "max_similarity": cfg.max_similarity}

    @torch.inference_mode()
    def score(self, images, captions) -> np.ndarray:
        x = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        t = self.tokenizer(list(captions)).to(self.device)
        fi = torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)
        ft = torch.nn.functional.normalize(self.model.encode_text(t).float(), dim=-1)
        return (fi * ft).sum(-1).cpu().numpy()

    def passes(self, v: float) -> bool:
        return self.cfg.min_similarity <= v <= self.cfg.max_similarity


class BlipItmStep(_ImageStep):
    """P(match) from BLIP's image-text matching head (`BlipForImageTextRetrieval`, use_itm_head)."""

    def __init__(self, cfg, models: ModelCache, device: str = "cpu"):
        super().__init__(cfg)
        from transformers import BlipForImageTextRetrieval, BlipProcessor

        role = f"captions filter '{cfg.label}'"
        folder, _ = resolve(cfg.model, role)

        def build():
            try:
                return (BlipForImageTextRetrieval.from_pretrained(folder, use_safetensors=True).eval().to(device),
                        BlipProcessor.from_pretrained(folder))
            except Exception as err:
                raise ModelUnavailableError(f"cannot load {role} model '{cfg.model.id}': {one_line(err)}") from None

        self.model, self.processor = models.get(("blip", cfg.model.id, cfg.model.revision), build)
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
