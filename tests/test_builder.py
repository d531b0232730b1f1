"""The `datasets` builder: one config per shipped recipe, the same rows as `synthvlm build`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from datasets import load_dataset

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `builders/` is a top-level folder, not an installed package (plain `pytest`)
    sys.path.insert(0, str(ROOT))

from builders import SynthVLM, SynthVLMConfig  # noqa: E402
from conftest import parquet_checksums, small_tiny_overrides, small_tiny_recipe  # noqa: E402
from synthvlm_data.config import shipped_recipes  # noqa: E402
from synthvlm_data.errors import SynthVLMError  # noqa: E402
from synthvlm_data.stages import GenerateStage, ScoreStage  # noqa: E402


def test_one_config_per_shipped_recipe():
    names = [c.name for c in SynthVLM.BUILDER_CONFIGS]
    assert sorted(names) == shipped_recipes() and "tiny" in names and "synthvlm-100k" in names
    assert all(isinstance(c, SynthVLMConfig) and c.description for c in SynthVLM.BUILDER_CONFIGS)


def test_configs_do_not_validate_every_recipe(monkeypatch, tmp_path):
    """Listing configs validates no recipe (one broken recipe cannot break the builder); using one does."""
    import builders.synthvlm as module
    from synthvlm_data.errors import RecipeError

    def broken(*args, **kwargs):
        raise RecipeError("broken recipe")

    monkeypatch.setattr(module, "load_recipe", broken)
    assert [c.name for c in module._shipped_configs()] == shipped_recipes()
    monkeypatch.undo()
    with pytest.raises(RecipeError, match="unknown key 'bogus'"):
        SynthVLM(config_name="tiny", overrides={"bogus": 1}, cache_dir=str(tmp_path))


def test_cache_key_follows_the_recipe(tmp_path):
    a = SynthVLM(config_name="tiny", overrides=small_tiny_overrides(), cache_dir=str(tmp_path))
    b = SynthVLM(config_name="tiny", overrides=small_tiny_overrides(seed=7), cache_dir=str(tmp_path))
    assert a.config_id == f"tiny-{small_tiny_recipe().fingerprint()}"
    assert a.config_id != b.config_id and a.cache_dir != b.cache_dir
    assert a.info.license == "apache-2.0" and "liu2024synthvlm" in a.info.citation


def test_builder_rows_equal_cli_rows(tiny_build, tmp_path, monkeypatch):
    """Resume the fixture's finished run through the builder: no stage re-runs, identical rows."""
    work = tmp_path / "work"
    shutil.copytree(tiny_build.work_dir, work)

    def must_not_run(self, ctx, unit):
        raise AssertionError(f"{unit} re-ran: the builder should resume the complete shards")

    monkeypatch.setattr(GenerateStage, "run", must_not_run)
    monkeypatch.setattr(ScoreStage, "run", must_not_run)
    builder = SynthVLM(config_name="tiny", overrides=small_tiny_overrides(), work_dir=work, out_dir=tmp_path / "out",
                       cache_dir=str(tmp_path / "cache"), progress=False)
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")

    cli = load_dataset(str(tiny_build.out_dir), split="train", cache_dir=str(tmp_path / "cache-cli"))
    assert ds.features == cli.features
    raw = datasets.Image(decode=False)
    assert ds.cast_column("image", raw).to_list() == cli.cast_column("image", raw).to_list()
    assert ds.num_rows == tiny_build.stats["selected"]
    # ...and the builder wrote the same Hub-ready folder as the CLI, byte for byte.
    assert parquet_checksums(tmp_path / "out") == parquet_checksums(tiny_build.out_dir)


def test_make_targets_go_through_builder_and_publish():
    dry = subprocess.run(["make", "-n", "build-dataset", "RECIPE=tiny", "OUT=x"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert "-m builders --recipe tiny --out x" in dry.stdout
    default = subprocess.run(["make", "-n", "build-dataset"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "-m builders --recipe synthvlm-100k" in default.stdout and "--out" not in default.stdout
    assert "accelerate launch" not in default.stdout
    multi = subprocess.run(["make", "-n", "build-dataset", "RECIPE=tiny", "NPROC=8"], capture_output=True, text=True,
                           cwd=ROOT, timeout=60)
    assert "accelerate launch --multi_gpu" in multi.stdout and "--num_processes 8 -m builders --recipe tiny" in multi.stdout
    assert "--backend accelerate" in multi.stdout
    pub = subprocess.run(["make", "-n", "publish", "DIR=x", "REPO_ID=o/n", "PUBLISH_ARGS=--dry-run"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "synthvlm publish x --repo-id o/n --dry-run" in pub.stdout
    demo = subprocess.run(["make", "-n", "demo"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "synthvlm build --recipe shapes --out synthvlm-shapes" in demo.stdout
    assert "synthvlm report synthvlm-shapes" in demo.stdout
    tiny = subprocess.run(["make", "-n", "demo-tiny"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "synthvlm build --recipe tiny --out synthvlm-tiny" in tiny.stdout
    world = subprocess.run(["make", "-n", "world-models"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "-m synthvlm_data.world build-models" in world.stdout


def test_builder_entry_stops_early_offline(tmp_path):
    """`make build-dataset` with no Hub: one line naming the model, before anything is written."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "builders", "--recipe", "synthvlm-100k", "--out", str(tmp_path / "o"),
         "--work-dir", str(tmp_path / "w"), "--cache-dir", str(tmp_path / "c")],
        capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "stabilityai/stable-diffusion-xl-base-1.0" in proc.stderr and "`--recipe tiny`" in proc.stderr
    assert not any((tmp_path / d).exists() for d in ("o", "w", "c"))


def test_builder_entry_writes_the_recipe_folder_with_its_quality_report(tiny_build, tmp_path, monkeypatch, capsys):
    """`python -m builders` (what `make build-dataset` runs): the dataset lands in the recipe's
    export.name folder, which load_dataset reads, and its card carries the quality report + plots."""
    import yaml

    from builders.__main__ import main

    work = tmp_path / "work"
    shutil.copytree(tiny_build.work_dir, work)
    recipe = tmp_path / "small-tiny.yaml"
    recipe.write_text(yaml.safe_dump(small_tiny_recipe().model_dump(mode="json")))
    monkeypatch.chdir(tmp_path)
    assert main(["--recipe", str(recipe), "--work-dir", str(work), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    folder = tmp_path / small_tiny_recipe().export.name
    assert parquet_checksums(folder) == parquet_checksums(tiny_build.out_dir)
    assert (folder / "plots" / "score_hist.png").is_file() and (folder / "plots" / "report.json").is_file()
    text = (folder / "README.md").read_text()
    assert "### Quality report" in text and "](plots/score_hist.png)" in text
    assert "real reference" in capsys.readouterr().out
    assert load_dataset(folder.name, split="train", cache_dir=str(tmp_path / "c2")).num_rows == tiny_build.stats["selected"]


def test_an_existing_export_of_the_recipe_is_read_not_rebuilt(tiny_build, tmp_path, monkeypatch, capsys):
    """A copied dataset folder (no work dir beside it): the builder reads it instead of regenerating
    every image, and its card keeps the quality report."""
    import synthvlm_data.build
    from synthvlm_data.presentation.cards import refresh_if_dataset
    from synthvlm_data.presentation.report import report_into_dataset

    folder = tmp_path / "synthvlm-copy"
    shutil.copytree(tiny_build.out_dir, folder)
    report_into_dataset(folder, tiny_build.work_dir)
    assert refresh_if_dataset(folder) is not None
    assert "plots/report.md" in (folder / "README.md").read_text()
    card = (folder / "README.md").read_bytes()
    monkeypatch.chdir(tmp_path)  # no runs/ here

    def must_not_run(*a, **k):
        raise AssertionError("the builder rebuilt an existing export")

    monkeypatch.setattr(synthvlm_data.build, "build", must_not_run)
    builder = SynthVLM(config_name="tiny", overrides=small_tiny_overrides(), out_dir=folder,
                       cache_dir=str(tmp_path / "cache"), progress=False)
    builder.download_and_prepare()
    assert builder.as_dataset(split="train").num_rows == tiny_build.stats["selected"]
    assert "already holds this recipe's dataset" in capsys.readouterr().out
    assert (folder / "README.md").read_bytes() == card and "### Quality report" in card.decode()


class _Rank:
    """One rank of a launch as the builder sees it (the `Backend` protocol): `broadcast` hands out
    what the main process sent, as accelerate's broadcast_object_list does."""

    name = "accelerate"

    def __init__(self, main: bool, sent: list):
        self.main, self.sent = main, sent

    def is_main_process(self) -> bool:
        return self.main

    def wait_for_everyone(self) -> None:
        pass

    def broadcast(self, obj):
        if self.main:
            self.sent.append(obj)
            return obj
        return self.sent.pop(0)


def test_ranks_follow_the_main_process_decision_and_failure(tiny_build, tmp_path, monkeypatch):
    """The main process decides whether the folder is already built and alone prepares the cache;
    when that fails, the other ranks stop with one line instead of waiting at a barrier for ever."""
    import synthvlm_data.backends
    import synthvlm_data.build

    folder = tmp_path / "synthvlm-copy"
    shutil.copytree(tiny_build.out_dir, folder)
    monkeypatch.setattr(synthvlm_data.build, "build", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("a rank rebuilt although the main process read the folder")))
    prepared = []

    def prepare(self, *a, **k):
        prepared.append(self.main_process)
        raise OSError("No space left on device")

    monkeypatch.setattr(datasets.GeneratorBasedBuilder, "download_and_prepare", prepare)
    sent: list = []
    for main in (True, False):
        monkeypatch.setattr(synthvlm_data.backends, "get_backend", lambda *a, m=main, **k: _Rank(m, sent))
        builder = SynthVLM(config_name="tiny", overrides=small_tiny_overrides(), out_dir=folder,
                           cache_dir=str(tmp_path / "cache"), progress=False, backend="accelerate")
        if main:
            with pytest.raises(OSError, match="No space left"):
                builder.download_and_prepare()
            assert sent == [True, "OSError: No space left on device"]
            shutil.rmtree(folder / "data")  # what the other rank would see now cannot change its path
        else:
            with pytest.raises(SynthVLMError, match=r"main process failed to prepare the Arrow cache "
                                                    r"\(OSError: No space left on device\)") as e:
                builder.download_and_prepare()
            assert "\n" not in str(e.value)
    assert prepared == [True] and sent == []
