"""Recipe composition (`extends`) and the rules the shipped recipes keep: full-scale LLM steps on a
server, no recipe a near-copy of another, an in-process LLM refused where it cannot fit."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from importlib import resources
from pathlib import Path

import pytest
import yaml

from synthvlm_data.config import Recipe, load_recipe, recipe_from_dict, shipped_recipes
from synthvlm_data.errors import RecipeError, SynthVLMError
from synthvlm_data.recipe_extends import merge


def _shipped(name: str) -> dict:
    return yaml.safe_load((resources.files("synthvlm_data.recipes") / f"{name}.yaml").read_text())


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _dump(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json")


# --------------------------------------------------------------------------- composition


def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    """A base path is relative to the extending file; mappings merge key by key, a list replaces
    the base's whole."""
    base = _shipped("tiny")
    _write(tmp_path / "bases" / "base.yaml", base)
    filters = [{"type": "alnum_ratio", "min_ratio": 0.5}]
    child = _write(tmp_path / "mine" / "child.yaml", {
        "extends": "../bases/base.yaml",
        "name": "child",
        "generate": {"steps": 3, "refiner": None},
        "captions": {"filters": filters},
    })
    got = load_recipe(child)
    want = load_recipe("tiny", overrides={"name": "child", "generate": {"steps": 3, "refiner": None},
                                          "captions": {"filters": filters}})
    assert _dump(got) == _dump(want)
    assert got.generate.refiner is None and base["generate"]["refiner"] is not None
    assert got.generate.guidance_scale == load_recipe("tiny").generate.guidance_scale  # inherited
    assert [f.type for f in got.captions.filters] == ["alnum_ratio"]  # the list replaced, not appended
    assert "extends" not in _dump(got)


def test_merge_rules():
    assert merge({"a": {"b": 1, "c": 2}, "d": [1, 2], "e": {"f": 1}}, {"a": {"b": None}, "d": [3], "e": None}) == {
        "a": {"b": None, "c": 2}, "d": [3], "e": None}


def test_a_new_model_id_does_not_inherit_the_old_models_revision(tmp_path):
    """A model reference (a mapping with an `id`) replaces the base's whole: the SDXL revision or
    fp16 variant must not be requested from another repository."""
    assert merge({"m": {"id": "a/x", "revision": "abc", "variant": "fp16"}}, {"m": {"id": "b/y"}}) == {"m": {"id": "b/y"}}
    assert merge({"m": {"id": "a/x", "revision": "abc"}}, {"m": {"revision": "def"}}) == {
        "m": {"id": "a/x", "revision": "def"}}  # no id: the same model at another revision
    base = _write(tmp_path / "base.yaml", {**_shipped("tiny"), "name": "base"})
    data = yaml.safe_load(base.read_text())
    data["generate"]["model"] = {"id": data["generate"]["model"]["id"] if isinstance(data["generate"]["model"], dict)
                                 else data["generate"]["model"], "revision": "0123abc"}
    base.write_text(yaml.safe_dump(data))
    child = _write(tmp_path / "child.yaml", {"extends": "base.yaml", "name": "child",
                                             "generate": {"model": {"id": "someone/other-model"}}})
    got = load_recipe(str(child))
    assert got.generate.model.id == "someone/other-model" and got.generate.model.revision is None


def test_null_in_an_extending_recipe_means_what_it_means_anywhere(tmp_path):
    """null is a value, not a delete: `refiner: null` turns the inherited refiner off and
    `id_column: null` (row numbers) stays null instead of falling back to the default `id`, exactly
    as in the same recipe written without a base."""
    sources = _shipped("tiny")["captions"]["sources"]
    assert sources[0].get("id_column", "id") is not None
    child = _write(tmp_path / "child.yaml", {
        "extends": "tiny", "generate": {"refiner": None},
        "captions": {"judge": None, "sources": [dict(sources[0], id_column=None)]}})
    got = load_recipe(child)
    assert got.generate.refiner is None and got.captions.judge is None
    assert got.captions.sources[0].id_column is None
    flat = {**_shipped("tiny")}
    flat["generate"] = {**flat["generate"], "refiner": None}
    flat["captions"] = {**flat["captions"], "judge": None, "sources": [dict(sources[0], id_column=None)]}
    assert _dump(got) == _dump(recipe_from_dict(flat))


def test_chains_of_bases_and_shipped_names(tmp_path):
    _write(tmp_path / "mid.yaml", {"extends": "tiny", "seed": 7, "select": {"ratio": 0.25}})
    top = _write(tmp_path / "top.yaml", {"extends": "mid.yaml", "name": "top", "seed": 9})
    got = load_recipe(top)
    assert (got.name, got.seed, got.select.ratio) == ("top", 9, 0.25)
    assert _dump(got) == _dump(load_recipe("tiny", overrides={"name": "top", "seed": 9, "select": {"ratio": 0.25}}))


def test_a_cycle_is_refused_in_one_line(tmp_path):
    _write(tmp_path / "a.yaml", {"extends": "b.yaml", "name": "a"})
    _write(tmp_path / "b.yaml", {"extends": "./a.yaml"})
    with pytest.raises(RecipeError, match=r"cycle \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)") as err:
        load_recipe(tmp_path / "a.yaml")
    assert "\n" not in str(err.value)
    _write(tmp_path / "self.yaml", {"extends": "self.yaml"})
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "self.yaml")


def test_bad_extends_names_the_file_and_the_way_out(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown recipe 'synthvlm-1m' \(the `extends` of .*c\.yaml\)"):
        load_recipe(_write(tmp_path / "c.yaml", {"extends": "synthvlm-1m"}))
    with pytest.raises(RecipeError, match=r"gone\.yaml does not exist \(the `extends` of .*d\.yaml\)"):
        load_recipe(_write(tmp_path / "d.yaml", {"extends": "gone.yaml"}))
    with pytest.raises(RecipeError, match=r"'extends' must name a shipped recipe or a YAML path \(got \['tiny'\]\)"):
        load_recipe(_write(tmp_path / "e.yaml", {"extends": ["tiny"]}))


def test_an_unknown_key_names_the_file_it_came_from(tmp_path):
    base = _shipped("tiny")
    base["generate"]["stepz"] = 3
    _write(tmp_path / "base.yaml", base)
    child = _write(tmp_path / "child.yaml", {"extends": "base.yaml", "select": {"topn": 5}})
    with pytest.raises(RecipeError) as err:
        load_recipe(child)
    msg = str(err.value)
    assert f"invalid recipe {child} (extends {tmp_path / 'base.yaml'})" in msg
    assert f"unknown key 'generate.stepz' (set in {tmp_path / 'base.yaml'})" in msg
    assert "unknown key 'select.topn' (did you mean 'top_n'?)" in msg  # the named file's own key: no suffix


def test_the_merged_recipe_is_recorded_in_full(tmp_path):
    """The work dir and the dataset card record the merged recipe (no `extends`), and reading it
    back gives the same recipe and fingerprint: provenance does not depend on the base files."""
    from synthvlm_data.presentation.describe import recipe_yaml
    from synthvlm_data.workdir import WorkDir

    recipe = load_recipe("synthvlm-sd3")
    work = WorkDir(tmp_path / "run")
    work.init(recipe)
    recorded = yaml.safe_load(work.recipe_text())
    assert "extends" not in recorded and recorded == _dump(recipe)
    assert work.recipe().fingerprint() == recipe.fingerprint()
    assert yaml.safe_load(recipe_yaml(recipe)) == recorded


def test_recipe_from_a_mapping_resolves_extends():
    assert _dump(recipe_from_dict({"extends": "tiny", "seed": 3})) == _dump(load_recipe("tiny", overrides={"seed": 3}))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthvlm_data.cli", *args], capture_output=True, text=True,
                          check=False, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_recipes_show_prints_the_merged_recipe():
    shown = _cli("recipes", "--show", "synthvlm-sd3")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# synthvlm-sd3: merged from synthvlm-100k <- synthvlm-sd3")
    printed = yaml.safe_load(shown.stdout)
    assert "extends" not in printed
    assert _dump(recipe_from_dict(printed)) == _dump(load_recipe("synthvlm-sd3"))
    raw = _cli("recipes", "--show", "synthvlm-sd3", "--raw")
    assert raw.returncode == 0 and "extends: synthvlm-100k" in raw.stdout
    plain = _cli("recipes", "--show", "synthvlm-100k")  # extends nothing: the file, comments included
    assert plain.stdout.rstrip("\n") == (resources.files("synthvlm_data.recipes") / "synthvlm-100k.yaml").read_text().rstrip("\n")


# --------------------------------------------------------------------------- synthvlm-sd3


# What synthvlm-sd3.yaml said before it extended synthvlm-100k, where it differed from it on purpose.
SD3_GENERATE = {
    "pipeline": "sd3", "model": {"id": "stabilityai/stable-diffusion-3-medium-diffusers"}, "steps": 60,
    "guidance_scale": 10.0, "max_sequence_length": 512, "negative_prompt": "", "height": 1024, "width": 1024,
    "images_per_caption": 1, "batch_size": 8, "dtype": "float16",
    "image_format": "jpeg",  # the base's since the storage-format measurement (was png)
    "vae_slicing": True,  # added with the base's (a lower decode peak at 8 x 1024 px); no fp16 variant files
}
SD3_DESCRIPTION = (
    "SynthVLM with SD3-medium: 100K of ~1M curated captions paired with SD3 images, selected by "
    "CLIPScore + 0.5 * SSIM (paper selection, official SD3 generation settings)."
)


def test_sd3_is_the_sdxl_recipe_plus_its_generator():
    """synthvlm-sd3 = synthvlm-100k with the SD3 generator, name and export name. Against its old
    full copy, the one difference is the fix: the 70B judge is on the base's server, not in-process."""
    base = _shipped("synthvlm-100k")
    old_sd3 = {k: v for k, v in base.items() if k not in ("name", "description", "generate", "export")}
    old_sd3 = {"name": "synthvlm-sd3", "description": SD3_DESCRIPTION, **old_sd3, "generate": SD3_GENERATE,
               "export": {**base["export"], "name": "synthvlm-sd3", "pretty_name": "SynthVLM-SD3"}}
    fixed = {**old_sd3, "captions": base["captions"]}
    old_sd3 = {**old_sd3, "captions": {**base["captions"],
                                       "judge": {**{k: v for k, v in base["captions"]["judge"].items() if k != "endpoint"},
                                                 "model": {"id": "meta-llama/Meta-Llama-3-70B-Instruct"}}}}
    sd3 = load_recipe("synthvlm-sd3")
    assert _dump(sd3) == _dump(recipe_from_dict(fixed))
    differs = {k for k, v in _dump(recipe_from_dict(old_sd3))["captions"].items() if v != _dump(sd3)["captions"][k]}
    assert differs == {"judge"}
    assert sd3.captions.judge.model is None and sd3.captions.step_endpoint(sd3.captions.judge) is not None
    assert sd3.captions.judge == load_recipe("synthvlm-100k").captions.judge
    assert sd3.generate.refiner is None and sd3.generate.pipeline == "sd3"


# --------------------------------------------------------------------------- rules over the shipped recipes


def _merged(name: str) -> dict:
    from synthvlm_data.recipe_extends import locate, resolve

    return resolve(locate(name)).data


def _leaves(value) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values()) or 1
    if isinstance(value, list):
        return sum(_leaves(v) for v in value) or 1
    return 1


def _patch_size(base: dict, target: dict) -> int:
    """How many values a recipe extending `base` would write to become `target`: keys to set
    (a list counts all its values: it is replaced whole) and keys to delete (1 each)."""
    n = 0
    for key in base.keys() | target.keys():
        if key not in target:
            n += 1
        elif key not in base:
            n += _leaves(target[key])
        elif isinstance(base[key], dict) and isinstance(target[key], dict):
            n += _patch_size(base[key], target[key])
        elif base[key] != target[key]:
            n += _leaves(target[key])
    return n


def _bases(name: str) -> list[str]:
    from synthvlm_data.recipe_extends import locate, resolve

    return [f.label for f in resolve(locate(name)).chain[1:]]


def test_no_shipped_recipe_is_a_near_copy_of_another():
    """A recipe could inherit what it repeats when, written as `extends: <other>`, less than half of
    it would remain to write (an SD3 variant of synthvlm-100k: ~15%; unrelated recipes: > 65%).
    Such a pair must extend one another, so a change to the base cannot miss the copy."""
    names = shipped_recipes()
    merged = {n: _merged(n) for n in names}
    for a in names:
        for b in names:
            if a == b or a in _bases(b) or b in _bases(a):
                continue
            share = _patch_size(merged[a], merged[b]) / _leaves(merged[b])
            assert share >= 0.5, f"{b} repeats {1 - share:.0%} of {a}: write it as `extends: {a}`"


def _no_ops(base: dict, child: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in child.items():
        path = f"{prefix}{key}"
        if key not in base:
            if value is None:
                out.append(f"{path}: null deletes nothing")
        elif isinstance(value, dict) and isinstance(base[key], dict):
            out += _no_ops(base[key], value, path + ".")
        elif value == base[key]:
            out.append(f"{path} repeats the base's value")
    return out


def test_an_extending_recipe_writes_only_what_differs_from_its_base():
    extending = [n for n in shipped_recipes() if _bases(n)]
    assert "synthvlm-sd3" in extending
    for name in extending:
        own = {k: v for k, v in _shipped(name).items() if k != "extends"}
        assert _no_ops(_merged(_bases(name)[0]), own) == [], name


def test_every_full_scale_llm_step_is_on_a_server(monkeypatch):
    """The judge and synthesis of every full-scale shipped recipe ask an OpenAI-compatible server;
    what stays in-process (the perplexity LM) passes the memory rule on one 24 GB GPU."""
    from synthvlm_data.build import check_llm_memory
    from synthvlm_data.models.llm_memory import lm_steps

    full = [n for n in shipped_recipes() if load_recipe(n).profile == "full"]
    assert {"synthvlm-100k", "synthvlm-sd3", "synth2"} <= set(full)
    for name in full:
        c = load_recipe(name).captions
        llm = [s for s in (c.judge if c.sources else None, c.synthesis) if s is not None]
        assert llm, name
        assert all(c.step_endpoint(s) is not None for s in llm), name
        assert all(s.server_key is None for s in lm_steps(c)), name
    _fake_gpus(monkeypatch, [24e9])
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for name in full:
        check_llm_memory(load_recipe(name))


# --------------------------------------------------------------------------- the memory rule


def _fake_gpus(mp: pytest.MonkeyPatch, sizes: list[float]) -> None:
    import torch

    mp.setattr(torch.cuda, "is_available", lambda: bool(sizes))
    mp.setattr(torch.cuda, "device_count", lambda: len(sizes))
    mp.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=sizes[int(i)]))


IN_PROCESS_70B = {"captions": {"judge": {"endpoint": None, "model": {"id": "meta-llama/Meta-Llama-3-70B-Instruct"}}}}


def test_an_in_process_70b_judge_is_refused_on_one_gpu_with_the_serve_command(monkeypatch):
    """The old synthvlm-sd3 (70B judge in-process) on one 80 GB GPU: refused in one line that gives
    the `vllm serve` command and the endpoint form, before any weights download."""
    from synthvlm_data.build import check_llm_memory

    _fake_gpus(monkeypatch, [80e9])
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    old_sd3 = load_recipe("synthvlm-sd3", overrides=IN_PROCESS_70B)
    with pytest.raises(SynthVLMError) as err:
        check_llm_memory(old_sd3)
    msg = str(err.value)
    assert "\n" not in msg
    assert "captions judge: in-process model 'meta-llama/Meta-Llama-3-70B-Instruct'" in msg
    assert "~169 GB" in msg and "1 GPU(s) of 80 GB" in msg
    assert "`vllm serve meta-llama/Meta-Llama-3-70B-Instruct --tensor-parallel-size 4 --port 8000`" in msg
    assert 'captions.judge: {endpoint: {url: "http://localhost:8000/v1", model: meta-llama/Meta-Llama-3-70B-Instruct}}' in msg
    for name in shipped_recipes():  # every shipped recipe passes on the same GPU
        check_llm_memory(load_recipe(name))


def test_the_budget_is_the_gpus_a_process_spreads_over(monkeypatch):
    """`device_map="auto"` spreads one process's LM over every visible GPU: 8 x 80 GB hold the 70B
    judge, unless 8 ranks of a launch share them; `cuda:N` is that GPU alone."""
    from synthvlm_data.build import check_llm_memory

    _fake_gpus(monkeypatch, [80e9] * 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    check_llm_memory(load_recipe("synthvlm-sd3", overrides=IN_PROCESS_70B))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(SynthVLMError, match="shared by 8 processes"):
        check_llm_memory(load_recipe("synthvlm-sd3", overrides=IN_PROCESS_70B))
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    with pytest.raises(SynthVLMError, match=r"cuda:3, 80 GB"):
        check_llm_memory(load_recipe("synthvlm-sd3", overrides={**IN_PROCESS_70B, "captions": {
            **IN_PROCESS_70B["captions"], "device": "cuda:3"}}))


def _llama_folder(path: Path) -> Path:
    from transformers import LlamaConfig

    LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4).save_pretrained(path)
    return path


def test_a_local_model_is_sized_from_its_config_and_dtype(tmp_path, monkeypatch):
    """A local folder's size comes from its config.json (exact count on the meta device), bytes per
    parameter from the dtype; on the CPU the budget is the host's memory."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from synthvlm_data.build import check_llm_memory
    from synthvlm_data.models import llm_memory
    from synthvlm_data.models.refs import ModelRef

    folder = _llama_folder(tmp_path / "lm")
    exact = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).parameters())
    assert llm_memory.parameter_count(ModelRef(id=str(folder))) == exact
    judge = {"captions": {"filters": [], "judge": {"endpoint": None, "model": {"id": str(folder)}}}}
    _fake_gpus(monkeypatch, [exact * 2 * 1.2 * 1.01])  # room for bf16, not for fp32
    check_llm_memory(load_recipe("synthvlm-100k", overrides=judge))
    with pytest.raises(SynthVLMError, match=r"x 4 bytes"):
        check_llm_memory(load_recipe("synthvlm-100k", overrides={"captions": {**judge["captions"], "dtype": "float32"}}))
    _fake_gpus(monkeypatch, [])
    page = os.sysconf("SC_PAGE_SIZE")
    monkeypatch.setattr(os, "sysconf", lambda k: page if k == "SC_PAGE_SIZE" else int(exact * 4 * 1.2 / page) - 1)
    with pytest.raises(SynthVLMError, match=r"the CPU, 0 GB of host memory"):
        check_llm_memory(load_recipe("synthvlm-100k", overrides={**judge, "generate": {"device": "cpu"}}))


def test_an_in_process_only_step_is_told_to_use_a_smaller_model(monkeypatch):
    from synthvlm_data.build import check_llm_memory

    _fake_gpus(monkeypatch, [16e9])  # 8B in bf16 + 20%: ~19 GB
    filters = _shipped("synthvlm-100k")["captions"]["filters"]
    big = [dict(f, model={"id": "meta-llama/Meta-Llama-3-8B-Instruct"}) if f["type"] == "perplexity" else f
           for f in filters]
    with pytest.raises(SynthVLMError, match=r"captions filter 'perplexity'.*always runs in-process: name a smaller model"):
        check_llm_memory(load_recipe("synthvlm-100k", overrides={"captions": {"filters": big}}))


def test_a_model_of_unknown_size_is_not_checked_and_says_so(monkeypatch, capsys):
    from synthvlm_data.build import check_llm_memory

    _fake_gpus(monkeypatch, [1e9])
    check_llm_memory(load_recipe("synthvlm-100k", overrides={"captions": {"judge": {
        "endpoint": None, "model": {"id": "someone/unknown-llm"}}}}))
    assert "captions judge: memory not checked: the size of 'someone/unknown-llm' is unknown" in capsys.readouterr().err
