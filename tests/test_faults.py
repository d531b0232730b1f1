"""Faults during a build: disk errors, concurrent builds. The previous complete shards survive
and a resumed run gives the same bytes."""

from __future__ import annotations

import errno
import subprocess
import sys
import time

import pytest
import yaml

from conftest import parquet_checksums, small_tiny_recipe
from synthvlm_data import shards
from synthvlm_data.build import build, work_dir_lock
from synthvlm_data.errors import ShardError, WorkDirLockedError


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_error_mid_stage_is_clear_and_resumable(tiny_build, tmp_path, monkeypatch, code):
    real = shards.atomic_write_bytes
    calls = {"n": 0}

    def failing(path, data):
        if path.parent.name == "generate" and path.suffix == ".parquet":
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(code, __import__("os").strerror(code), str(path))
        return real(path, data)

    monkeypatch.setattr(shards, "atomic_write_bytes", failing)
    with pytest.raises(ShardError, match=r"cannot write shard .*generate-00001.*re-run to resume"):
        build(small_tiny_recipe(), tmp_path / "out", work_dir=tmp_path / "work", progress=False)
    store = shards.ShardStore(tmp_path / "work")
    from synthvlm_data.workunits import WorkUnit

    n = len(list((tiny_build.work_dir / "generate").glob("*.parquet")))
    assert store.is_complete(WorkUnit("generate", 0, n))  # written before the fault: intact
    assert not store.is_complete(WorkUnit("generate", 1, n))
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(shards, "atomic_write_bytes", real)
    again = build(small_tiny_recipe(), tmp_path / "out", work_dir=tmp_path / "work", progress=False)
    assert parquet_checksums(again.out_dir) == parquet_checksums(tiny_build.out_dir)


def test_second_build_on_same_work_dir_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with work_dir_lock(work):
        with pytest.raises(WorkDirLockedError, match="another build is running"):
            build(small_tiny_recipe(), tmp_path / "out", work_dir=work, progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_busy_work_dir(tmp_path):
    """While another process holds a work dir, `synthvlm build` on it exits 2 with one line."""
    work = tmp_path / "work"
    work.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from pathlib import Path; from synthvlm_data.build import work_dir_lock\n"
         "with work_dir_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(120)", str(work)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(small_tiny_recipe().model_dump(mode="json")))
        proc = subprocess.run(
            [sys.executable, "-m", "synthvlm_data.cli", "build", "--recipe", str(path), "--quiet",
             "--work-dir", str(work), "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2 and "another build is running" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
