"""LLaVA JSON and WebDataset exports of a built dataset load back with the libraries users read them with."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from synthvlm_data.cli import main
from synthvlm_data.shards import sha256_file
from synthvlm_data.stages.formats import write_llava_json, write_webdataset


def _published(folder):
    rows = []
    for path in sorted(folder.glob("data/*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def test_llava_json_loads_back(tiny_build, tmp_path):
    rows = _published(tiny_build.out_dir)
    out = tmp_path / "llava"
    assert main(["export", str(tiny_build.out_dir), "--format", "llava-json", "--out", str(out)]) == 0
    records = json.loads((out / f"{tiny_build.out_dir.name}.json").read_text())
    assert len(records) == len(rows) > 0
    for rec, row in zip(records, rows, strict=True):
        assert set(rec) == {"id", "image", "conversations"} and rec["id"] == row["id"]
        human, gpt = rec["conversations"]
        assert human == {"from": "human", "value": f"{row['prompt']}\n<image>"}
        assert gpt == {"from": "gpt", "value": row["caption"]}
        path = out / "images" / rec["image"]  # relative to the image folder, as LLaVA's --image_folder
        assert path.read_bytes() == row["image"]["bytes"]
        with Image.open(path) as im:
            im.load()
            assert im.size[0] > 0
    # Deterministic: the same dataset gives the same files.
    again = write_llava_json(tiny_build.out_dir, tmp_path / "again", name=tiny_build.out_dir.name)
    assert again["rows"] == len(rows)
    assert sha256_file(out / f"{tiny_build.out_dir.name}.json") == sha256_file(tmp_path / "again" / f"{tiny_build.out_dir.name}.json")


def test_webdataset_loads_back(tiny_build, tmp_path):
    import datasets
    import webdataset as wds

    rows = _published(tiny_build.out_dir)
    out = tmp_path / "wds"
    res = write_webdataset(tiny_build.out_dir, out, shard_size=3)
    assert res["rows"] == len(rows) and len(res["shards"]) == -(-len(rows) // 3)
    # Same bytes on a second write (fixed tar mtime).
    res2 = write_webdataset(tiny_build.out_dir, tmp_path / "wds2", shard_size=3)
    assert [sha256_file(Path(p)) for p in res["shards"]] == [sha256_file(Path(p)) for p in res2["shards"]]

    by_id = {r["id"]: r for r in rows}
    seen = []
    for sample in wds.WebDataset(res["shards"], shardshuffle=False, empty_check=False).decode("pil"):
        meta = sample["json"]
        row = by_id[sample["__key__"]]
        assert meta["caption"] == row["caption"] and meta["clip_score"] == row["clip_score"]
        assert sample["png"].size == Image.open(io.BytesIO(row["image"]["bytes"])).size
        seen.append(sample["__key__"])
    assert seen == [r["id"] for r in rows]

    ds = datasets.load_dataset("webdataset", data_files={"train": res["shards"]}, split="train")
    assert len(ds) == len(rows)
    assert [r["caption"] for r in ds["json"]] == [r["caption"] for r in rows]
    assert ds[0]["png"].size == Image.open(io.BytesIO(rows[0]["image"]["bytes"])).size


def test_export_bad_input_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "--format", "webdataset"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no data/*.parquet" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "nope-webdataset").exists()


@pytest.mark.parametrize("formats", [["llava-json", "webdataset"]])
def test_recipe_formats_default_off(formats):
    from synthvlm_data.config import load_recipe

    assert load_recipe("tiny").export.formats == []
    assert load_recipe("tiny", overrides={"export": {"formats": formats}}).export.formats == formats


def test_llava_json_export_is_the_trainers_stage1_input(tiny_build, tmp_path):
    """The exported LLaVA JSON + images/ is what `train/pretrain.py` reads with
    `data: {format: llava_json, image_folder: ...}`: same ids, prompts, captions and image bytes."""
    from synthvlm_data.training.config import DataSource
    from synthvlm_data.training.data import llava_json_captions, pretrain_dataset

    rows = _published(tiny_build.out_dir)
    out = tmp_path / "llava"
    assert main(["export", str(tiny_build.out_dir), "--format", "llava-json", "--out", str(out)]) == 0
    src = DataSource(dataset=str(out / f"{tiny_build.out_dir.name}.json"), format="llava_json",
                     image_folder=str(out / "images"))
    ds = llava_json_captions(src)
    assert ds["id"] == [r["id"] for r in rows] and ds["caption"] == [r["caption"] for r in rows]
    assert ds["prompt"] == [r["prompt"] for r in rows]
    first = ds.cast_column("image", ds.features["image"].__class__(decode=False))[0]["image"]
    assert Path(first["path"]).read_bytes() == rows[0]["image"]["bytes"]
    train = pretrain_dataset(src)  # the stage-1 rows the trainer consumes
    assert train.num_rows == len(rows)


def _mixed_concept_dataset(folder: Path, n: int = 8, with_concept_at: int = 6) -> list[dict]:
    """A dataset folder like a Synth^2 build: `concept` null in most rows and a string in one, past the
    first five samples a schema-inferring reader looks at."""
    import pyarrow as pa

    rows = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (4 + i, 4), (i * 20, 0, 0)).save(buf, format="PNG")
        rows.append({"id": f"row{i:02d}", "image": {"bytes": buf.getvalue(), "path": None},
                     "caption": f"caption {i}", "clip_score": 0.25 + i, "source": "world",
                     "concept": "dog" if i == with_concept_at else None})
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    return rows


def test_webdataset_mixed_null_column_loads_back_with_datasets(tmp_path):
    import datasets
    import webdataset as wds

    rows = _mixed_concept_dataset(tmp_path / "ds")
    res = write_webdataset(tmp_path / "ds", tmp_path / "wds", shard_size=100)
    ds = datasets.load_dataset("webdataset", data_files={"train": res["shards"]}, split="train",
                               cache_dir=str(tmp_path / "cache"))
    metas = ds["json"]
    assert [m["concept"] for m in metas] == [r["concept"] or "" for r in rows]
    assert [m["caption"] for m in metas] == [r["caption"] for r in rows]
    assert [m["clip_score"] for m in metas] == [r["clip_score"] for r in rows]
    assert [im.size for im in ds["png"]] == [(4 + i, 4) for i in range(len(rows))]
    # webdataset's own reader sees the same keys in every sample.
    samples = list(wds.WebDataset(res["shards"], shardshuffle=False, empty_check=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [r["id"] for r in rows]
    assert {frozenset(s["json"]) for s in samples} == {frozenset(rows[0]) - {"image"}}
    assert samples[6]["json"]["concept"] == "dog" and samples[0]["json"]["concept"] == ""
