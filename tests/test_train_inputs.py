"""Training inputs: LLaVA JSON + image folder for stage 1 (LCS-558K shape) and
stage 2 (LLaVA-665K shape, multi-turn, text-only rows), with record-level errors.

The JSON files are written here from the miniature world's renders and true captions
(`synthvlm_data.world`), laid out like an exporter's `<out>/<name>.json` + `<out>/images/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthvlm_data.errors import InputDataError
from synthvlm_data.training import data as data_lib
from synthvlm_data.training.config import DataSource, load_config
from synthvlm_data.training.errors import TrainConfigError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "train" / "configs" / "tiny.yaml"
LCS_PROMPT = "Give a brief description of the image.\n<image>"


pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # conftest: torch on 1 thread


def write_world_llava_json(out: Path, n: int, *, multi_turn: bool = False) -> Path:
    """`<out>/world.json` + `<out>/images/<i>.png`: world renders with their true captions, in the
    LCS-558K record shape (or 665K-style multi-turn records plus one text-only record)."""
    from synthvlm_data.world.data import split_scenes
    from synthvlm_data.world.render import render
    from synthvlm_data.world.text import caption

    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, scene in enumerate(split_scenes("train", n)):
        render(scene).save(out / "images" / f"{i:05d}.png")
        text = caption(scene, np.random.default_rng(i))
        conv = [{"from": "human", "value": LCS_PROMPT}, {"from": "gpt", "value": text}]
        if multi_turn:
            conv = [{"from": "human", "value": "<image>\nHow many shapes are there?"},
                    {"from": "gpt", "value": f"There are {len(scene.objects)}."},
                    {"from": "human", "value": "Describe the picture."}, {"from": "gpt", "value": text}]
        records.append({"id": f"world-{i}", "image": f"{i:05d}.png", "conversations": conv})
    if multi_turn:
        records.append({"id": "text-only", "conversations": [
            {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Red."}]})
    path = out / "world.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world_json(tmp_path_factory) -> Path:
    return write_world_llava_json(tmp_path_factory.mktemp("lcs") / "world-lcs", 4)


def test_stage1_reads_lcs558k_records_as_prompt_completion(world_json):
    src = DataSource(dataset=str(world_json), format="llava_json", image_folder=str(world_json.parent / "images"))
    ds = data_lib.as_prompt_completion(data_lib.pretrain_dataset(src))
    records = json.loads(world_json.read_text())
    assert len(ds) == len(records) == 4
    row = ds[1]
    assert row["prompt"] == [{"role": "user", "content": "Give a brief description of the image."}]
    assert row["completion"] == [{"role": "assistant", "content": records[1]["conversations"][1]["value"]}]
    assert row["image"].size == (64, 64)
    # the same file with image_folder = <out> and paths "images/..." reads the same pixels
    shifted = world_json.parent / "rooted.json"
    shifted.write_text(json.dumps([{**r, "image": "images/" + r["image"]} for r in records]))
    other = data_lib.pretrain_dataset(DataSource(dataset=str(shifted), format="llava_json",
                                                 image_folder=str(world_json.parent)))
    assert np.array_equal(np.asarray(other[1]["image"]), np.asarray(row["image"]))


def test_stage1_trains_from_a_llava_json_file_and_the_checkpoint_loads(world_json, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from synthvlm_data.training.run import run_stage

    out = tmp_path / "pretrain-from-json"
    cfg = load_config(TINY, [
        "--dataset", str(world_json), "--format", "llava_json", "--image_folder", str(world_json.parent / "images"),
        "--max_samples", "2", "--eval_ratio", "0", "--output_dir", str(out),
        "--per_device_train_batch_size", "2", "--global_batch_size", "2", "--max_steps", "3",
        "--learning_rate", "1e-3", "--lr_scheduler_type", "constant", "--warmup_ratio", "0", "--save_strategy", "no",
    ])
    summary = run_stage(cfg, "pretrain")
    losses = [v for _, v in summary["loss"]["train"]]
    assert len(losses) == 3 and losses[-1] < 0.95 * losses[0], losses  # the same 2-row batch every step
    model = AutoModelForImageTextToText.from_pretrained(out, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(out)
    from PIL import Image

    image = Image.open(world_json.parent / "images" / "00000.png")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}]
    inputs = processor(images=[image], text=processor.apply_chat_template(messages, add_generation_prompt=True),
                       return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all() and logits.shape[1] == inputs["input_ids"].shape[1]


def test_665k_multi_turn_records_train_on_the_gpt_turns_only(tmp_path):
    """Every gpt turn of a multi-turn record is in the labels; no human turn is; text-only rows pass."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.models.refs import ModelRef
    from synthvlm_data.models.text import pretrained_dir
    from synthvlm_data.models.tiny import tiny_vision_config
    from synthvlm_data.training.assembly import add_image_token, build_processor
    from transformers import AutoTokenizer
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    cfg = load_config(TINY)
    tokenizer = AutoTokenizer.from_pretrained(pretrained_dir(ModelRef(id=cfg.model.llm.id), "llm"))
    add_image_token(tokenizer)
    processor = build_processor(tokenizer, tiny_vision_config(), cfg.model, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)

    path = write_world_llava_json(tmp_path / "mix", 2, multi_turn=True)
    ds = data_lib.finetune_dataset([DataSource(dataset=str(path), format="llava_json",
                                               image_folder=str(path.parent / "images"))], 0, "first_exhausted")
    assert len(ds) == 3 and ds[2]["images"] == []
    collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=256, assistant_only_loss=True)
    rows = [ds[i] for i in range(3)]
    batch = collator(rows)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    for i, row in enumerate(rows):
        labels = batch["labels"][i]
        trained = tokenizer.decode(labels[labels != -100])
        answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        assert trained == "".join(a + "<|im_end|>" for a in answers), trained
        for human in (m["content"] for m in row["messages"] if m["role"] == "user"):
            assert human not in trained
        assert int((batch["input_ids"][i] == image_id).sum()) == (16 if row["images"] else 0)


def _write(tmp_path: Path, records) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


GOOD = {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A red circle."}


@pytest.mark.parametrize("records, stage, match", [
    ([{"id": "a", "image": "missing.png", "conversations": list(GOOD)}], "finetune",
     r"bad.json: record 0 \(id 'a'\): image missing.png not found under image_folder .*point data.image_folder"),
    ([{"id": "a", "conversations": list(GOOD)}, {"id": "b", "image": "x.png"}], "finetune",
     r"bad.json: record 1 \(id 'b'\): no `conversations` list"),
    ([{"id": "a", "conversations": [{"from": "robot", "value": "hi"}]}], "finetune",
     r"record 0 \(id 'a'\): turn 0 has speaker 'robot'"),
    ([{"id": "t", "conversations": list(GOOD)}], "pretrain",
     r"record 0 \(id 't'\): no `image` \(a text-only record\); stage 1 trains on image-caption pairs"),
    ([{"id": "m", "image": "ok.png", "conversations": list(GOOD) * 2}], "pretrain",
     r"record 0 \(id 'm'\): 4 turns .*belong in stage 2"),
    ({"id": "x"}, "finetune", r"a LLaVA JSON file is a list of records, found a dict"),
])
def test_bad_llava_records_name_the_file_record_and_fix(tmp_path, records, stage, match):
    from PIL import Image

    path = _write(tmp_path, records)
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "ok.png")
    src = DataSource(dataset=str(path), format="llava_json", image_folder=str(tmp_path / "images"))
    load = data_lib.pretrain_dataset if stage == "pretrain" else lambda s: data_lib.finetune_dataset([s], 0, "first_exhausted")
    with pytest.raises(InputDataError, match=match) as err:
        load(src)
    assert "\n" not in str(err.value)


def test_stage1_config_accepts_llava_json_and_refuses_messages():
    cfg = load_config(TINY, ["--format", "llava_json", "--dataset", "lcs.json", "--image_folder", "imgs"])
    assert (cfg.pretrain.data.format, cfg.pretrain.data.image_folder) == ("llava_json", "imgs")
    with pytest.raises(TrainConfigError, match="needs 'image_folder'"):
        load_config(TINY, ["--format", "llava_json", "--dataset", "lcs.json"])
    with pytest.raises(TrainConfigError, match="stage 1 trains on image-caption pairs"):
        load_config(TINY, ["--format", "messages"])
