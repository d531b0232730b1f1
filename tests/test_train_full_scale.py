"""The full-scale training path (7B/13B, DeepSpeed, GPUs), checked without GPUs or downloads:
dependencies of the launch configs, ZeRO-3 load order, refusing a GPU config without CUDA, the
paper configs against LLaVA-1.5's scripts, LLaVA's modality-grouped sampler, pickle-only Hub models."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip's vendored copy
    from pip._vendor import tomli as tomllib

from synthvlm_data.training import cli
from synthvlm_data.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "train" / "configs"
PAPER_CONFIGS = ["7b.yaml", "13b.yaml", "7b-synthmix.yaml", "13b-synthmix.yaml"]

# accelerate's distributed_type -> the package that runs it (torch itself needs no extra)
BACKEND_PACKAGES = {"DEEPSPEED": "deepspeed", "MEGATRON_LM": "megatron-core", "MULTI_GPU": None, "FSDP": None,
                    "NO": None, "MULTI_CPU": None, "XLA": "torch-xla"}


def declared_packages() -> dict[str, set[str]]:
    """{extra name: package names it installs} of pyproject.toml ('' = the core dependencies)."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    return {name: {Requirement(r).name.lower() for r in reqs} for name, reqs in groups.items()}


def test_every_accelerate_config_backend_is_installed_by_a_declared_extra():
    declared = declared_packages()
    configs = sorted((ROOT / "train" / "accelerate").glob("*.yaml"))
    assert configs
    for path in configs:
        kind = yaml.safe_load(path.read_text(encoding="utf-8"))["distributed_type"]
        assert kind in BACKEND_PACKAGES, f"{path.name}: unknown distributed_type {kind}"
        package = BACKEND_PACKAGES[kind]
        if package is not None:
            extras = [name for name, pkgs in declared.items() if package in pkgs]
            assert extras, f"{path.name} runs {kind}, but no extra of pyproject.toml installs {package}"
    assert "deepspeed" in declared["train"]
    assert "flash-attn" in declared["flash-attn"] and "flash-attn" not in declared["train"]  # it compiles
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -e '.[train]'" in readme


# --------------------------------------------------------------------------- ZeRO-3: arguments before the model


def test_training_arguments_exist_before_the_model_loads(monkeypatch, tmp_path):
    """transformers activates zero.Init from the SFTConfig's DeepSpeed config: it must be built first."""
    from synthvlm_data.training import run

    calls = []

    class Stop(Exception):
        pass

    cfg = load_config(CONFIGS / "tiny.yaml", ["--output_dir", str(tmp_path / "out")])
    monkeypatch.setattr(run, "check_model_sources", lambda *a: None)
    monkeypatch.setattr(run, "load_datasets", lambda *a: (calls.append("datasets"), ([1, 2], None))[1])
    monkeypatch.setattr(run, "build_sft_config", lambda *a, **k: calls.append("training arguments"))

    def load_model(*a):
        calls.append("model")
        raise Stop

    monkeypatch.setattr(run, "load_model", load_model)
    with pytest.raises(Stop):
        run.run_stage(cfg, "pretrain")
    assert calls == ["datasets", "training arguments", "model"]


ZERO3_PROBE = r"""
import os, sys
from synthvlm_data.training import run
from synthvlm_data.training.config import load_config
cfg = load_config("train/configs/tiny.yaml", ["--output_dir", sys.argv[1]], stage="finetune")
seen = {}
def load_model(*a):
    from transformers.integrations import is_deepspeed_zero3_enabled
    seen["zero3"] = is_deepspeed_zero3_enabled()
    raise SystemExit(0 if seen["zero3"] else 1)
run.check_model_sources = lambda *a: None
run.load_datasets = lambda *a: ([1, 2], None)
run.load_model = load_model
run.run_stage(cfg, "finetune")
"""


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (the train extra)")
def test_zero3_init_is_active_when_the_model_loads(tmp_path):
    """With accelerate's ZeRO-3 settings (train/accelerate/zero3.yaml: zero3_init_flag), transformers
    reports ZeRO-3 as enabled at the moment the model is loaded, so from_pretrained partitions it."""
    env = {**os.environ, "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
           "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true", "ACCELERATE_USE_CPU": "true", "DS_ACCELERATOR": "cpu",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", ZERO3_PROBE, str(tmp_path / "out")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# --------------------------------------------------------------------------- no CUDA


def _no_accelerator(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if hasattr(torch, "accelerator"):
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)


def test_gpu_config_without_cuda_refuses_in_one_line_and_writes_nothing(monkeypatch, capsys, tmp_path):
    _no_accelerator(monkeypatch)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    out = tmp_path / "run"
    assert cli.main("pretrain", ["--config", "train/configs/7b.yaml", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("error: config 'synthvlm-llava-1.5-7b' trains pretrain in bf16 on a GPU, but no GPU "
                             "(CUDA, ROCm, MPS, XPU) is visible to torch")
    assert "TORCH_SPEC" in err[0] and "accelerate launch --cpu" in err[0]
    assert not out.exists()  # refused before the run's folder is made or marked


def test_another_accelerator_is_not_refused(monkeypatch):
    import torch

    from synthvlm_data.training.run import check_accelerator, use_cpu

    if not hasattr(torch, "accelerator"):
        pytest.skip("torch.accelerator appeared in torch 2.6")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)  # an Apple GPU (MPS) or an Intel XPU
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    check_accelerator(load_config(CONFIGS / "7b.yaml"), "pretrain")
    assert not use_cpu()  # and the run goes to that GPU, not to the CPU


def test_cpu_configs_and_explicit_cpu_runs_are_not_refused(monkeypatch):
    from synthvlm_data.training.run import check_accelerator

    _no_accelerator(monkeypatch)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    check_accelerator(load_config(CONFIGS / "tiny.yaml"), "pretrain")  # float32: a CPU config
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # accelerate launch --cpu
    check_accelerator(load_config(CONFIGS / "7b.yaml"), "pretrain")


# --------------------------------------------------------------------------- the paper configs vs LLaVA-1.5's scripts


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_follow_llava_scripts(name):
    """scripts/v1_5/pretrain.sh: --version plain, --evaluation_strategy "no"; finetune.sh: --version v1,
    --group_by_modality_length True, --evaluation_strategy "no" (no held-out share of the data)."""
    pre = load_config(CONFIGS / name, stage="pretrain")
    assert pre.stage_chat_template("pretrain") == "plain"
    assert pre.stage_chat_template("finetune") == "vicuna_v1"
    for stage in ("pretrain", "finetune"):
        section = pre.stage(stage)
        assert section.eval_ratio == 0 and section.training.eval_strategy == "no"
    assert pre.finetune.training.group_by_modality_length is True
    assert pre.pretrain.training.group_by_modality_length is False


def test_stage_template_is_set_on_the_loaded_processor(monkeypatch):
    """Stage 1 trains (and saves its processor) with `plain`; stage 2 reloads that processor and must
    switch it to `vicuna_v1`."""
    from synthvlm_data.models import llava
    from synthvlm_data.training import assembly, run
    from synthvlm_data.training.chat_templates import PLAIN, VICUNA_V1

    def fake_processor(template):
        return types.SimpleNamespace(chat_template=template, tokenizer=types.SimpleNamespace(chat_template=template))

    cfg = load_config(CONFIGS / "7b.yaml")
    monkeypatch.setattr(assembly, "build_model", lambda *a, **k: ("model", fake_processor(VICUNA_V1)))
    monkeypatch.setattr(llava, "load_llava", lambda *a, **k: ("model", fake_processor(PLAIN)))
    monkeypatch.setattr(run, "stage2_start", lambda c: None)
    _, processor = run.load_model(cfg, "pretrain")
    assert processor.chat_template == processor.tokenizer.chat_template == PLAIN
    _, processor = run.load_model(cfg, "finetune")
    assert processor.chat_template == processor.tokenizer.chat_template == VICUNA_V1


# --------------------------------------------------------------------------- group_by_modality_length


def test_modality_grouped_order_keeps_each_step_to_one_modality():
    import torch

    from synthvlm_data.training.sampling import modality_length_grouped_indices

    lengths = [(i % 7) + 3 if i % 3 else -((i % 5) + 2) for i in range(203)]  # 1/3 text-only
    batch, world = 4, 2
    order = modality_length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(lengths)))
    mega = batch * world
    full = (sum(n > 0 for n in lengths) // mega + sum(n < 0 for n in lengths) // mega) * mega
    for start in range(0, full, mega):
        step = order[start:start + mega]
        assert len({lengths[i] > 0 for i in step}) == 1, f"step at {start} mixes modalities"
    again = modality_length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(0))
    other = modality_length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(1))
    assert again == order and other != order


def test_modality_lengths_of_a_stage2_dataset(tmp_path):
    """LLaVA's modality_lengths: words of all turns (`<image>` one), negative for text-only records (Arrow)."""
    import json

    from PIL import Image

    from synthvlm_data.training import data as data_lib
    from synthvlm_data.training.config import DataSource
    from synthvlm_data.training.sampling import modality_lengths

    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    records = [{"id": "1", "image": "img/a.png", "conversations": [
                   {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A black square."}]},
               {"id": "2", "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "Hi there friend"}]}]
    (tmp_path / "x.json").write_text(json.dumps(records))
    ds = data_lib.finetune_dataset([DataSource(dataset=str(tmp_path / "x.json"), format="llava_json",
                                               image_folder=str(tmp_path))], seed=0, stopping_strategy="first_exhausted")
    assert modality_lengths(ds) == [1 + 3 + 3, -(2 + 3)]  # LLaVA counts the `<image>` word


def test_stage2_trainer_uses_the_modality_grouped_sampler(tmp_path):
    from datasets import Dataset
    from trl import SFTTrainer

    from synthvlm_data.training.data import messages_features
    from synthvlm_data.training.sampling import ModalityLengthGroupedSampler, modality_grouped_trainer

    ds = Dataset.from_dict({"messages": [[{"role": "user", "content": "a b"}], [{"role": "user", "content": "c"}]],
                            "images": [[], []]}, features=messages_features())
    fake = types.SimpleNamespace(train_dataset=ds, args=types.SimpleNamespace(
        train_batch_size=2, world_size=1, gradient_accumulation_steps=2, seed=3))
    sampler = modality_grouped_trainer(SFTTrainer)._get_train_sampler(fake)
    assert isinstance(sampler, ModalityLengthGroupedSampler)
    assert sampler.lengths == [-2, -1] and sampler.world_size == 2 and sampler.batch_size == 2


# --------------------------------------------------------------------------- pickle-only Hub weights


def test_pickle_only_hub_model_error_gives_the_conversion_command():
    from synthvlm_data.errors import ModelUnavailableError
    from synthvlm_data.models import refs
    from synthvlm_data.training.config import ComponentRef

    def no_safetensors_on_hub(*a, **k):
        raise OSError("lmsys/vicuna-7b-v1.5 does not appear to have a file named model.safetensors")

    with pytest.raises(ModelUnavailableError) as info:
        refs.from_pretrained(no_safetensors_on_hub, ComponentRef(id="lmsys/vicuna-7b-v1.5"), "llm", noun="",
                             use_safetensors=True)
    message = str(info.value)
    assert "\n" not in message
    assert ("python -c \"import transformers as t; s, d = 'lmsys/vicuna-7b-v1.5', 'vicuna-7b-v1.5-safetensors'; "
            "t.AutoModelForCausalLM.from_pretrained(s).save_pretrained(d); "
            "t.AutoTokenizer.from_pretrained(s).save_pretrained(d)\"") in message
    clip = refs.no_safetensors(ComponentRef(id="openai/clip-vit-large-patch14-336"), "vision_tower")
    assert "t.AutoModel.from_pretrained(s).save_pretrained(d)" in str(clip)
    assert "t.AutoProcessor.from_pretrained(s).save_pretrained(d)" in str(clip)


def test_validate_only_warns_about_pickle_only_hub_models(capsys):
    assert cli.main("pretrain", ["--config", "train/configs/13b.yaml", "--validate-only"]) == 0
    out = capsys.readouterr().out
    assert "warning: model.llm: lmsys/vicuna-13b-v1.5 publishes pickle weights only" in out
    assert "warning: model.vision_tower: openai/clip-vit-large-patch14-336 publishes pickle weights only" in out


def test_parameter_counts_see_through_zero3_shards():
    """A ZeRO-3-partitioned parameter is empty on a rank; its real size is DeepSpeed's ds_numel."""
    import torch

    from synthvlm_data.training.freezing import parameter_counts

    model = torch.nn.Linear(4, 3)
    model.weight.data = torch.empty(0)
    model.weight.ds_numel = 12
    model.bias.requires_grad_(False)
    assert parameter_counts(model) == {"total": 15, "trainable": 12}
