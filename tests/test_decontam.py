"""Contamination check: planted held-out world captions and renders are all found, nothing else is.

The evaluation set is the miniature world's `eval` split (captions in a jsonl file, renders in an
image folder); the pool is the world's caption `pool` split (other scenes, same templates: the
hardest case for n-gram false positives, since every caption shares the world's few phrasings).
"""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from synthvlm_data.cli import main
from synthvlm_data.decontam import DecontamConfig, check_dataset, normalize

N_EVAL, N_POOL, N_PLANT = 40, 200, 20


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world_sets(tmp_path_factory):
    """Eval captions + renders on disk; a dataset folder of pool rows with planted eval items."""
    import datasets

    from synthvlm_data.world.data import split_scenes
    from synthvlm_data.world.pool import pool_rows
    from synthvlm_data.world.render import render
    from synthvlm_data.world.text import caption

    root = tmp_path_factory.mktemp("decontam")
    scenes = split_scenes("eval", N_EVAL)
    eval_caps = [caption(s, np.random.default_rng([7, i])) for i, s in enumerate(scenes)]
    eval_imgs = [render(s) for s in scenes]
    with (root / "eval.jsonl").open("w") as f:
        for i, c in enumerate(eval_caps):
            f.write(json.dumps({"id": i, "caption": c}) + "\n")
    (root / "eval_images").mkdir()
    for i, im in enumerate(eval_imgs):
        im.save(root / "eval_images" / f"{i:03d}.png")

    pool = list(pool_rows(N_POOL, 0))
    rows = [{"id": r["id"], "caption": r["caption"], "image": {"bytes": r["image"]["bytes"], "path": None}} for r in pool]
    planted_caps, planted_imgs = set(), set()
    for k in range(N_PLANT):  # captions: re-cased and re-punctuated, or quoted inside a longer caption
        c = eval_caps[k]
        text = c.upper().rstrip(".") + "!" if k % 2 else f"Photo, from an old album: {c.lower()} Lovely colours."
        rows.append({"id": f"plant-cap-{k:02d}", "caption": text, "image": rows[k]["image"]})
        planted_caps.add(f"plant-cap-{k:02d}")
    for k in range(N_PLANT):  # renders: 2x larger and re-encoded as JPEG (generator output size/format)
        im = eval_imgs[N_EVAL - 1 - k].resize((128, 128), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=85)
        rows.append({"id": f"plant-img-{k:02d}", "caption": pool[k]["caption"] + " Seen from above.",
                     "image": {"bytes": buf.getvalue(), "path": None}})
        planted_imgs.add(f"plant-img-{k:02d}")
    folder = root / "pool-dataset"
    (folder / "data").mkdir(parents=True)
    feats = datasets.Features({"id": datasets.Value("string"), "caption": datasets.Value("string"), "image": datasets.Image()})
    datasets.Dataset.from_list(rows, features=feats).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    return {"root": root, "folder": folder, "caps": planted_caps, "imgs": planted_imgs, "pool": pool, "eval_caps": eval_caps}


def test_planted_world_items_all_found_no_false_positives(world_sets):
    root = world_sets["root"]
    cfg = DecontamConfig(against=[{"name": "world-eval", "path": str(root / "eval.jsonl"), "images": str(root / "eval_images")}])
    report = check_dataset(world_sets["folder"], cfg)
    hit_ids = set(report["hit_ids"])
    planted = world_sets["caps"] | world_sets["imgs"]
    assert planted <= hit_ids, f"missed {sorted(planted - hit_ids)}"
    false_pos = hit_ids - planted
    # No false positive among the 200 non-planted pool rows (their captions and renders).
    assert not false_pos, f"false positives: {sorted(false_pos)}"
    assert report["caption_hits"] == {"world-eval": N_PLANT} and report["image_hits"] == {"world-eval": N_PLANT}
    assert report["sets"] == [{"name": "world-eval", "captions": N_EVAL, "images": N_EVAL}]
    assert report["rows_checked"] == N_POOL + 2 * N_PLANT and report["removed"] == 0
    assert json.loads((world_sets["folder"] / "decontamination.json").read_text())["hit_ids"] == report["hit_ids"]


def test_caption_filter_drops_exactly_the_planted(world_sets):
    from synthvlm_data.captions.filters import FILTERS

    root = world_sets["root"]
    f = FILTERS["decontaminate"].model_validate(
        {"type": "decontaminate", "against": [{"name": "world-eval", "path": str(root / "eval.jsonl")}]})
    step = f.step()
    table = pq.read_table(world_sets["folder"] / "data" / "train-00000-of-00001.parquet", columns=["id", "caption"])
    dropped = {i for i, c in zip(table["id"].to_pylist(), table["caption"].to_pylist(), strict=True)
               if not step.passes(step.value(c))}
    assert dropped == world_sets["caps"]
    assert step.params["checked"] == f"world-eval ({N_EVAL} texts)"


def test_short_texts_and_normalisation():
    assert normalize("A  Red-Circle, on GREY!") == ["a", "red", "circle", "on", "grey"]
    from synthvlm_data.decontam import EvalIndex, _add_text

    cfg = DecontamConfig(against=[{"name": "x", "images": "."}])
    index = EvalIndex(cfg)
    _add_text(index, "coco", "A man riding a wave on top of a surfboard.", "k1")  # 10 words: matched whole
    _add_text(index, "coco", "A dog.", "k2")  # under min_ngram: exact text only
    assert index.caption_hit("Look: a man riding a wave on top of a surfboard, at dusk") == "coco"
    assert index.caption_hit("a man riding a wave on top of a board") is None
    assert index.caption_hit("a dog") == "coco" and index.caption_hit("a dog in a park") is None


def test_cli_removes_rows_and_card_reports(tiny_build, tmp_path, capsys):
    """On a built dataset: two of its captions and two of its images (re-encoded) as the evaluation
    set; `--remove` drops those rows, load_dataset sees the rest, the card shows the report."""
    import datasets

    folder = tmp_path / "ds"
    shutil.copytree(tiny_build.out_dir, folder)
    rows = pq.read_table(min(folder.glob("data/*.parquet"))).to_pylist()
    n_before = sum(pq.read_metadata(p).num_rows for p in folder.glob("data/*.parquet"))
    (tmp_path / "eval.txt").write_text("\n".join(r["caption"] for r in rows[:2]) + "\n")
    (tmp_path / "imgs").mkdir()
    for r in rows[2:4]:
        Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB").save(tmp_path / "imgs" / f"{r['id']}.jpg", quality=90)
    assert main(["decontaminate", str(folder), "--against", str(tmp_path / "eval.txt"), "--against",
                 str(tmp_path / "imgs"), "--remove"]) == 0
    report = json.loads((folder / "decontamination.json").read_text())
    assert set(report["hit_ids"]) >= {r["id"] for r in rows[:4]}
    assert report["removed"] == report["contaminated"] == len(report["hit_ids"])
    ds = datasets.load_dataset(str(folder), split="train")
    assert len(ds) == n_before - report["removed"] and not set(ds["id"]) & set(report["hit_ids"])
    card = (folder / "README.md").read_text()
    assert "### Contamination check" in card and "| eval.txt | 2 | 0 | 2 | 0 |" in card and "| imgs | 0 | 2 | 0 | 2 |" in card and f"removed: {report['removed']}" in card
    assert f"num_examples: {n_before - report['removed']}" in card
    # The stage table follows the removal: what selection gave, what was removed, what is published.
    table = card.split("## Stage statistics", 1)[1].split("\n\n", 2)[1]
    assert f"| selected (rows) | {n_before} |" in table
    assert f"| removed as contaminated (`synthvlm decontaminate --remove`) | {report['removed']} |" in table
    assert f"| published (rows) | {n_before - report['removed']} |" in table


def test_hub_set_offline_is_one_line(tiny_build, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["decontaminate", str(tiny_build.out_dir), "--against", "lmms-lab/COCO-Caption2017@0123abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "COCO-Caption2017@0123abc" in err and "not reachable" in err
    assert "recipe" not in err.lower()  # decontamination runs no recipe: no recipe to switch to
    assert main(["decontaminate", str(tiny_build.out_dir), "--against", "lmms-lab/COCO-Caption2017"]) == 2
    assert "pin the Hub dataset's revision" in capsys.readouterr().err


def test_minhash_finds_a_rewording(tmp_path):
    from synthvlm_data.decontam import build_index

    text = "A large brown dog runs across a green field chasing a red frisbee near a wooden fence at sunset"
    (tmp_path / "eval.txt").write_text(text + "\nTwo cats sleep on a blue sofa in a sunny living room\n")
    reworded = "A large brown dog runs across a green field chasing a yellow frisbee near the wooden fence at dusk"
    plain = build_index(DecontamConfig(against=[{"name": "e", "path": str(tmp_path / "eval.txt")}]))
    assert plain.caption_hit(reworded) is None  # no shared 13-gram
    lsh = build_index(DecontamConfig(against=[{"name": "e", "path": str(tmp_path / "eval.txt")}], minhash_threshold=0.3))  # word 3-gram Jaccard 0.42
    assert lsh.caption_hit(reworded) == "e"
    assert lsh.caption_hit("A small grey cat climbs a tall oak tree in the garden behind the house") is None
