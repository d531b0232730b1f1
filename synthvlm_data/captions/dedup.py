"""Exact and near-duplicate removal, streamed in input order: the first occurrence wins.

Exact: captions equal after lower-casing and collapsing whitespace and punctuation (a 16-byte
digest per kept caption). Near: sentence-embedding cosine >= threshold against every caption kept
so far (exact search, blockwise matrix products; O(N^2), fine up to a few 100K captions; use an
ANN index beyond that).

Looking up and registering are separate (`find`/`add`, `NearBatch.check`/`add`) so a caller with
steps after dedup (judge, limit) registers a caption only once it is really kept: a caption is
never dropped as a duplicate of one that is absent from the output. `check` / `filter` do both
at once, for callers with nothing after dedup.
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

    def find(self, caption: str) -> str | None:
        """The id of the registered identical caption, or None. Registers nothing."""
        return self.seen.get(digest(caption))

    def add(self, caption: str, ident: str) -> None:
        """Register a kept caption (the first registration of a text wins)."""
        self.seen.setdefault(digest(caption), ident)

    def check(self, caption: str, ident: str) -> str | None:
        """None if new (and remember it), else the id of the earlier identical caption."""
        dup = self.find(caption)
        if dup is None:
            self.add(caption, ident)
        return dup


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

    def batch(self, emb: np.ndarray) -> NearBatch:
        """Start checking the candidates `emb` (in order) against what is registered so far."""
        self._flush()
        return NearBatch(self, emb)

    def filter(self, emb: np.ndarray, idents: list[str]) -> list[tuple[float, str] | None]:
        """Check and register in one go (first wins), for callers with no step after dedup."""
        b = self.batch(emb)
        out: list[tuple[float, str] | None] = []
        for i, ident in enumerate(idents):
            hit = b.check(i)
            if hit is None:
                b.add(i, ident)
            out.append(hit)
        self._flush()
        return out


class NearBatch:
    """One batch of candidates: each is compared with everything registered before the batch (one
    blockwise matrix product, done here) and with the candidates of this batch `add`ed since."""

    def __init__(self, index: NearDedup, emb: np.ndarray):
        self.index, self.emb = index, emb
        n = len(emb)
        self.best = np.full(n, -np.inf, dtype=np.float32)
        self.arg = np.full(n, -1, dtype=np.int64)
        offset = 0
        for block in index.blocks:
            sims = emb @ block.T
            j = sims.argmax(1)
            v = sims[np.arange(n), j]
            better = v > self.best
            self.best[better], self.arg[better] = v[better], j[better] + offset
            offset += len(block)
        self.offset = offset

    def check(self, i: int) -> tuple[float, str] | None:
        """(cosine, id) of the closest registered caption at or above the threshold, else None."""
        b, a = float(self.best[i]), int(self.arg[i])
        if self.index._open:  # captions of this batch added before this one
            own = np.stack(self.index._open) @ self.emb[i]
            k = int(own.argmax())
            if float(own[k]) > b:
                b, a = float(own[k]), self.offset + k
        return (b, self.index.ids[a]) if b >= self.index.threshold else None

    def add(self, i: int, ident: str) -> None:
        """Register candidate i as kept."""
        self.index._open.append(self.emb[i])
        self.index.ids.append(ident)
