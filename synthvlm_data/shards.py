"""The shard store: atomic, checksummed stage outputs under a work directory.

A shard is written to a temporary name, flushed, and renamed into place only when complete; its
SHA-256 is then written (atomically too) to a sidecar manifest entry. A shard counts as complete
only when the file exists *and* matches its recorded checksum, so a run killed at any point, or a
file truncated or corrupted later, is redone on resume and never read as data. Each shard has
its own manifest entry, so many processes can write one stage without coordinating.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from synthvlm_data.errors import ShardError
from synthvlm_data.workunits import WorkUnit

CHECKSUM_SUFFIX = ".sha256"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


PAGE_ROWS = 8  # rows per page of a binary (image / latent) column: the unit a reader streams


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    """Deterministic parquet bytes (fixed writer options; no timestamps in the file).

    Binary columns (images, latents) are written plain, a page per `PAGE_ROWS` rows: dictionary
    encoding would put a whole row group of images into one dictionary page (and the writer
    checks page sizes only every `write_batch_size` rows), so a reader would have to hold a row
    group of 1024-px images, gigabytes, at once. Other columns keep dictionary encoding. Tables
    without a binary column are written exactly as before.
    """
    buf = io.BytesIO()
    binary = {f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)}
    pq.write_table(
        table, buf, compression="zstd", row_group_size=max(1, min(table.num_rows, 1024)),
        use_dictionary=[n for n in table.column_names if n not in binary] if binary else True,
        write_batch_size=PAGE_ROWS if binary else None,
    )
    return buf.getvalue()


def take_rows(path: Path, column: str, rows: Sequence[int]) -> dict[int, object]:
    """Values of one column of a parquet file at some rows, reading only the row groups that hold
    them (a shard of images is large; a report wants a few of them)."""
    f = pq.ParquetFile(path)
    starts = [0]
    for i in range(f.num_row_groups):
        starts.append(starts[-1] + f.metadata.row_group(i).num_rows)
    wanted = sorted(set(rows))
    out: dict[int, object] = {}
    for group in sorted({bisect.bisect_right(starts, r) - 1 for r in wanted}):
        values = f.read_row_group(group, columns=[column]).column(0).to_pylist()
        for r in wanted:
            if starts[group] <= r < starts[group + 1]:
                out[r] = values[r - starts[group]]
    return out


READ_BUFFER = 1 << 20  # bytes: column chunks are read through a buffer this size, never whole


def iter_batches(path: Path, columns: list[str] | None, batch_size: int) -> Iterator[pa.Table]:
    """Consecutive tables of exactly `batch_size` rows (the last may be shorter) of a parquet file,
    whatever its row groups: batch composition never depends on the file layout.

    `buffer_size` makes the reader stream each column chunk through a small buffer instead of
    loading it whole, and no row group is pre-buffered; with `table_to_parquet_bytes`' page layout
    a reader holds one batch plus a page per column.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pending: list[pa.RecordBatch] = []
    held = 0
    with pq.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False) as f:
        for batch in f.iter_batches(batch_size=batch_size, columns=columns, use_threads=False):
            while batch.num_rows:
                take = min(batch_size - held, batch.num_rows)
                pending.append(batch.slice(0, take))
                held, batch = held + take, batch.slice(take)
                if held == batch_size:
                    yield pa.Table.from_batches(pending)
                    pending, held = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


class ShardStore:
    """Shards of every stage of one run, under `root/<stage>/`."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, unit: WorkUnit) -> Path:
        return self.root / unit.stage / f"{unit.name}.parquet"

    def _checksum_path(self, unit: WorkUnit) -> Path:
        p = self.path(unit)
        return p.with_name(p.name + CHECKSUM_SUFFIX)

    def recorded_checksum(self, unit: WorkUnit) -> str | None:
        try:
            return self._checksum_path(unit).read_text().strip() or None
        except FileNotFoundError:
            return None

    def is_complete(self, unit: WorkUnit) -> bool:
        """True only if the shard exists and matches its recorded checksum."""
        expected = self.recorded_checksum(unit)
        path = self.path(unit)
        if expected is None or not path.is_file():
            return False
        return sha256_file(path) == expected

    def write(self, unit: WorkUnit, table: pa.Table) -> str:
        """Write a shard atomically, then its checksum; returns the checksum."""
        data = table_to_parquet_bytes(table)
        digest = hashlib.sha256(data).hexdigest()
        # Drop a stale checksum first: a crash between the two renames must not leave an old
        # checksum next to new data (it would just mismatch and be redone, but be explicit).
        try:
            with contextlib.suppress(FileNotFoundError):
                self._checksum_path(unit).unlink()
            atomic_write_bytes(self.path(unit), data)
            atomic_write_bytes(self._checksum_path(unit), (digest + "\n").encode())
        except OSError as err:
            raise ShardError(
                f"cannot write shard {self.path(unit)}: {err.strerror or err} (errno {err.errno}); "
                "complete shards are kept: fix the disk (space, permissions) and re-run to resume"
            ) from None
        return digest

    def _check(self, unit: WorkUnit) -> None:
        if not self.is_complete(unit):
            raise ShardError(
                f"shard {self.path(unit)} is missing or does not match its checksum; "
                "re-run the build to redo it"
            )

    def read(self, unit: WorkUnit, columns: list[str] | None = None) -> pa.Table:
        self._check(unit)
        return pq.read_table(self.path(unit), columns=columns)

    def iter_batches(self, unit: WorkUnit, columns: list[str] | None, batch_size: int) -> Iterator[pa.Table]:
        """A verified shard as tables of `batch_size` rows (`iter_batches`), read page by page: a
        shard of 1024-px images (a row group of 1024 of them is gigabytes) never sits in memory
        whole, only one batch (plus one page per column) at a time."""
        self._check(unit)
        return iter_batches(self.path(unit), columns, batch_size)

    def take(self, unit: WorkUnit, column: str, rows: Sequence[int]) -> dict[int, object]:
        """Values of one column at some rows of a verified shard (`take_rows`)."""
        self._check(unit)
        return take_rows(self.path(unit), column, rows)

    def write_manifest(self, stage: str, units: list[WorkUnit], extra: dict | None = None) -> Path:
        """A stage-level manifest once every shard of the stage is complete.

        Shards are not re-hashed here (at full scale that re-reads the whole stage); readers
        verify each shard against its checksum anyway.
        """
        entries = {}
        for u in units:
            digest = self.recorded_checksum(u)
            if digest is None or not self.path(u).is_file():
                raise ShardError(f"cannot write the {stage} manifest: shard {u.name} is not complete")
            entries[self.path(u).name] = digest
        manifest = {"stage": stage, "num_shards": len(units), "shards": entries, **(extra or {})}
        path = self.root / stage / "manifest.json"
        try:
            atomic_write_bytes(path, json.dumps(manifest, indent=2, sort_keys=True).encode())
        except OSError as err:
            raise ShardError(f"cannot write {path}: {err.strerror or err} (errno {err.errno}); "
                             "complete shards are kept: fix the disk (space, permissions) and re-run to resume") from None
        return path
