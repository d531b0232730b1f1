"""CLIPScore with open_clip, as the official SynthVLM code computes it.

Text is prefixed with "A photo depicts " (the CLIPScore paper's prompt, Hessel et al. 2021) and
truncated to CLIP's 77 tokens (start token + 75 BPE tokens + end token, like
`clip.tokenize(truncate=True)` in the official code: a long caption never fails); images go
through open_clip's eval preprocessing (bicubic resize of the short side + center crop +
normalise with the model's mean/std). We store the raw cosine; `clipscore_scaled` gives the
CLIPScore paper's 2.5 * max(cos, 0) for reports.

Every (image, caption) pair is scored: k images of one caption are k pairs. Each distinct caption
is encoded once per call, so best-of-k scoring costs k image encodings but one text encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from synthvlm_data.config import ClipScoreConfig
from synthvlm_data.models.clip import clip_precision, load_clip_scorer
from synthvlm_data.models.devices import resolve_device

# CLIPScore paper (Hessel et al. 2021, Eq. 1): CLIP-S(c, v) = w * max(cos(c, v), 0) with w = 2.5.
CLIPSCORE_W = 2.5


def clipscore_scaled(cos: np.ndarray, w: float = CLIPSCORE_W) -> np.ndarray:
    """The CLIPScore paper's scale, w * max(cos, 0), from raw cosines."""
    return w * np.maximum(np.asarray(cos, dtype=np.float64), 0.0)


class ClipScorer:
    """Raw CLIP cosine of (image, caption) pairs with one open_clip model, in batches."""

    def __init__(self, cfg: ClipScoreConfig, device: str | None = None, role: str = "score.clip.model"):
        self.cfg = cfg
        self.device = resolve_device(device)
        self.precision = clip_precision(cfg.precision, self.device)
        self.model, self.preprocess, self.tokenizer = load_clip_scorer(cfg.model, self.device, role, self.precision)
        # images enter in the weights' dtype (as OpenAI's CLIP casts them); embeddings leave as float32
        self.input_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision, torch.float32)

    def _unit(self, emb: torch.Tensor) -> np.ndarray:
        """float32 L2-normalised rows (normalised after the cast: in fp32 this is open_clip's own
        `normalize=True`, the same bytes; in fp16 it avoids a half-precision norm)."""
        return torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids of prefix + caption, truncated to the model's context (77 for CLIP)."""
        return self.tokenizer([self.cfg.text_prefix + c for c in captions])

    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """open_clip's eval preprocessing of each image, stacked (N, 3, H, W). Per image, so any
        split of the images over threads gives the same tensor."""
        if not images:
            return torch.zeros(0)
        return torch.stack([self.preprocess(im.convert("RGB")) for im in images])

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """L2-normalised image embeddings of preprocessed pixels, float32 (N, D), in `batch_size` chunks."""
        out = []
        bs = self.cfg.batch_size
        for start in range(0, len(pixels), bs):
            x = pixels[start : start + bs].to(self.device, dtype=self.input_dtype)
            out.append(self._unit(self.model.encode_image(x)))
        return np.concatenate(out) if out else np.zeros((0, self._dim()), np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """L2-normalised image embeddings, float32 (N, D)."""
        return self.encode_pixels(self.pixels(images))

    @torch.inference_mode()
    def encode_texts(self, captions: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings of prefix + caption, float32 (N, D)."""
        out = []
        bs = self.cfg.batch_size
        for start in range(0, len(captions), bs):
            tokens = self.tokenize(captions[start : start + bs]).to(self.device)
            out.append(self._unit(self.model.encode_text(tokens)))
        return np.concatenate(out) if out else np.zeros((0, self._dim()), np.float32)

    def _dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else 0

    def __call__(self, images: Sequence[Image.Image], captions: Sequence[str]) -> np.ndarray:
        """Raw cosine similarity of each (image, caption) pair, float64 of shape (N,)."""
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but {len(captions)} captions")
        return self.score_pixels(self.pixels(images), captions)

    def score_pixels(self, pixels: torch.Tensor, captions: Sequence[str]) -> np.ndarray:
        """`__call__` on images already preprocessed (`pixels`), e.g. by worker threads."""
        if len(pixels) != len(captions):
            raise ValueError(f"{len(pixels)} images but {len(captions)} captions")
        if not len(captions):
            return np.zeros(0, dtype=np.float64)
        unique = list(dict.fromkeys(captions))
        index = {c: i for i, c in enumerate(unique)}
        txt = self.encode_texts(unique)[[index[c] for c in captions]]
        img = self.encode_pixels(pixels)
        # Cosine in float64 of the float32 unit vectors (same as the official numpy code).
        return (img.astype(np.float64) * txt.astype(np.float64)).sum(-1)
