"""Exact and near-duplicate removal, streamed in input order: the first occurrence wins.

Exact: captions equal after lower-casing and collapsing whitespace and punctuation (a 16-byte
digest per kept caption). Near: sentence-embedding cosine >= threshold against every caption kept
so far (exact search, blockwise matrix products; O(N^2), fine up to a few 100K captions; use an
ANN index beyond that).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(caption: str) -> str:
    return " ".join(_NON_WORD.sub(" ", caption.lower()).split())


def digest(caption: str) -> bytes:
    return hashlib.blake2b(normalise(caption).encode(), digest_size=16).digest()


class ExactDedup:
    def __init__(self):
        self.seen: dict[bytes, str] = {}

    def check(self, caption: str, ident: str) -> str | None:
        """None if new (and remember it), else the id of the earlier identical caption."""
        d = digest(caption)
        if d in self.seen:
            return self.seen[d]
        self.seen[d] = ident
        return None


class NearDedup:
    """Keeps the embeddings of kept captions; `filter` returns, per candidate, None (kept) or
    (cosine, id of the kept caption it duplicates)."""

    BLOCK = 8192

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.blocks: list[np.ndarray] = []
        self.ids: list[str] = []
        self._open: list[np.ndarray] = []

    def _flush(self) -> None:
        if self._open:
            new = np.stack(self._open)
            if self.blocks and len(self.blocks[-1]) < self.BLOCK:
                self.blocks[-1] = np.concatenate([self.blocks[-1], new])
            else:
                self.blocks.append(new)
            self._open = []

    def filter(self, emb: np.ndarray, idents: list[str]) -> list[tuple[float, str] | None]:
        self._flush()
        n = len(idents)
        best = np.full(n, -np.inf, dtype=np.float32)
        arg = np.full(n, -1, dtype=np.int64)
        offset = 0
        for block in self.blocks:
            sims = emb @ block.T
            j = sims.argmax(1)
            v = sims[np.arange(n), j]
            better = v > best
            best[better], arg[better] = v[better], j[better] + offset
            offset += len(block)
        out: list[tuple[float, str] | None] = []
        for i in range(n):
            b, a = float(best[i]), int(arg[i])
            if self._open:  # captions of this batch kept before this one
                own = np.stack(self._open) @ emb[i]
                k = int(own.argmax())
                if float(own[k]) > b:
                    b, a = float(own[k]), offset + k
            if b >= self.threshold:
                out.append((b, self.ids[a]))
            else:
                out.append(None)
                self._open.append(emb[i])
                self.ids.append(idents[i])
        self._flush()
        return out
