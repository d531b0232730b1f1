"""Latent mode (Synth^2's embedding space): fp16 latents stored instead of pixels, a decode
step with the same VAE that reproduces pixel mode within one uint8 level, scoring on the decoded
images, and an exported dataset that carries the latents."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from datasets import load_dataset
from PIL import Image

from synthvlm_data.backends import BackendOptions
from synthvlm_data.models.devices import pinned_threads
from synthvlm_data.build import build
from synthvlm_data.columns import GENERATE_SCHEMA, LATENT_SCHEMA
from synthvlm_data.errors import ShardError
from synthvlm_data.stages import (
    CAPTIONS,
    CURATE,
    DECODE,
    GENERATE,
    SCORE,
    GenerateStage,
    RunContext,
    stages_for,
)
from synthvlm_data.workdir import WorkDir
from synthvlm_data.workunits import WorkUnit, plan_units
from test_backends import tiniest_recipe

N_UNITS = 4


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    return build(tiniest_recipe(generate={"output": "latents"}), root / "out", work_dir=root / "work", progress=False)


@pytest.fixture(scope="module")
def store(latent_run):
    from synthvlm_data.shards import ShardStore

    return ShardStore(latent_run.work_dir)


def _table(store, stage: str) -> pa.Table:
    return pa.concat_tables(store.read(u) for u in plan_units(stage, N_UNITS))


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_latent_runs_decode_before_scoring():
    names = [s.name for s in stages_for(tiniest_recipe(generate={"output": "latents"}))]
    assert names == [CURATE, CAPTIONS, GENERATE, DECODE, SCORE, "select"]
    assert DECODE not in [s.name for s in stages_for(tiniest_recipe())]


def test_generate_shards_hold_fp16_latents_not_pixels(store):
    gen = _table(store, GENERATE)
    assert gen.schema == LATENT_SCHEMA and "image" not in gen.column_names
    assert gen.num_rows == 16  # 8 captions x 2 images
    for data, shape in zip(gen["latent"].to_pylist(), gen["latent_shape"].to_pylist(), strict=True):
        assert shape == [4, 32, 32]  # tiny VAE: 4 channels, 64 px / 2
        assert len(data) == 2 * 4 * 32 * 32  # float16
        lat = np.frombuffer(data, dtype="<f2")
        assert np.isfinite(lat).all() and lat.std() > 0.1


def test_decode_reproduces_pixel_mode_within_one_level(latent_run, store):
    """Pixel mode, run on the same captions, vs the decode of the stored fp16 latents."""
    pixel_recipe = tiniest_recipe()
    ctx = RunContext(recipe=pixel_recipe, work=WorkDir(latent_run.work_dir))
    stage = GenerateStage()
    with pinned_threads(stage.device(ctx), BackendOptions().cpu_threads):  # as every backend runs it
        stage.setup(ctx)
        pixel = pa.concat_tables([stage.run(ctx, u) for u in plan_units(GENERATE, N_UNITS)])
    decoded = _table(store, DECODE)
    assert decoded.schema == GENERATE_SCHEMA
    for col in ("id", "repeat", "seed", "generator"):
        assert decoded[col].to_pylist() == pixel[col].to_pylist()
    diffs = [np.abs(_pixels(a) - _pixels(b)).max() for a, b in zip(pixel["image"].to_pylist(), decoded["image"].to_pylist(), strict=True)]
    assert max(diffs) <= 1


def test_export_carries_the_latents(latent_run, store):
    ds = load_dataset(str(latent_run.out_dir), split="train")
    assert "latent" in ds.column_names and "image" not in ds.column_names
    assert ds.features["latent"].shape == (4, 32, 32) and ds.features["latent"].dtype == "float16"
    assert ds.num_rows == latent_run.stats["selected"] == 4
    gen = {(r["id"], r["repeat"]): r for r in _table(store, GENERATE).to_pylist()}
    for row in ds.with_format("numpy"):
        stored = np.frombuffer(gen[(row["id"], int(row["repeat"]))]["latent"], dtype="<f2").reshape(4, 32, 32)
        assert np.array_equal(np.asarray(row["latent"], dtype=np.float16), stored)
    # scores were computed on the decoded images
    assert np.all(np.isfinite(ds["clip_score"])) and np.all(np.isfinite(ds["ssim"]))


def test_decode_command_redoes_a_lost_shard_identically(latent_run, store, tmp_path):
    from synthvlm_data.cli import main

    unit = WorkUnit(DECODE, 2, N_UNITS)
    before = store.path(unit).read_bytes()
    store.path(unit).unlink()
    assert main(["decode", "--work-dir", str(latent_run.work_dir), "--images", str(tmp_path / "img"), "--quiet"]) == 0
    assert store.path(unit).read_bytes() == before
    files = sorted((tmp_path / "img").glob("*.png"))
    assert len(files) == 16
    assert Image.open(files[0]).size == (64, 64)
    # a second decode into its own image folder is allowed and writes the same files, also after a
    # kill left it part-written (the marker is written before the first image)
    files[0].unlink()
    assert main(["decode", "--work-dir", str(latent_run.work_dir), "--images", str(tmp_path / "img"), "--quiet"]) == 0
    assert sorted((tmp_path / "img").glob("*.png")) == files


def test_decode_images_never_writes_into_a_users_folder(latent_run, store, tmp_path, capsys):
    from synthvlm_data.cli import main

    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.png").write_bytes(b"not ours")
    unit = WorkUnit(DECODE, 1, N_UNITS)
    before = store.path(unit).read_bytes()
    store.path(unit).unlink()  # refused before any work: the lost shard is not redone
    assert main(["decode", "--work-dir", str(latent_run.work_dir), "--images", str(mine), "--quiet"]) != 0
    assert "--images" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["holiday.png"] and (mine / "holiday.png").read_bytes() == b"not ours"
    assert not store.path(unit).exists()
    assert main(["decode", "--work-dir", str(latent_run.work_dir), "--quiet"]) == 0
    assert store.path(unit).read_bytes() == before


def test_decode_refuses_pixel_runs(tmp_path):
    from synthvlm_data.stages import DecodeStage

    ctx = RunContext(recipe=tiniest_recipe(), work=WorkDir(tmp_path))
    with pytest.raises(ShardError, match="latent-mode"):
        DecodeStage().plan(ctx)
