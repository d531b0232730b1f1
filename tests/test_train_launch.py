"""`accelerate launch train/pretrain.py` end to end on the CPU, 1 and 2 processes, offline.

The 1-process run is a default test; the 2-process run (slow) checks that DDP over gloo with the
same global batch (2 per device x 2 ranks vs 2 per device x 2 accumulation steps) reproduces the
single-process loss curve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_training import ROOT, write_caption_folder  # tests/ is on sys.path (pytest rootdir conftest)

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def _env() -> dict[str, str]:
    # One intra-op thread per rank (the project default, stated here so a caller's env cannot change it).
    return {**os.environ, "HF_HUB_OFFLINE": "1", "SYNTHVLM_CPU_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run_args(dataset: Path, out: Path) -> list[str]:
    return ["train/pretrain.py", "--config", "train/configs/tiny.yaml", "--dataset", str(dataset),
            "--output_dir", str(out), "--max_samples", "10", "--eval_ratio", "0.2",
            "--per_device_train_batch_size", "2", "--global_batch_size", "4", "--max_steps", "2",
            "--warmup_ratio", "0", "--save_strategy", "no", "--eval_strategy", "no"]


def _launch(launcher: list[str], dataset: Path, out: Path) -> dict:
    proc = subprocess.run([*ACCELERATE, *launcher, *_run_args(dataset, out)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    log = json.loads((out / "training_log.json").read_text())
    log["stdout"] = proc.stdout
    return log


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_caption_folder(tmp_path_factory.mktemp("launch") / "synthvlm-fixture")


@pytest.fixture(scope="module")
def one_process_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("launch-1") / "tiny-pretrain"
    return out, _launch(["--cpu", "--num_processes", "1"], dataset, out)


def test_accelerate_launch_one_process(one_process_run):
    from huggingface_hub import ModelCard

    out, log = one_process_run
    res = log["results"]
    assert res["num_processes"] == 1 and res["steps"] == 2 and res["train_samples"] == 8
    assert res["threads_per_process"] == 1
    assert res["eval_samples"] == 2 and res["eval_loss"] is not None
    assert "1 process(es) x 2 x 2 accumulation = global batch 4" in log["stdout"]
    assert (out / "model.safetensors").is_file() and (out / "loss_curve.png").is_file()
    assert ModelCard.load(out / "README.md").data.pipeline_tag == "image-text-to-text"


def test_cpu_flag_with_several_processes_is_detected(monkeypatch):
    from synthvlm_data.training.cli import requested_cpu_processes_ignored

    launcher = ["python", "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2", "train/pretrain.py"]
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert requested_cpu_processes_ignored(launcher) == 2
    assert requested_cpu_processes_ignored([*launcher[:4], "--num_processes=1"]) is None
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun started the ranks: nothing was ignored
    assert requested_cpu_processes_ignored(launcher) is None


def test_shipped_configs_document_working_launch_commands(monkeypatch):
    """No config comment recommends `--cpu --num_processes N>1`, which starts one process (accelerate#2741)."""
    import shlex

    from synthvlm_data.training.cli import requested_cpu_processes_ignored

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    commands = [line.lstrip("# ").split("  #")[0] for path in sorted((ROOT / "train" / "configs").glob("*.yaml"))
                for line in path.read_text().splitlines() if line.lstrip("# ").startswith("accelerate launch")]
    assert len(commands) >= 5
    for command in commands:
        argv = shlex.split(command)
        monkeypatch.setenv("ACCELERATE_USE_CPU", "true" if "--cpu" in argv else "false")
        assert requested_cpu_processes_ignored(argv) is None, command
    tiny = (ROOT / "train" / "configs" / "tiny.yaml").read_text()
    assert "accelerate launch --config_file train/accelerate/cpu.yaml train/pretrain.py" in tiny


@pytest.mark.slow
def test_cpu_flag_with_several_processes_is_reported():
    """accelerate's --cpu starts one process whatever --num_processes says: we say so."""
    proc = subprocess.run([*ACCELERATE, "--cpu", "--num_processes", "2", "train/pretrain.py", "--config",
                           "train/configs/tiny.yaml", "--validate-only"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "started 1 process, not 2" in proc.stderr and "train/accelerate/cpu.yaml" in proc.stderr


@pytest.mark.slow
def test_accelerate_launch_two_processes_matches_one(one_process_run, dataset, tmp_path):
    out = tmp_path / "tiny-pretrain-2p"
    log = _launch(["--config_file", "train/accelerate/cpu.yaml", "--num_processes", "2"], dataset, out)
    assert log["results"]["num_processes"] == 2 and log["results"]["steps"] == 2
    assert "2 process(es) x 2 x 1 accumulation = global batch 4" in log["stdout"]
    one = [v for _, v in one_process_run[1]["loss"]["train"]]
    two = [v for _, v in log["loss"]["train"]]
    assert two == pytest.approx(one, abs=2e-3)  # same global batches, same curve
    assert log["results"]["eval_loss"] == pytest.approx(one_process_run[1]["results"]["eval_loss"], abs=2e-3)
