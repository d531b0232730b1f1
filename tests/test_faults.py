"""Faults during a build: disk errors, concurrent builds. The previous complete shards survive
and a resumed run gives the same bytes."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from conftest import parquet_checksums, small_tiny_recipe
from synthvlm_data import shards
from synthvlm_data.build import build
from synthvlm_data.workdir import WorkDir
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
    with WorkDir(work).lock():
        with pytest.raises(WorkDirLockedError, match="another build is running"):
            build(small_tiny_recipe(), tmp_path / "out", work_dir=work, progress=False)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in work.iterdir()) == [".lock"]  # the refused build wrote nothing


def test_cli_refuses_busy_work_dir(tmp_path):
    """While another process holds a work dir, `synthvlm build` on it exits 2 with one line."""
    work = tmp_path / "work"
    work.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from synthvlm_data.workdir import WorkDir\n"
         "with WorkDir(sys.argv[1]).lock():\n    print('locked', flush=True); time.sleep(120)", str(work)],
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


def _copy_run(tiny_build, tmp_path):
    """A private copy of the session build (work dir + dataset folder) to damage."""
    work, out = tmp_path / "work", tmp_path / "synthvlm-tiny"
    shutil.copytree(tiny_build.work_dir, work)
    shutil.copytree(tiny_build.out_dir, out)
    return work, out


def test_disk_full_during_export_keeps_the_old_folder_and_resumes(tiny_build, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the second dataset shard: one line, exit 2, the existing dataset folder
    untouched, no staging folder left; once the disk is fixed the same command gives the same bytes."""
    from synthvlm_data.cli import main
    from synthvlm_data.stages.export import ShardWriter

    work, out = _copy_run(tiny_build, tmp_path)
    before = parquet_checksums(out)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_tiny_recipe().model_dump(mode="json")))
    real, calls = ShardWriter.close, {"n": 0}  # writes one published shard

    def full_disk(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return real(self)

    monkeypatch.setattr(ShardWriter, "close", full_disk)
    argv = ["build", "--recipe", str(recipe), "--work-dir", str(work), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "re-run the same command" in err
    assert parquet_checksums(out) == before
    assert not list(tmp_path.glob(".synthvlm-tiny.*"))  # the staging folder was removed
    monkeypatch.setattr(ShardWriter, "close", real)
    assert main(argv) == 0
    assert parquet_checksums(out) == parquet_checksums(tiny_build.out_dir)


def test_read_only_work_dir_is_one_line(tmp_path, monkeypatch, capsys):
    """A work dir that cannot be written (EROFS on its first file) fails before any stage, in one line."""
    from synthvlm_data import workdir as workdir_mod
    from synthvlm_data.cli import main

    def read_only(path, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(workdir_mod, "atomic_write_bytes", read_only)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_tiny_recipe().model_dump(mode="json")))
    code = main(["build", "--recipe", str(recipe), "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "Read-only file system" in err and "recipe.yaml" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "work" / "captions").exists()


def test_leftovers_of_killed_runs_are_swept(tiny_build, tmp_path):
    """Temp shard files and unfinished exports of dead processes go; a live process's staging stays."""
    work, out = _copy_run(tiny_build, tmp_path)
    tmp_file = work / "generate" / ".tmp-generate-00000-of-00003.parquet-123-abcd"
    tmp_file.write_bytes(b"partial")
    dead = tmp_path / ".synthvlm-tiny.partial-4194305-deadbeef"  # above Linux's pid_max: never alive
    (dead / "data").mkdir(parents=True)
    (dead / "data" / "train-00000-of-00001.parquet").write_bytes(b"x" * 1000)
    old = tmp_path / ".synthvlm-tiny.old-4194305-cafe"
    old.mkdir()
    alive = tmp_path / f".synthvlm-tiny.partial-{os.getpid()}-feed"
    alive.mkdir()
    res = build(small_tiny_recipe(), out, work_dir=work, progress=False)
    assert not tmp_file.exists() and not dead.exists() and not old.exists()
    assert alive.is_dir()
    assert parquet_checksums(res.out_dir) == parquet_checksums(tiny_build.out_dir)


def test_one_line_error_text_survives_empty_and_multiline_messages():
    from synthvlm_data.errors import one_line

    assert one_line(RuntimeError()) == "RuntimeError"  # no IndexError on an empty message
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(OSError("x" * 500), 10) == "OSError: " + "x" * 10
