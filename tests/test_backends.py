"""Backends write the same bytes: local vs accelerate (2 processes) vs ray (2 workers), and a
generate stage killed at a random point resumes (on another backend) to the same bytes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import parquet_checksums
from synthvlm_data.build import build
from synthvlm_data.config import _deep_merge, recipe_from_dict
from synthvlm_data.shards import ShardStore
from synthvlm_data.workunits import WorkUnit, plan_units

# 8 captions in 4 shards of 2, 2 images each (one batch of 4 per shard), 2 denoising steps.
TINIEST = {
    "rows_per_shard": 2,
    "generate": {"steps": 2, "images_per_caption": 2, "batch_size": 4},
    "select": {"ratio": 0.5},
    "export": {"rows_per_shard": 3},
}
STAGES = ("captions", "generate", "score", "select")
REPO = Path(__file__).resolve().parent.parent


def tiniest_recipe(**extra):
    """The shipped `tiny` recipe with its caption file only (8 captions, no caption-curation
    models: these tests are about generation and backends), made smaller by TINIEST + extra."""
    from importlib import resources

    data = yaml.safe_load((resources.files("synthvlm_data.recipes") / "tiny.yaml").read_text())
    # units of 4 source rows: the caption map has 2 units to share from the start (more if the limit needs)
    data["captions"] = {"sources": data["captions"]["sources"], "limit": 8, "chunk_size": 4}
    return recipe_from_dict(_deep_merge(data, _deep_merge(TINIEST, extra)), "tiny (tests)")


def run_checksums(work_dir: Path, out_dir: Path) -> dict:
    """Every stage manifest's shard checksums plus the exported parquet files' checksums."""
    sums = {s: json.loads((Path(work_dir) / s / "manifest.json").read_text())["shards"] for s in STAGES}
    sums["export"] = parquet_checksums(out_dir)
    return sums


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    res = build(tiniest_recipe(), root / "out", work_dir=root / "work", progress=False)
    sums = run_checksums(res.work_dir, res.out_dir)
    assert len(sums["generate"]) == 4 and sums["export"]
    return sums


def _recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiniest_recipe().model_dump(mode="json")))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def accelerate_launch(processes: int = 2) -> list[str]:
    """`accelerate launch` as the Makefile runs it (`--multi_gpu` starts N ranks via torchrun;
    without GPUs they are CPU processes on gloo)."""
    launcher = str(Path(sys.executable).with_name("accelerate"))
    return [
        launcher, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
    ]


def accelerate_build_cmd(recipe: Path, out: Path, work: Path, processes: int = 2) -> list[str]:
    """The documented launch: `accelerate launch -m synthvlm_data.cli build --backend accelerate`."""
    return accelerate_launch(processes) + [
        "-m", "synthvlm_data.cli", "build", "--recipe", str(recipe), "--backend", "accelerate", "--quiet",
        "--out", str(out), "--work-dir", str(work),
    ]


# --------------------------------------------------------------------------- accelerate


@pytest.mark.slow  # the builder test below runs the same build() on 2 ranks, through the datasets builder
def test_accelerate_two_processes_same_bytes(local_run, tmp_path):
    cmd = accelerate_build_cmd(_recipe_file(tmp_path), tmp_path / "out", tmp_path / "work")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("synthvlm build") == 1  # only the main process reports
    assert run_checksums(tmp_path / "work", tmp_path / "out") == local_run


def test_builder_under_accelerate_two_processes_same_bytes(local_run, tmp_path):
    """`make build-dataset NPROC=2`: the datasets builder on 2 ranks. Both build (the units are split
    over them), only the main process prepares the Arrow cache (datasets locks it for the whole of
    download_and_prepare: building under that lock deadlocked), and the bytes equal one process's."""
    cache = tmp_path / "cache"
    cmd = accelerate_launch(2) + [
        "-m", "builders", "--recipe", str(_recipe_file(tmp_path)), "--backend", "accelerate", "--quiet",
        "--no-report", "--cache-dir", str(cache), "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert run_checksums(tmp_path / "work", tmp_path / "out") == local_run
    assert len(list(cache.rglob("dataset_info.json"))) == 1  # one Arrow cache, prepared once
    rows = sum(pq.read_metadata(f).num_rows for f in (tmp_path / "out" / "data").glob("*.parquet"))
    assert proc.stdout.count("built ") == 1, proc.stdout  # only the main process reports
    assert f"built {tiniest_recipe().name}: {rows} rows" in proc.stdout


class _FakeState:
    """A rank of an N-process launch, for the unit-distribution logic (no process group)."""

    def __init__(self, rank: int, world: int):
        self.process_index, self.num_processes = rank, world
        self.is_main_process = rank == 0
        self.barriers = 0

    def wait_for_everyone(self):
        self.barriers += 1


class _RecordingStage:
    name = "generate"

    def __init__(self):
        self.ran, self.setups = [], 0

    def device(self, ctx):
        return "cpu"

    def setup(self, ctx):
        self.setups += 1

    def run(self, ctx, unit):
        import pyarrow as pa

        self.ran.append(unit.index)
        return pa.table({"x": [unit.index]})


def test_accelerate_ranks_split_only_pending_units_round_robin(tmp_path, monkeypatch):
    """Rank r of N runs pending[r::N] of the list the main process broadcasts; a rank with
    nothing to do loads no model; every rank ends the stage at a barrier."""
    import pyarrow as pa

    from synthvlm_data.backends import BackendOptions, accelerate as acc
    from synthvlm_data.stages import RunContext
    from synthvlm_data.workdir import WorkDir

    ctx = RunContext(recipe=tiniest_recipe(), work=WorkDir(tmp_path))
    store = ctx.store
    units = [WorkUnit("generate", i, 7) for i in range(7)]
    for done in (1, 4):
        store.write(units[done], pa.table({"x": [done]}))
    broadcast = {}

    def fake_broadcast(obj):  # rank 0 computes the list; the others receive it
        if obj is not None:
            broadcast["todo"] = obj
        return broadcast["todo"]

    monkeypatch.setattr(acc, "_broadcast", fake_broadcast)
    backend = acc.AccelerateBackend(BackendOptions())
    ran = {}
    for rank in range(3):
        st = _FakeState(rank, 3)
        monkeypatch.setattr(acc, "state", lambda timeout_s, st=st: st)
        stage = _RecordingStage()
        backend.run_stage(stage, ctx, units, progress=False)
        ran[rank] = (stage.ran, stage.setups, st.barriers)
    # pending = [0, 2, 3, 5, 6]; round-robin over it
    assert ran == {0: ([0, 5], 1, 1), 1: ([2, 6], 1, 1), 2: ([3], 1, 1)}
    assert all(store.is_complete(u) for u in units)
    st = _FakeState(1, 3)
    monkeypatch.setattr(acc, "state", lambda timeout_s: st)
    stage = _RecordingStage()
    broadcast["todo"] = []
    backend.run_stage(stage, ctx, units, progress=False)
    assert (stage.ran, stage.setups, st.barriers) == ([], 0, 1)


def test_cpu_thread_count_is_pinned_per_stage(monkeypatch):
    """CPU float results depend on the intra-op thread count, so every backend pins it."""
    import torch

    from synthvlm_data.backends import CPU_THREADS_ENV, BackendOptions
    from synthvlm_data.models.devices import pinned_threads
    from synthvlm_data.errors import SynthVLMError
    from synthvlm_data.stages import GenerateStage, RunContext
    from synthvlm_data.workdir import WorkDir

    ctx = RunContext(recipe=tiniest_recipe(), work=WorkDir("."))
    before = torch.get_num_threads()
    monkeypatch.setenv(CPU_THREADS_ENV, "3")  # a user's default; the CLI's --cpu-threads wins over it
    options = BackendOptions.from_env()
    with pinned_threads(GenerateStage().device(ctx), options.cpu_threads):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    assert BackendOptions.from_env(cpu_threads=2).cpu_threads == 2
    monkeypatch.setenv(CPU_THREADS_ENV, "zero")
    with pytest.raises(SynthVLMError, match=CPU_THREADS_ENV):
        BackendOptions.from_env()


def test_unknown_backend_names_the_choices():
    from synthvlm_data.backends import get_backend
    from synthvlm_data.errors import SynthVLMError

    with pytest.raises(SynthVLMError, match="local, accelerate, ray"):
        get_backend("spark")


# --------------------------------------------------------------------------- kill + resume


def local_build_cmd(recipe: Path, out: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "synthvlm_data.cli", "build", "--recipe", str(recipe), "--backend", "local",
            "--quiet", "--out", str(out), "--work-dir", str(work)]


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun starts each rank in its own session)."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=30)


@pytest.mark.parametrize("killed", ["local", pytest.param("accelerate", marks=pytest.mark.slow)])
def test_sigkill_at_random_point_then_resume_on_another_backend(local_run, tmp_path, killed):
    """SIGKILL a build (for accelerate: the launcher and every rank, like a lost node) at a random
    point of its generate stage (during model loading, or after k of 4 shards plus a random
    fraction of the next), then resume it in this process with the local backend: the result is
    byte-identical, and shards that were complete before the kill are not redone."""
    rng = random.Random(os.environ.get("SYNTHVLM_TEST_SEED"))
    k = rng.randrange(0, 4)
    delay = rng.uniform(0.0, 3.0) if k == 0 else rng.uniform(0.0, 0.3)
    out, work = tmp_path / "out", tmp_path / "work"
    recipe = _recipe_file(tmp_path)
    cmd = (accelerate_build_cmd if killed == "accelerate" else local_build_cmd)(recipe, out, work)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        deadline = time.time() + 300
        ready = (lambda: (work / "captions" / "manifest.json").is_file()) if k == 0 else (
            lambda: len(list((work / "generate").glob("*.parquet.sha256"))) >= k)
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        time.sleep(delay)
        alive = proc.poll() is None
        _kill_tree(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    where = f"killed {killed} after {k} generate shard(s) + {delay:.2f}s"
    assert alive, f"the build ended before the kill ({where}): {proc.stderr.read()[-2000:]}"
    assert not out.exists()
    store = ShardStore(work)
    complete = [store.path(u) for u in plan_units("generate", 4) if store.is_complete(u)]
    assert len(complete) >= k, where
    kept = {p: p.stat().st_mtime_ns for p in complete}
    resumed = build(tiniest_recipe(), out, work_dir=work, backend="local", progress=False)
    assert run_checksums(resumed.work_dir, resumed.out_dir) == local_run, where
    assert {p: p.stat().st_mtime_ns for p in complete} == kept, f"complete shards were redone ({where})"
    assert not list(work.rglob(".tmp-*"))  # temporaries of the killed writes never count as shards


# --------------------------------------------------------------------------- ray


def test_ray_two_workers_same_bytes(local_run, tmp_path, monkeypatch):
    """~40 s on 2 cores (Ray start + an actor pool per stage). Ray is a dev dependency: a missing
    Ray fails here instead of skipping, so the same-bytes claim is always checked."""
    import shutil
    import tempfile

    import ray

    from synthvlm_data.backends import BackendOptions

    # Ray's socket paths must stay under ~107 bytes: a short temp dir, not pytest's deep one.
    ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    options = BackendOptions(workers=2, ray_tmpdir=ray_tmp)  # a private local Ray, explicitly
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # Ray itself would join the cluster it names
    try:
        res = build(tiniest_recipe(), tmp_path / "out", work_dir=tmp_path / "work", backend="ray", options=options,
                    progress=False)
        assert run_checksums(res.work_dir, res.out_dir) == local_run
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_local_backend_refuses_to_run_as_one_of_many_ranks(monkeypatch):
    """`accelerate launch ... build` without --backend accelerate: say so, instead of N ranks
    each running every unit and then fighting over the work-dir lock."""
    from synthvlm_data.backends import get_backend
    from synthvlm_data.errors import SynthVLMError

    local = get_backend("local")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SynthVLMError, match="--backend accelerate"):
        local.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert local.is_main_process()
