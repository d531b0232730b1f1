"""Recipe loading and validation: every error names the key and the file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthvlm_data.config import load_recipe, shipped_recipes
from synthvlm_data.errors import RecipeError


def _write(tmp_path: Path, data) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _tiny_dict() -> dict:
    from importlib import resources

    return yaml.safe_load((resources.files("synthvlm_data.recipes") / "tiny.yaml").read_text())


def test_shipped_recipes_validate():
    assert {"tiny", "synthvlm-100k"} <= set(shipped_recipes())
    for name in shipped_recipes():
        load_recipe(name)


def test_paper_values_in_synthvlm_100k():
    r = load_recipe("synthvlm-100k")
    assert r.generate.model.id == "stabilityai/stable-diffusion-xl-base-1.0"
    assert r.generate.refiner.id == "stabilityai/stable-diffusion-xl-refiner-1.0"
    assert (r.generate.steps, r.generate.height, r.generate.width) == (60, 1024, 1024)
    assert r.generate.high_noise_frac == 0.8
    assert (r.score.clip.model.id, r.score.clip.model.revision) == ("ViT-B-32", "openai")
    assert (r.score.ssim.size, r.score.ssim.down, r.score.ssim.grayscale) == (768, 336, True)
    assert (r.select.w_clip, r.select.w_ssim, r.select.top_n) == (1.0, 0.5, 100_000)
    assert r.export.license == "cc-by-nc-4.0"


def test_user_yaml_path_loads(tmp_path):
    d = _tiny_dict()
    d["name"] = "mine"
    assert load_recipe(_write(tmp_path, d)).name == "mine"


def test_unknown_key_is_named(tmp_path):
    d = _tiny_dict()
    d["generate"]["stepz"] = 3
    with pytest.raises(RecipeError, match=r"unknown key 'generate\.stepz'") as e:
        load_recipe(_write(tmp_path, d))
    assert "r.yaml" in str(e.value)


def test_wrong_type_is_named(tmp_path):
    d = _tiny_dict()
    d["generate"]["steps"] = "many"
    with pytest.raises(RecipeError, match=r"'generate\.steps'.*'many'"):
        load_recipe(_write(tmp_path, d))


def test_out_of_range_is_named(tmp_path):
    d = _tiny_dict()
    d["generate"]["high_noise_frac"] = 1.5
    with pytest.raises(RecipeError, match=r"generate\.high_noise_frac"):
        load_recipe(_write(tmp_path, d))


def test_missing_key_is_named(tmp_path):
    d = _tiny_dict()
    del d["generate"]["model"]
    with pytest.raises(RecipeError, match=r"missing key 'generate\.model'"):
        load_recipe(_write(tmp_path, d))


def test_missing_file_and_unknown_name():
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe("no/such/recipe.yaml")
    with pytest.raises(RecipeError, match="unknown recipe 'nope'.*tiny"):
        load_recipe("nope")


def test_yaml_syntax_error_has_location(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML at line"):
        load_recipe(_write(tmp_path, "name: [unclosed\nseed: 1\n"))


def test_top_n_and_ratio_are_exclusive(tmp_path):
    d = _tiny_dict()
    d["select"]["top_n"] = 10
    with pytest.raises(RecipeError, match="either top_n or ratio"):
        load_recipe(_write(tmp_path, d))


def test_fingerprint_changes_with_content():
    a = load_recipe("tiny")
    b = load_recipe("tiny", overrides={"seed": 99})
    assert a.fingerprint() == load_recipe("tiny").fingerprint()
    assert a.fingerprint() != b.fingerprint()
    # The shard fingerprint ignores what only selection/export use.
    c = load_recipe("tiny", overrides={"select": {"ratio": 0.1}, "export": {"rows_per_shard": 3}})
    assert a.shards_fingerprint() == c.shards_fingerprint() and a.fingerprint() != c.fingerprint()
    assert a.shards_fingerprint() != b.shards_fingerprint()


def test_cli_reports_bad_recipe_in_one_line(tmp_path):
    d = _tiny_dict()
    d["bogus"] = 1
    p = _write(tmp_path, d)
    proc = subprocess.run(
        [sys.executable, "-m", "synthvlm_data.cli", "validate", str(p)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "unknown key 'bogus'" in proc.stderr


def test_synth2_recipe_is_llm_captions_in_latent_space():
    """Synth^2: every caption LLM-written over the concept list (balanced), latents instead of
    pixels, per-cluster quotas; real Hub models for the LLM and the generator."""
    r = load_recipe("synth2")
    assert r.profile == "full" and r.captions.sources == []
    syn = r.captions.synthesis
    assert syn is not None and syn.concepts_file == "package://concepts.txt" and syn.n_per_concept >= 1
    ep = r.captions.step_endpoint(syn)  # Llama-3-70B-Instruct on a tensor-parallel server
    assert ep is not None and ep.model.startswith("meta-llama/") and "70B-Instruct" in ep.model
    assert r.generate.output == "latents" and r.generate.refiner is None
    assert r.select.diversity is not None and r.select.diversity.quota == "uniform"
    from synthvlm_data.captions.concepts import load_concepts

    assert r.select.top_n <= len(load_concepts(syn.concepts_file)) * syn.n_per_concept  # enough captions to choose from


@pytest.mark.parametrize("name", ["synth2", "synthvlm-sd3"])
def test_other_full_recipes_stop_offline_naming_the_model(name, monkeypatch):
    from synthvlm_data.build import preflight
    from synthvlm_data.errors import ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = load_recipe(name)
    with pytest.raises(ModelUnavailableError, match=re.escape(r.generate.model.id)) as e:
        preflight(r)
    assert "`--recipe tiny`" in str(e.value)


def test_full_recipe_on_a_cpu_only_machine_is_refused_unless_asked(monkeypatch):
    """With the models available but no GPU, synthvlm-100k would start 60-step SDXL at 1024 px on the
    CPU: refused in one line, unless the recipe sets generate.device: cpu; tiny recipes always run."""
    import torch

    from synthvlm_data.build import check_accelerator
    from synthvlm_data.errors import SynthVLMError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SynthVLMError, match=r"needs a CUDA GPU.*generate.device: cpu.*--recipe tiny"):
        check_accelerator(load_recipe("synthvlm-100k"))
    check_accelerator(load_recipe("synthvlm-100k", overrides={"generate": {"device": "cpu"}}))
    check_accelerator(load_recipe("tiny"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_accelerator(load_recipe("synthvlm-100k"))


def test_cli_help_lists_every_subcommand():
    proc = subprocess.run([sys.executable, "-m", "synthvlm_data.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for command in ("build", "pilot", "decode", "recipes", "validate", "report", "publish"):
        assert re.search(rf"^\s+{command}\s", proc.stdout, flags=re.M), command
    listed = subprocess.run([sys.executable, "-m", "synthvlm_data.cli", "recipes"], capture_output=True, text=True, timeout=60)
    assert [line.split()[0] for line in listed.stdout.splitlines()] == shipped_recipes()


def _validate_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthvlm_data.cli", "validate", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_validate_checks_files_and_models_and_names_the_work_dir(tmp_path):
    """`validate` runs build's preflight: a missing caption file fails in one line (it used to
    say ok, and build failed after loading models); an ok names the work dir build will use."""
    from synthvlm_data.workdir import WorkDir

    d = _tiny_dict()
    d["captions"]["sources"][0]["path"] = str(tmp_path / "nope.jsonl")
    proc = _validate_cli(str(_write(tmp_path, d)))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "nope.jsonl" in proc.stderr and "does not exist" in proc.stderr
    assert _validate_cli("--schema-only", str(_write(tmp_path, d))).returncode == 0
    ok = _validate_cli("tiny", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    work = WorkDir.default(load_recipe("tiny")).root
    assert f"{work}/" in ok.stdout and "models" in ok.stdout
    # The fingerprint printed next to the work dir is the one in its name.
    stages_fp = ok.stdout.split("stages fingerprint ", 1)[1].split(")", 1)[0]
    assert work.name.endswith(f"-{stages_fp}")
    full = _validate_cli("synthvlm-100k", cwd=tmp_path)  # offline: its Hub models cannot load
    assert full.returncode != 0 and "Traceback" not in full.stderr and "HF_HUB_OFFLINE" in full.stderr


def test_unknown_keys_suggest_the_right_key_and_recipe():
    """A typo gets a "did you mean", list entries are 1-based with their type, and the hint names
    the shipped recipe the file comes from (not always tiny)."""
    with pytest.raises(RecipeError) as err:
        load_recipe("synthvlm-100k", overrides={"select": {"topn": 3}})
    assert "unknown key 'select.topn' (did you mean 'top_n'?)" in str(err.value)
    assert "recipes --show synthvlm-100k" in str(err.value)
    filters = [{"type": "alnum_ratio"}, {"type": "perplexity", "max_perplexity": 9.0, "batch_sise": 2}]
    with pytest.raises(RecipeError) as err:
        load_recipe("tiny", overrides={"captions": {"filters": filters}})
    assert "'captions.filters #2 (perplexity).batch_sise' (did you mean 'batch_size'?)" in str(err.value)
    assert "recipes --show tiny" in str(err.value)
