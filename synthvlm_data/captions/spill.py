"""Where the caption stage keeps what grows with the caption count: in memory, or in files.

The caption reduce keeps three things for every caption it has seen or kept: the ids already read
(validation drops a repeated (source, id)), the digests of kept captions (exact dedup) and the kept
rows themselves (with their dedup embedding). In memory these grow without bound (about 1.4 GB at
1M candidates); here each has a second home on disk, chosen by giving a path:

- `DigestIndex`: 16-byte keys, each with a short text value, the first put wins: a dict, or an
  SQLite table (standard library) whose page cache is fixed, so the process's memory stays flat
  however many keys. Lookups are batched: `prefetch(keys)` once per unit of rows, then `get`.
- `KeptRows`: the kept rows in order: a list, or an Arrow IPC stream file written in record batches
  and read back batch by batch.

The two homes give the same answers (tests/test_caption_spill.py checks every step of a reduce both
ways); the build's caption stage uses the files (`stages/captions.py`), a small in-process run
(`run_captions`: the pilot, tests) the memory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

SQLITE_CACHE_KIB = 16384  # the SQLite page cache per index: the memory a disk index may use


class DigestIndex:
    """A map from bytes keys to str values where the first value put for a key wins."""

    def __init__(self, path: Path | None = None):
        self._mem: dict[bytes, str] = {}  # memory: every key; disk: the keys put since the last flush
        self._hits: dict[bytes, str] = {}  # disk: the stored values of the prefetched keys that exist
        self._known: set[bytes] = set()  # disk: the prefetched keys (stored or not)
        self._db = None
        if path is not None:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            for pragma in ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE",
                           f"cache_size=-{SQLITE_CACHE_KIB}", "temp_store=FILE"):
                self._db.execute(f"PRAGMA {pragma}")
            self._db.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")

    @property
    def on_disk(self) -> bool:
        return self._db is not None

    def __len__(self) -> int:
        if self._db is None:
            return len(self._mem)
        return self._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0] + len(self._mem)

    def prefetch(self, keys: Iterable[bytes]) -> None:
        """Write the pending puts and read the stored values of `keys` in a few queries, so that
        `get` of these keys costs no query (a no-op in memory)."""
        if self._db is None:
            return
        self.flush()
        keys = list(dict.fromkeys(keys))
        hits: dict[bytes, str] = {}
        for i in range(0, len(keys), 900):  # under SQLite's default limit of bound parameters
            part = keys[i : i + 900]
            hits.update(self._db.execute(f"SELECT k, v FROM kv WHERE k IN ({','.join('?' * len(part))})", part))
        self._hits, self._known = hits, set(keys)

    def get(self, key: bytes) -> str | None:
        v = self._mem.get(key)
        if v is not None or self._db is None:
            return v
        if key in self._known:
            return self._hits.get(key)
        row = self._db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: bytes, value: str) -> None:
        """Record `value` for `key` unless the key has one already."""
        if self._db is None:
            self._mem.setdefault(key, value)
        elif self.get(key) is None:
            self._mem[key] = value

    def put_many(self, items: Iterable[tuple[bytes, str]], batch: int = 65536) -> None:
        """`put` of many items in order (the first value of a key wins), written in large batches
        without a lookup per item: for loading a log."""
        if self._db is None:
            for k, v in items:
                self._mem.setdefault(k, v)
            return
        self.flush()
        self._hits, self._known = {}, set()
        part: dict[bytes, str] = {}
        for k, v in items:
            part.setdefault(k, v)
            if len(part) >= batch:
                self._insert(part)
                part = {}
        self._insert(part)

    def _insert(self, items: dict[bytes, str]) -> None:
        # INSERT OR IGNORE keeps a stored value; one transaction per batch
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR IGNORE INTO kv VALUES (?, ?)", sorted(items.items()))
        self._db.execute("COMMIT")

    def flush(self) -> None:
        """Write the pending puts to the table (their keys are absent from it: `put` checks)."""
        if self._db is not None and self._mem:
            self._insert(self._mem)
            for k, v in self._mem.items():  # a prefetched key put since: its value is stored now
                if k in self._known:
                    self._hits.setdefault(k, v)
            self._mem = {}

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None
            self._hits, self._known = {}, set()


class KeptRows:
    """The rows the reduce kept, in order: `source`, `source_id`, `caption` and, with near dedup,
    `_emb` (float32). Appended one by one, read back in order once `close`d (disk) or at any time."""

    BATCH = 4096

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self._rows: list[dict] = []  # memory: all rows; disk: the rows not written yet
        self._n = 0
        self._writer = None
        self._schema = None
        self.has_emb: bool | None = None  # every row carries `_emb` (decided by the first row)

    def __len__(self) -> int:
        return self._n

    def append(self, row: dict) -> None:
        if self.has_emb is None:
            self.has_emb = "_emb" in row
        self._rows.append(row)
        self._n += 1
        if self.path is not None and len(self._rows) >= self.BATCH:
            self._write()

    def _table(self, rows: list[dict]):
        import pyarrow as pa

        cols = {"source": [r["source"] for r in rows], "source_id": [str(r["source_id"]) for r in rows],
                "caption": [r["caption"] for r in rows]}
        if self.has_emb:
            emb = np.stack([np.asarray(r["_emb"], dtype=np.float32) for r in rows])
            cols["emb"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
        return pa.table(cols)

    def _write(self) -> None:
        import pyarrow as pa

        if not self._rows:
            return
        table = self._table(self._rows)
        if self._writer is None:
            self._schema = table.schema
            self._writer = pa.ipc.new_stream(pa.OSFile(str(self.path), "wb"), self._schema)
        self._writer.write_table(table)
        self._rows = []

    def close(self) -> None:
        """Write what is pending (disk): the rows can be read from now on."""
        if self.path is not None:
            self._write()
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def batches(self, columns: tuple[str, ...] = ("source", "source_id", "caption")) -> Iterator[dict]:
        """The rows in order as column batches ({column: list}, `emb` as an (n, d) array)."""
        if self.path is None:
            for i in range(0, self._n, self.BATCH):
                part = self._rows[i : i + self.BATCH]
                yield {c: (np.stack([r["_emb"] for r in part]) if c == "emb" else [r[c] for r in part])
                       for c in columns}
            return
        if self._writer is not None or self._rows:
            raise RuntimeError("KeptRows read before close()")
        if self._schema is None:
            return
        import pyarrow as pa

        with pa.OSFile(str(self.path), "rb") as fh:
            for batch in pa.ipc.open_stream(fh):
                out = {}
                for c in columns:
                    col = batch.column(c)
                    out[c] = (col.values.to_numpy().reshape(len(col), -1) if c == "emb" else col.to_pylist())
                yield out

    def __iter__(self) -> Iterator[dict]:
        """Rows as dicts (without the embedding)."""
        if self.path is None:
            yield from self._rows
            return
        for b in self.batches():
            yield from ({"source": s, "source_id": i, "caption": c}
                        for s, i, c in zip(b["source"], b["source_id"], b["caption"]))

    def captions(self) -> Iterator[str]:
        for b in self.batches(("caption",)):
            yield from b["caption"]

    def embeddings_at(self, index: np.ndarray) -> np.ndarray:
        """The dedup embeddings of the rows at the ascending positions `index`, stacked."""
        out, start, k = [], 0, 0
        for b in self.batches(("emb",)):
            emb = b["emb"]
            end = start + len(emb)
            j = k
            while j < len(index) and index[j] < end:
                j += 1
            if j > k:
                out.append(emb[index[k:j] - start])
            k, start = j, end
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class ChainRows:
    """Curated rows then synthetic rows, iterable more than once, with a length."""

    def __init__(self, *parts):
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __iter__(self) -> Iterator[dict]:
        for p in self.parts:
            yield from p
