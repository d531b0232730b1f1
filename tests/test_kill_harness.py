"""A shard corrupted on disk after a complete build (a flipped byte, a truncated file) fails its
checksum, is redone on the next run and is never read as data; the output is byte-identical."""

from __future__ import annotations

import shutil

from conftest import parquet_checksums, small_tiny_recipe
from synthvlm_data.build import build
from synthvlm_data.stages import GenerateStage, ScoreStage


def test_corrupted_shards_are_redone(tiny_build, tmp_path, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(tiny_build.work_dir, work)
    gen = sorted((work / "generate").glob("*.parquet"))[0]
    data = bytearray(gen.read_bytes())
    data[len(data) // 2] ^= 0xFF
    gen.write_bytes(bytes(data))
    score = sorted((work / "score").glob("*.parquet"))[-1]
    score.write_bytes(score.read_bytes()[: score.stat().st_size // 2])

    ran: list[str] = []
    for cls in (GenerateStage, ScoreStage):
        original = cls.run

        def counting(self, ctx, unit, _orig=original):
            ran.append(unit.name)
            return _orig(self, ctx, unit)

        monkeypatch.setattr(cls, "run", counting)
    res = build(small_tiny_recipe(), tmp_path / "out", work_dir=work, progress=False)
    gen_name, score_name = gen.name.removesuffix(".parquet"), score.name.removesuffix(".parquet")
    # the corrupted generate shard and its score shard, and the truncated score shard: nothing else
    assert gen_name in ran and score_name in ran
    assert len(ran) <= 3, ran
    assert parquet_checksums(res.out_dir) == parquet_checksums(tiny_build.out_dir)


import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

STAGE_DIRS = ("captions", "generate", "score", "select")
TARGETS = ("captions", "generate", "score", "export", "select")  # the order kills cycle through


def _stage_at(work) -> str:
    """The stage a kill hit: the first stage without a manifest."""
    for stage in STAGE_DIRS:
        if not (work / stage / "manifest.json").is_file():
            return stage
    return "export"


def _complete_shards(work, stage: str) -> int:
    return len(list((work / stage).glob("*.parquet.sha256")))


def _reached(target: str, work, out) -> bool:
    """True once the build is inside `target`: mid-stage for the sharded stages (some but not all
    shards complete), inside the global steps for the others."""
    if not (work / "run.json").is_file():
        return False
    done = {s: (work / s / "manifest.json").is_file() for s in STAGE_DIRS}
    if target == "captions":  # mid-map: some curate units complete (the reduce follows them)
        return not done["captions"] and _complete_shards(work, "curate") >= 1
    if target in ("generate", "score"):
        return not done[target] and _complete_shards(work, target) >= 1
    if target == "select":
        return done["score"] and not done["select"]
    return done["select"] and not out.exists()  # export


def kill_harness(tmp_path, kills: int, seed: int) -> tuple[list[str], int]:
    """SIGKILL `synthvlm build` `kills` times, each time inside the next stage of TARGETS (after a
    seeded random extra delay), resuming on the same work dir; then compare with an uninterrupted run."""
    # 24 captions: 3 shards per sharded stage; the caption stage with the perplexity filter over units
    # of 4 source rows (6 units mapped first), so a kill lands between curate units
    from importlib import resources

    filters = yaml.safe_load((resources.files("synthvlm_data.recipes") / "tiny.yaml").read_text())["captions"]["filters"]
    recipe = small_tiny_recipe(captions={"filters": filters, "chunk_size": 4}).model_dump(mode="json")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    work, out = tmp_path / "work-k", tmp_path / "out-k"

    def cmd(name):
        return [sys.executable, "-m", "synthvlm_data.cli", "build", "--recipe", str(path), "--quiet",
                "--out", str(tmp_path / f"out-{name}"), "--work-dir", str(tmp_path / f"work-{name}")]

    ref = subprocess.run(cmd("ref"), capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    n_units = _complete_shards(tmp_path / "work-ref", "generate")
    assert n_units >= 3
    rng = random.Random(seed)
    hit, runs = [], 0
    curated: dict[str, tuple[int, int]] = {}  # complete curate units at a kill inside captions
    while True:
        runs += 1
        log = tmp_path / f"run-{runs}.stderr"
        with log.open("wb") as err:
            proc = subprocess.Popen(cmd("k"), stdout=subprocess.DEVNULL, stderr=err, env=env)
        target = TARGETS[len(hit) % len(TARGETS)] if len(hit) < kills else None
        while target is not None and proc.poll() is None and not _reached(target, work, out):
            time.sleep(0.005)
        if target is not None and proc.poll() is None:
            time.sleep(rng.uniform(0, 0.05))
            stage = _stage_at(work)
            partial = {s: _complete_shards(work, s) for s in ("generate", "score")}
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            hit.append(stage)
            if stage == "captions":
                curated.update(_unit_files(work))
            if stage in ("generate", "score"):  # killed mid-stage: some shards done, not all
                assert 0 <= partial[stage] < n_units
            assert not out.exists() or stage == "export"
            continue
        assert proc.wait(timeout=600) == 0, f"resume after kills at {hit} failed: {log.read_text()[-3000:]}"
        _check_same(tmp_path)
        # curate units finished before a kill were not redone: the same files (inode, mtime)
        now = _unit_files(work)
        assert all(now.get(name) == stat for name, stat in curated.items()), (curated, now)
        assert _complete_shards(work, "curate") == _complete_shards(tmp_path / "work-ref", "curate")
        if len(hit) >= kills:
            assert not list(work.rglob(".tmp-*")) and not list(tmp_path.glob(".out-k.*"))  # leftovers swept
            return hit, runs
        # the resumed run completed before all kills landed: start a fresh chain of kills
        shutil.rmtree(out)
        shutil.rmtree(work)
        curated.clear()


def _unit_files(work) -> dict[str, tuple[int, int]]:
    """The complete curate units' parquet files: name -> (inode, mtime_ns)."""
    out = {}
    for sha in (work / "curate").glob("*.parquet.sha256"):
        shard = sha.with_name(sha.name.removesuffix(".sha256"))
        if shard.is_file():
            st = shard.stat()
            out[shard.name] = (st.st_ino, st.st_mtime_ns)
    return out


def _check_same(tmp_path) -> None:
    assert parquet_checksums(tmp_path / "out-k") == parquet_checksums(tmp_path / "out-ref")
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "out-k"), split="train")
    ref_ds = load_dataset(str(tmp_path / "out-ref"), split="train")
    assert len(set(ds["id"])) == ds.num_rows and sorted(ds["id"]) == sorted(ref_ds["id"])


def test_kill_harness_fast(tmp_path):
    hit, runs = kill_harness(tmp_path, kills=4, seed=0)
    print(f"kills: {len(hit)} at {hit}; runs {runs}")
    assert len(hit) == 4 and {"captions", "generate", "score"} <= set(hit), hit


@pytest.mark.slow
def test_kill_harness_20_kills(tmp_path):
    hit, runs = kill_harness(tmp_path, kills=20, seed=1)
    print(f"kills: {len(hit)} at {hit}; runs {runs}")
    assert len(hit) == 20 and set(hit) == {*STAGE_DIRS, "export"}, hit
