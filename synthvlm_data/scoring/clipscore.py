"""CLIPScore with open_clip, as the official SynthVLM code computes it.

Text is prefixed with "A photo depicts " (the CLIPScore paper's prompt) and truncated to CLIP's
77 tokens; images go through open_clip's eval preprocessing (bicubic resize + center crop +
normalise). We store the raw cosine; `clipscore_scaled` gives the CLIPScore paper's
2.5 * max(cos, 0) for reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from synthvlm_data.config import ClipScoreConfig
from synthvlm_data.models import load_clip_scorer, resolve_device


def clipscore_scaled(cos: np.ndarray, w: float = 2.5) -> np.ndarray:
    return w * np.maximum(cos, 0.0)


class ClipScorer:
    def __init__(self, cfg: ClipScoreConfig, device: str | None = None):
        self.cfg = cfg
        self.device = resolve_device(device)
        self.model, self.preprocess, self.tokenizer = load_clip_scorer(cfg.model, self.device)

    @torch.inference_mode()
    def __call__(self, images: Sequence[Image.Image], captions: Sequence[str]) -> np.ndarray:
        """Raw cosine similarity of each (image, caption) pair, float64 of shape (N,)."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        out = np.empty(len(images), dtype=np.float64)
        bs = self.cfg.batch_size
        for start in range(0, len(images), bs):
            imgs = images[start : start + bs]
            caps = captions[start : start + bs]
            pixels = torch.stack([self.preprocess(im.convert("RGB")) for im in imgs]).to(self.device)
            tokens = self.tokenizer([self.cfg.text_prefix + c for c in caps]).to(self.device)
            img_emb = self.model.encode_image(pixels, normalize=True).float()
            txt_emb = self.model.encode_text(tokens, normalize=True).float()
            out[start : start + len(imgs)] = (img_emb * txt_emb).sum(-1).double().cpu().numpy()
        return out
