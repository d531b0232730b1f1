"""The library APIs whose minimum versions pyproject.toml declares (`make test-min` runs this file,
with the chat-template and training tests, against exactly those minimum versions)."""

from __future__ import annotations

import torch


def test_training_arguments_take_activation_checkpointing():
    """SFTConfig(activation_checkpointing=...) (run.build_sft_config): transformers >= 5.23."""
    from trl import SFTConfig

    args = SFTConfig(output_dir="unused", activation_checkpointing=True, use_cpu=True, report_to="none")
    assert args.activation_checkpointing is True


def test_image_conversations_train_on_assistant_tokens_only():
    """TRL's collator with assistant_only_loss on image conversations (stage 2): trl >= 1.15,
    transformers >= 5.18 (TRL refuses older ones)."""
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from test_chat_templates import llava_processor
    from synthvlm_data.training.offline_tokenizer import llama_tokenizer

    tok = llama_tokenizer()
    processor = llava_processor(tok, "vicuna_v1", image_size=28, patch=14)
    row = {"images": [Image.new("RGB", (28, 28))],
           "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    batch = DataCollatorForVisionLanguageModeling(processor=processor, assistant_only_loss=True)([row])
    labels = batch["labels"][0]
    assert tok.decode(labels[labels != -100]) == "Hello.</s>"


def test_diffusers_pipeline_loads_in_the_requested_dtype(tmp_path):
    """from_pretrained(dtype=...): diffusers >= 0.40 (older versions ignore `dtype` and load fp32,
    so SDXL would run at twice the time and memory)."""
    from diffusers import StableDiffusionXLPipeline

    from synthvlm_data.models.diffusion import _load
    from synthvlm_data.models.refs import ModelRef
    from synthvlm_data.models.tiny import build_tiny_sdxl

    base, _ = build_tiny_sdxl(seed=0)
    base.save_pretrained(tmp_path, safe_serialization=True)
    pipe = _load(StableDiffusionXLPipeline, ModelRef(id=str(tmp_path)), "generate.model", dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
