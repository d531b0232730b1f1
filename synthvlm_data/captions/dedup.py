"""Exact and near-duplicate removal, streamed in input order: the first occurrence wins.

Exact: captions equal after lower-casing and collapsing whitespace and punctuation (a 16-byte
digest per kept caption). Near: sentence-embedding cosine >= threshold against every caption kept
so far (exact search, blockwise matrix products; O(N^2) time, fine up to a few 100K captions; use an
ANN index beyond that).

Both indices live in memory, or with a `path` on disk (`spill.DigestIndex`'s SQLite table; closed
blocks of 8192 embeddings as .npy files, read one at a time), so that memory does not grow with the
number of kept captions. The decisions are the same either way: the blocks are the same arrays.

Looking up and registering are separate (`find`/`add`, `NearBatch.check`/`add`) so a caller with
steps after dedup (judge, limit) registers a caption only once it is really kept: a caption is
never dropped as a duplicate of one that is absent from the output. `check` / `filter` do both
at once, for callers with nothing after dedup.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from synthvlm_data.captions.spill import DigestIndex

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalise(caption: str) -> str:
    return " ".join(_NON_WORD.sub(" ", caption.lower()).split())


def digest(caption: str) -> bytes:
    return hashlib.blake2b(normalise(caption).encode(), digest_size=16).digest()


class ExactDedup:
    """Digests of kept captions. Each method takes the caption, or its `digest` to save computing it
    again (the reduce computes it once per row)."""

    def __init__(self, path: Path | None = None):
        self.seen = DigestIndex(path)

    def prefetch(self, digests: Iterable[bytes]) -> None:
        """Look up a batch of digests at once (an index on disk answers `find` for them from memory)."""
        if self.seen.on_disk:
            self.seen.prefetch(digests)

    def find(self, caption: str, d: bytes | None = None) -> str | None:
        """The id of the registered identical caption, or None. Registers nothing."""
        return self.seen.get(digest(caption) if d is None else d)

    def add(self, caption: str, ident: str, d: bytes | None = None) -> None:
        """Register a kept caption (the first registration of a text wins)."""
        self.seen.put(digest(caption) if d is None else d, ident)

    def check(self, caption: str, ident: str) -> str | None:
        """None if new (and remember it), else the id of the earlier identical caption."""
        d = digest(caption)
        dup = self.find(caption, d)
        if dup is None:
            self.add(caption, ident, d)
        return dup

    def close(self) -> None:
        self.seen.close()


class NearDedup:
    """Keeps the embeddings of kept captions; `filter` returns, per candidate, None (kept) or
    (cosine, id of the kept caption it duplicates).

    Embeddings are held in blocks: the last one grows until it has `BLOCK` rows, then a new one
    starts. With `path` (a folder), a full block is written there (`block-NNNNN.npy` and its ids)
    and read again for each batch, so memory holds one block however many are kept."""

    BLOCK = 8192

    def __init__(self, threshold: float, path: Path | None = None):
        self.threshold = threshold
        self.path = Path(path) if path is not None else None
        self.blocks: list[np.ndarray] = []  # the blocks in memory (with `path`: the last one, not full)
        self.ids: list[str] = []  # the ids of the rows in memory (with `path`: of the last block)
        self._open: list[np.ndarray] = []
        self._disk_sizes: list[int] = []  # rows of each block written to `path`
        self._ids_cache: tuple[int, list[str]] = (-1, [])
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)

    @property
    def _disk_rows(self) -> int:
        return sum(self._disk_sizes)

    def _flush(self) -> None:
        if self._open:
            new = np.stack(self._open)
            if self.blocks and len(self.blocks[-1]) < self.BLOCK:
                self.blocks[-1] = np.concatenate([self.blocks[-1], new])
            else:
                self.blocks.append(new)
            self._open = []
        if self.path is not None and self.blocks and len(self.blocks[-1]) >= self.BLOCK:
            block = self.blocks.pop()
            k = len(self._disk_sizes)
            np.save(self.path / f"block-{k:05d}.npy", block)
            (self.path / f"block-{k:05d}.ids.json").write_text(json.dumps(self.ids[: len(block)]))
            self.ids = self.ids[len(block):]
            self._disk_sizes.append(len(block))

    def iter_blocks(self):
        """Every closed block then the one in memory, in order."""
        for k in range(len(self._disk_sizes)):
            yield np.load(self.path / f"block-{k:05d}.npy")
        yield from self.blocks

    def id_at(self, position: int) -> str:
        """The id of the `position`-th registered caption."""
        disk = self._disk_rows
        if position >= disk:
            return self.ids[position - disk]
        k = 0
        while position >= self._disk_sizes[k]:
            position -= self._disk_sizes[k]
            k += 1
        if self._ids_cache[0] != k:  # hits cluster in time: keep the last block's ids
            self._ids_cache = (k, json.loads((self.path / f"block-{k:05d}.ids.json").read_text()))
        return self._ids_cache[1][position]

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
        for block in index.iter_blocks():
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
        return (b, self.index.id_at(a)) if b >= self.index.threshold else None

    def add(self, i: int, ident: str) -> None:
        """Register candidate i as kept."""
        self.index._open.append(self.emb[i])
        self.index.ids.append(ident)
