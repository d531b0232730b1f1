"""Score and export stream the image shards in bounded batches and write the
bytes the whole-shard code wrote. Not timed: bench/bench_scale.py measures time and memory."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import small_tiny_recipe
from PIL import Image

from synthvlm_data.columns import (
    CAPTION_SCHEMA,
    GENERATE_SCHEMA,
    dataset_features,
    decode_image,
)
from synthvlm_data.shards import ShardStore, iter_batches
from synthvlm_data.stages.base import RunContext
from synthvlm_data.workdir import CAPTIONS, GENERATE, SCORE, SELECT, WorkDir
from synthvlm_data.workunits import WorkUnit, chunk

N_CAPTIONS, K = 13, 2  # 26 images: several score batches, a last short one


def _noise_png(rng: np.random.Generator, side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _work_dir(root, recipe) -> RunContext:
    """One caption shard and its generate shard of noise PNGs of varied sizes (made here, as the
    stages before score would write them)."""
    rng = np.random.default_rng(0)
    work = WorkDir(root)
    caps = [{"id": f"id{i:03d}", "caption": f"a photo of thing {i}", "prompt": "Describe the image.",
             "source": "s", "source_id": str(i), "concept": None if i % 3 else "thing"} for i in range(N_CAPTIONS)]
    unit = WorkUnit(CAPTIONS, 0, 1)
    work.store.write(unit, pa.Table.from_pylist(caps, schema=CAPTION_SCHEMA))
    work.write_manifest(CAPTIONS, [unit], {"rows": N_CAPTIONS})
    gen = [{"id": c["id"], "repeat": r, "seed": 7 * i + r, "image": _noise_png(rng, 24 + 4 * ((i + r) % 5)),
            "generator": "test"} for i, c in enumerate(caps) for r in range(K)]
    work.store.write(WorkUnit(GENERATE, 0, 1), pa.Table.from_pylist(gen, schema=GENERATE_SCHEMA))
    return RunContext(recipe, work)


@pytest.fixture
def record_batches(monkeypatch):
    """Every batch the real ShardStore.iter_batches hands out, per stage; whole reads of an image
    shard fail."""
    seen: dict[str, list[int]] = {}
    real_iter, real_read = ShardStore.iter_batches, ShardStore.read

    def spy(self, unit, columns, batch_size):
        for t in real_iter(self, unit, columns, batch_size):
            seen.setdefault(unit.stage, []).append(t.num_rows)
            yield t

    def read(self, unit, columns=None):
        assert unit.stage != GENERATE or (columns is not None and "image" not in columns), "whole image shard read"
        return real_read(self, unit, columns)

    monkeypatch.setattr(ShardStore, "iter_batches", spy)
    monkeypatch.setattr(ShardStore, "read", read)
    return seen


def test_image_columns_are_paged_for_streaming(tmp_path):
    """Image shards carry their images in plain pages of a few rows (no dictionary page holding a
    whole row group), and iter_batches cuts exact batches across row groups."""
    ctx = _work_dir(tmp_path, small_tiny_recipe())
    path = ctx.store.path(WorkUnit(GENERATE, 0, 1))
    col = pq.ParquetFile(path).metadata.row_group(0).column(GENERATE_SCHEMA.get_field_index("image"))
    assert not col.has_dictionary_page and "RLE_DICTIONARY" not in col.encodings
    # a file of 3 row groups of 10 rows, read 4 at a time: 4,4,4,...,2 with the same rows
    table = pa.table({"x": list(range(30))})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=10)
    got = list(iter_batches(tmp_path / "t.parquet", None, 4))
    assert [t.num_rows for t in got] == [4] * 7 + [2]
    assert pa.concat_tables(got)["x"].to_pylist() == list(range(30))


@pytest.mark.parametrize("threads", [1, 3])
def test_score_streams_the_generate_shard_and_scores_as_before(tmp_path, record_batches, threads):
    """Read a batch at a time, prepared on `threads` worker threads (decode, CLIP preprocessing,
    SSIM; 4 rows over 3 threads: two slices of 2), and the same scores as one thread, whole."""
    import dataclasses

    from synthvlm_data.scoring.ssim import ssim_roundtrip
    from synthvlm_data.stages.score import ScoreStage

    recipe = small_tiny_recipe(score={"batch_size": 4, "clip": {"batch_size": 4}})
    ctx = dataclasses.replace(_work_dir(tmp_path, recipe), cpu_threads=threads)
    stage = ScoreStage()
    stage.setup(ctx)
    got = stage.run(ctx, WorkUnit(SCORE, 0, 1))
    assert record_batches[GENERATE] == [4] * 6 + [2]  # read one score batch at a time

    # the whole-shard implementation this replaced, as the reference
    gen = pq.read_table(ctx.store.path(WorkUnit(GENERATE, 0, 1)))
    caption_of = {f"id{i:03d}": f"a photo of thing {i}" for i in range(N_CAPTIONS)}
    ids, blobs = gen["id"].to_pylist(), gen["image"].to_pylist()
    clip, ssim = np.zeros(len(ids)), np.zeros(len(ids))
    for part in chunk(len(ids), 4):
        images = [decode_image(blobs[j]) for j in part]
        clip[part.start : part.stop] = stage.clip(images, [caption_of[i] for i in ids[part.start : part.stop]])
        ssim[part.start : part.stop] = ssim_roundtrip(images, recipe.score.ssim)
    assert got["id"].to_pylist() == ids
    assert got["repeat"].to_pylist() == gen["repeat"].to_pylist()
    np.testing.assert_array_equal(got["clip_score"].to_numpy(), clip)
    np.testing.assert_array_equal(got["ssim"].to_numpy(), ssim)


def _rows(n: int, rng: np.random.Generator, concept: bool) -> list[dict]:
    return [{"id": f"r{i}", "image": {"bytes": _noise_png(rng, 16 + (i % 7) * 4), "path": None},
             "caption": f"caption {i} " * (1 + i % 4), "prompt": "Describe.", "clip_score": 0.1 * i,
             "ssim": 1 / (i + 1), "score": 0.2 * i, "seed": i, "repeat": i % 3, "source": "s", "source_id": str(i),
             "generator": "g", **({"concept": None if i % 2 else "dog"} if concept else {})} for i in range(n)]


@pytest.mark.parametrize("concept", [False, True])
def test_shard_writer_writes_the_bytes_of_to_parquet(tmp_path, monkeypatch, concept):
    """The streaming writer equals `Dataset.from_dict(all rows).to_parquet` (the old export) byte
    for byte, with the same `nbytes` for the card, over several row groups, holding one row
    group's images at a time."""
    from synthvlm_data.stages.export import ShardWriter

    monkeypatch.setattr(datasets.config, "MAX_ROW_GROUP_SIZE", "40KB")  # several row groups
    rows = _rows(37, np.random.default_rng(1), concept)
    features = dataset_features(concept)
    ref = datasets.Dataset.from_dict({k: [r.get(k) for r in rows] for k in features}, features=features)
    ref.to_parquet(str(tmp_path / "ref.parquet"))
    writer = ShardWriter(tmp_path / "new.parquet", features)
    for r in rows:
        writer.add(r)
    assert writer.close() == ref.data.nbytes
    assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "ref.parquet").read_bytes()
    meta = pq.ParquetFile(tmp_path / "new.parquet").metadata
    largest = max(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    assert meta.num_row_groups >= 3 and writer.max_rows_held == largest < 37
    assert not list(tmp_path.glob(".*images"))  # the spill file is gone


def test_export_streams_and_writes_the_old_bytes(tmp_path, record_batches, monkeypatch):
    """export_dataset reads the generate shard READ_ROWS rows at a time and every published file
    equals what the whole-table export wrote for the same rows."""
    from synthvlm_data.stages import export
    from synthvlm_data.stages.select import select_best

    monkeypatch.setattr(export, "READ_ROWS", 5)
    recipe = small_tiny_recipe(export={"rows_per_shard": 4})
    ctx = _work_dir(tmp_path / "w", recipe)
    scores = pa.table({"id": [f"id{i:03d}" for i in range(N_CAPTIONS) for _ in range(K)],
                       "repeat": pa.array([r for _ in range(N_CAPTIONS) for r in range(K)], pa.int32()),
                       "clip_score": np.linspace(0.1, 0.3, N_CAPTIONS * K), "ssim": np.linspace(0.9, 0.5, N_CAPTIONS * K)})
    table, stats = select_best(scores, recipe.select)
    ctx.store.write(WorkUnit(SELECT, 0, 1), table)
    out = export.export_dataset(ctx, tmp_path / "out", stats)
    assert record_batches[GENERATE] == [5] * 5 + [1]

    selection = {(r["id"], r["repeat"]): r for r in table.to_pylist()}
    rows = list(export._iter_selected_rows(ctx, selection))
    features = dataset_features(True)
    files = sorted((out / "data").glob("*.parquet"))
    assert len(files) == -(-len(rows) // 4) >= 2
    for i, f in enumerate(files):
        part = rows[4 * i : 4 * i + 4]
        ref = datasets.Dataset.from_dict({k: [r.get(k) for r in part] for k in features}, features=features)
        ref.to_parquet(str(tmp_path / "ref.parquet"))
        assert f.read_bytes() == (tmp_path / "ref.parquet").read_bytes(), f.name
    assert not list((out / "data").glob(".*"))
