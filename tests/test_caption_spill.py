"""The caption reduce's state on disk (`captions/spill.py`) gives what the in-memory state gives.

The build's caption stage keeps the ids read, the exact and near dedup indices and the kept rows in
files so that its memory does not grow with the caption count; a run in one process keeps them in
memory. Each part is checked against its in-memory twin, then a whole caption stage both ways.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from synthvlm_data.captions.config import CaptionsConfig
from synthvlm_data.captions.dedup import ExactDedup, NearDedup
from synthvlm_data.captions.pipeline import run_captions
from synthvlm_data.captions.spill import DigestIndex, KeptRows
from synthvlm_data.errors import ShardError


def test_digest_index_on_disk_answers_as_the_dict(tmp_path):
    rng = random.Random(0)
    keys = [bytes([rng.randrange(40)]) * 16 for _ in range(600)]  # 40 distinct keys, many repeats
    mem, disk = DigestIndex(), DigestIndex(tmp_path / "kv.sqlite")
    answers = {"mem": [], "disk": []}
    for start in range(0, len(keys), 37):
        part = keys[start : start + 37]
        for name, idx in (("mem", mem), ("disk", disk)):
            if start % 74 == 0:
                idx.prefetch(part[:20])  # some keys prefetched, the rest looked up one by one
            for i, k in enumerate(part):
                answers[name].append(idx.get(k))
                idx.put(k, f"{start + i}")  # first put wins
    assert answers["mem"] == answers["disk"]
    assert sum(a is None for a in answers["mem"]) == 40
    assert len(disk) == len(mem) == 40
    disk.flush()
    assert {k: disk.get(k) for k in set(keys)} == {k: mem.get(k) for k in set(keys)}
    disk.close()
    # the table is on disk, not only in this object: a new index over the file has every key
    again = DigestIndex(tmp_path / "kv.sqlite")
    assert len(again) == 40 and again.get(keys[0]) == mem.get(keys[0])


def test_exact_dedup_on_disk_keeps_the_first_id(tmp_path):
    from synthvlm_data.captions.dedup import digest

    d = ExactDedup(tmp_path / "x.sqlite")
    d.prefetch(digest(c) for c in ["A dog.", "a DOG!", "A cat."])
    assert d.check("A dog.", "s:1") is None
    assert d.check("a DOG!", "s:2") == "s:1"  # same after normalising, within the batch
    d.prefetch([digest("a dog"), digest("A cat.")])  # writes s:1 to the table, reads it back
    assert d.seen._hits == {digest("a dog"): "s:1"}
    assert d.find("a dog") == "s:1" and d.find("A cat.") is None
    d.add("A cat.", "s:3")
    d.add("a cat", "s:4")
    assert d.find("A CAT") == "s:3"
    d.close()  # pending adds are written on close
    assert ExactDedup(tmp_path / "x.sqlite").find("a cat") == "s:3"


def test_digest_index_flush_keeps_prefetched_answers_and_first_put(tmp_path):
    idx = DigestIndex(tmp_path / "kv.sqlite")
    k = b"k" * 16
    idx.prefetch([k])
    idx.put(k, "first")
    idx.flush()  # a flush between prefetches: the prefetched key's value is now stored
    assert idx.get(k) == "first"
    idx.put(k, "second")
    assert idx.get(k) == "first"
    idx.put_many([(b"a" * 16, "1"), (b"a" * 16, "2"), (k, "third")])
    assert idx.get(b"a" * 16) == "1" and idx.get(k) == "first" and len(idx) == 2


def test_near_dedup_on_disk_blocks_gives_the_same_hits_and_ids(tmp_path, monkeypatch):
    monkeypatch.setattr(NearDedup, "BLOCK", 5)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(12, 16)).astype(np.float32)
    emb = np.concatenate([base, base[[1, 7, 11]] + 0.01 * rng.normal(size=(3, 16)).astype(np.float32)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    mem, disk = NearDedup(0.95), NearDedup(0.95, tmp_path / "near")
    got = {}
    for name, near in (("mem", mem), ("disk", disk)):
        hits = []
        for s in range(0, len(emb), 4):  # batches of 4: blocks close (and go to disk) between them
            hits += near.filter(emb[s : s + 4], [f"id{i}" for i in range(s, min(s + 4, len(emb)))])
        got[name] = hits
    assert got["mem"] == got["disk"]
    assert [h[1] if h else None for h in got["disk"][12:]] == ["id1", "id7", "id11"]
    # 12 kept in batches of 4: a block of 8 (closed at >= 5, written), then 4 still in memory
    assert [len(b) for b in disk.iter_blocks()] == [len(b) for b in mem.iter_blocks()] == [8, 4]
    assert len(list((tmp_path / "near").glob("block-*.npy"))) == 1 and len(disk.blocks) == 1


def test_kept_rows_on_disk_read_back_in_order_with_embeddings(tmp_path, monkeypatch):
    monkeypatch.setattr(KeptRows, "BATCH", 3)
    rows = [{"source": "s", "source_id": str(i), "caption": f"caption {i}",
             "_emb": np.full(4, i, dtype=np.float32)} for i in range(10)]
    mem, disk = KeptRows(), KeptRows(tmp_path / "kept.arrows")
    for r in rows:
        mem.append(r)
        disk.append(r)
    disk.close()
    assert len(disk) == len(mem) == 10
    assert list(disk.captions()) == list(mem.captions()) == [r["caption"] for r in rows]
    assert [r["source_id"] for r in disk] == [str(i) for i in range(10)]
    assert [r["source_id"] for r in disk] == [str(i) for i in range(10)]  # a second read
    index = np.array([0, 2, 3, 9])
    np.testing.assert_array_equal(disk.embeddings_at(index), mem.embeddings_at(index))
    np.testing.assert_array_equal(disk.embeddings_at(index)[:, 0], index.astype(np.float32))


def _source(tmp_path) -> str:
    """The shipped tiny captions with repeated ids, exact copies and near copies mixed in."""
    from importlib.resources import files

    lines = files("synthvlm_data.data").joinpath("tiny_captions.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines if x.strip()]
    extra = []
    for i, r in enumerate(rows[:60]):
        cap = r["caption"]
        if i % 3 == 0:
            extra.append({**r, "caption": cap.upper()})  # exact copy (after normalising), new id
            extra[-1]["id"] = f"x{i}"
        elif i % 3 == 1:
            extra.append({**r, "caption": cap.rstrip(".") + " today."})  # a near copy
            extra[-1]["id"] = f"n{i}"
        else:
            extra.append(dict(r))  # a repeated id
    path = tmp_path / "caps.jsonl"
    mixed = rows[:100] + extra + rows[100:]
    path.write_text("".join(json.dumps(r) + "\n" for r in mixed))
    return str(path)


@pytest.mark.parametrize("limit", [None, 150])
def test_caption_stage_with_spill_files_keeps_the_same_rows_and_report(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(NearDedup, "BLOCK", 16)  # several embedding blocks go to disk
    monkeypatch.setattr(KeptRows, "BATCH", 7)
    cfg = CaptionsConfig.model_validate({
        "sources": [{"name": "t", "path": _source(tmp_path), "id_column": "id"}],
        "chunk_size": 40, "limit": limit, "dedup": {"exact": True, "near": True, "threshold": 0.9},
        "diversity": {"k": 4, "max_points": 50},
    })
    mem = run_captions(cfg, seed=3)
    spill = tmp_path / "spill"
    spill.mkdir()
    disk = run_captions(cfg, seed=3, spill_dir=spill)
    with pytest.raises(ValueError, match="needs an empty spill folder"):  # indices are never reused
        run_captions(cfg, seed=3, spill_dir=spill)
    assert list(disk.rows) == mem.rows
    assert disk.report == mem.report
    steps = {s["name"]: s for s in mem.report["steps"]}
    # the data exercises every index: repeated ids, exact copies, near copies
    assert steps["validate"]["reasons"].get("duplicate_id", 0) > 0
    assert steps["exact_dedup"]["dropped"] > 0 and steps["near_dedup"]["dropped"] > 0
    assert (spill / "ids-read.sqlite").is_file() and list((spill / "near").glob("block-*.npy"))
    if limit:
        assert len(mem.rows) == limit


def test_scratch_folders_are_fresh_and_swept(tmp_path):
    """The reduce's scratch folder starts empty; what a killed run left is swept before the next."""
    from synthvlm_data.workdir import WorkDir

    wd = WorkDir(tmp_path / "work")
    first = wd.scratch_dir("captions", "reduce")
    (first / "kept.arrows").write_bytes(b"left by a killed run")
    again = wd.scratch_dir("captions", "reduce")
    assert again == first and [p.name for p in again.iterdir()] == [".synthvlm-scratch"]
    reader = wd.scratch_dir("curate", "reader", unique=True)  # a rank's, as CurateStage makes it
    assert reader.name.startswith(".tmp-reader-") and reader != wd.scratch_dir("curate", "reader", unique=True)
    (reader / "ids-read.sqlite").write_bytes(b"x")
    (tmp_path / "work" / "captions" / "keep.txt").write_text("not a temporary")
    users = tmp_path / "work" / "captions" / ".tmp-mine"  # a folder of that pattern the build did not make
    users.mkdir()
    (users / "notes.txt").write_text("a user's file")
    removed = wd.sweep_temporaries()
    assert reader in removed and not reader.exists() and not first.exists()
    assert (tmp_path / "work" / "captions" / "keep.txt").is_file() and (users / "notes.txt").is_file()
    with pytest.raises(ShardError, match="was not made by a build"):  # never removed to make a scratch folder
        wd.scratch_dir("captions", "mine")
    assert (users / "notes.txt").is_file()


def test_repeated_rows_are_the_later_copies_of_a_source_id_and_caption():
    """A synthetic row equal to a curated one (same source, id and caption) or to an earlier
    synthetic one is dropped from the caption shards; curated rows are read only if needed."""
    from synthvlm_data.stages.captions import repeated_rows

    curated = [{"source": "t", "source_id": str(i), "caption": f"caption {i}"} for i in range(5)]
    synthetic = [{"source": "t", "source_id": "3", "caption": "caption 3"},  # = curated row 3
                 {"source": "t", "source_id": "x", "caption": "new"},
                 {"source": "t", "source_id": "x", "caption": "new"},  # = the synthetic row before
                 {"source": "t", "source_id": "4", "caption": "other text"}]  # same id, other caption: kept
    assert repeated_rows(curated + synthetic, synthetic) == {5, 7}

    class Unread(list):
        def __iter__(self):
            raise AssertionError("the curated rows were read although no synthetic row could repeat them")

    assert repeated_rows(Unread(curated), []) == set()


def test_reader_never_removes_an_index_file_it_did_not_write(tmp_path):
    from synthvlm_data.captions.pipeline import UnitReader

    cfg = CaptionsConfig.model_validate({"sources": [{"name": "tiny", "path": "package://tiny_captions.jsonl"}],
                                         "chunk_size": 50})
    (tmp_path / "ids-read.sqlite").write_bytes(b"someone else's file")
    with pytest.raises(ValueError, match="exists already"):
        UnitReader(cfg, tmp_path)
    assert (tmp_path / "ids-read.sqlite").read_bytes() == b"someone else's file"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    reader = UnitReader(cfg, fresh)
    first = reader.unit(1)["rows"]
    assert reader.unit(0) and reader.unit(1)["rows"] == first  # a restart replaces its own index
    reader.close()
