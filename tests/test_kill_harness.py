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
