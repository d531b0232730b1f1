"""Image safety filter: nudenet's ONNX detector (shipped in its wheel) runs offline, its verdict is a
column of the score shards and of the dataset, and selection drops unsafe images."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pyarrow as pa
import pytest
from conftest import small_tiny_recipe
from PIL import Image

from synthvlm_data.config import SelectConfig
from synthvlm_data.errors import RecipeError
from synthvlm_data.scoring.safety import SafetyConfig, SafetyScorer
from synthvlm_data.stages.select import select_best


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def test_detector_runs_offline_on_real_images():
    """A real photo (skimage's astronaut portrait) has a face the detector finds; the default
    (exposed-nudity) classes find nothing in it, nor in world renders."""
    from skimage import data

    from synthvlm_data.world.data import split_scenes
    from synthvlm_data.world.render import render

    photo = _png(Image.fromarray(data.astronaut()).resize((128, 128), Image.BICUBIC))
    renders = [_png(render(s)) for s in split_scenes("eval", 4)]
    faces = SafetyScorer(SafetyConfig(classes=["FACE_FEMALE"]))
    scores = faces([photo, *renders])
    assert scores[0] >= 0.5 and scores[1:] == [0.0] * 4
    assert faces([photo]) == scores[:1]  # deterministic
    assert SafetyScorer(SafetyConfig())([photo, *renders]) == [0.0] * 5


def test_unknown_class_is_a_recipe_error():
    from synthvlm_data.config import load_recipe

    with pytest.raises(RecipeError, match=r"score.safety.classes.*unknown nudenet class 'NSFW'"):
        load_recipe("tiny", overrides={"score": {"safety": {"classes": ["NSFW"]}}})


def _scores(safe: list[bool]) -> pa.Table:
    # two captions x two images; image 0 of caption a is its best but unsafe
    return pa.table({
        "id": ["a", "a", "b", "b"], "repeat": pa.array([0, 1, 0, 1], pa.int32()),
        "clip_score": [0.9, 0.5, 0.6, 0.7], "ssim": [0.5] * 4,
        "nsfw_score": [0.8 if not s else 0.0 for s in safe], "safe": safe,
    })


def test_select_drops_unsafe_and_takes_the_next_image():
    table, stats = select_best(_scores([False, True, True, True]), SelectConfig())
    assert table.select(["id", "repeat"]).to_pylist() == [{"id": "b", "repeat": 1}, {"id": "a", "repeat": 1}]
    assert table["safe"].to_pylist() == [True, True] and stats["safety"]["images_unsafe"] == 1
    kept, _ = select_best(_scores([False, True, True, True]), SelectConfig(drop_unsafe=False))
    assert kept.select(["id", "repeat"]).to_pylist()[0] == {"id": "a", "repeat": 0}
    assert kept["safe"].to_pylist()[0] is False
    # a caption whose every image is unsafe is counted, whether or not unsafe images are dropped
    for drop in (True, False):
        _, stats = select_best(_scores([False, False, True, True]), SelectConfig(drop_unsafe=drop))
        assert stats["safety"]["captions_without_safe_image"] == 1
        assert stats["safety"]["images_unsafe"] == 2
    # Without the columns (safety off) the selection table is the plain one.
    plain, stats = select_best(_scores([True] * 4).drop_columns(["nsfw_score", "safe"]), SelectConfig())
    assert "safe" not in plain.column_names and "safety" not in stats


def test_verdict_is_a_dataset_column(tiny_build, tmp_path):
    """Re-score a finished tiny run with safety on: score shards, selection and the exported dataset
    carry nsfw_score / safe, and the card says how they were made."""
    import datasets

    from synthvlm_data.backends import BackendOptions, get_backend
    from synthvlm_data.build import collect_stats, execute
    from synthvlm_data.config import recipe_from_dict
    from synthvlm_data.stages import RunContext
    from synthvlm_data.stages.export import export_dataset
    from synthvlm_data.stages.score import ScoreStage
    from synthvlm_data.stages.select import SelectStage
    from synthvlm_data.workdir import SCORE, SELECT, WorkDir

    work = tmp_path / "work"
    shutil.copytree(tiny_build.work_dir, work)
    for stage in (SCORE, SELECT):
        shutil.rmtree(WorkDir(work).stage_dir(stage))
    data = small_tiny_recipe().model_dump(mode="json")
    data["score"]["safety"] = {"classes": ["FACE_FEMALE", "FACE_MALE", "FEMALE_BREAST_EXPOSED"], "threshold": 0.5}
    recipe = recipe_from_dict(data)
    ctx = RunContext(recipe=recipe, work=WorkDir(work))
    runner = get_backend("local", BackendOptions.from_env())
    execute(ScoreStage(), ctx, runner, progress=False)
    execute(SelectStage(), ctx, runner, progress=False)
    out = export_dataset(ctx, tmp_path / "safe-tiny", collect_stats(ctx.work))
    ds = datasets.load_dataset(str(out), split="train")
    assert ds.features["safe"].dtype == "bool" and ds.features["nsfw_score"].dtype == "float64"
    assert all(s == (v < 0.5) for s, v in zip(ds["safe"], ds["nsfw_score"], strict=True))
    assert all(ds["safe"])  # selection drops unsafe images
    base = datasets.load_dataset(str(tiny_build.out_dir), split="train")
    assert "safe" not in base.features
    card = (out / "README.md").read_text()
    assert "Image safety: every generated image was checked by NudeNet" in card
    stats = collect_stats(ctx.work)
    assert stats["safety"]["images_unsafe"] == int(np.sum(~pa.concat_tables(
        ctx.store.read(u) for u in ctx.work.units(SCORE))["safe"].to_numpy(zero_copy_only=False)))
