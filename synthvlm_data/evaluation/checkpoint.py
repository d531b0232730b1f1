"""A checkpoint written by `train/` (stage 1 or 2 output_dir: LlavaForConditionalGeneration +
processor + README.md) as something that answers a prompt about an image."""

from __future__ import annotations

from pathlib import Path

from synthvlm_data.errors import SynthVLMError


class EvalInputError(SynthVLMError):
    """A checkpoint, suite or option `synthvlm eval` cannot use."""


def check_checkpoint(path: Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise EvalInputError(f"checkpoint {path}: no such directory; pass the output_dir of train/pretrain.py or "
                             "train/finetune.py")
    weights = (path / "model.safetensors").is_file() or any(path.glob("model-*.safetensors"))
    if not (path / "config.json").is_file() or not weights:
        raise EvalInputError(f"checkpoint {path}: not a model folder written by train/ (needs config.json and "
                             "model*.safetensors); pass the output_dir of train/pretrain.py or train/finetune.py")
    return path


def prompt_inputs(processor, images: list, prompt: str):
    """Model inputs of a rendered prompt, tokenized as training tokenized it: the chat template
    writes the BOS, so no special tokens are added (TRL: `add_special_tokens=False`); a second BOS
    would give the model a prompt it never saw in training."""
    return processor(images=images or None, text=prompt, return_tensors="pt", add_special_tokens=False)


EVAL_DTYPES = ("float32", "float16", "bfloat16")


def eval_placement(device: str | None = None, dtype: str | None = None, *, cuda: bool | None = None,
                   local_rank: int = 0, num_processes: int = 1) -> tuple[str, str]:
    """(device, dtype) a checkpoint is evaluated on.

    Defaults: CUDA in bfloat16 when a GPU is visible (a 7B model in fp32 on a CPU takes days for
    the suite), else the CPU in float32. Under a multi-process launch (`accelerate launch`) a bare
    `cuda` is this rank's GPU (`cuda:LOCAL_RANK`), as lmms-eval's `llava_hf` places its model.
    """
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    if dtype is not None and dtype not in EVAL_DTYPES:
        raise EvalInputError(f"--dtype {dtype}: unknown; choose one of {', '.join(EVAL_DTYPES)}")
    device = device or ("cuda" if cuda else "cpu")
    if device.startswith("cuda") and not cuda:
        raise EvalInputError(f"--device {device}: no CUDA GPU is visible here; pass --device cpu (slow for a 7B model)")
    if device == "cuda" and num_processes > 1:
        device = f"cuda:{local_rank}"
    return device, dtype or ("bfloat16" if device.startswith("cuda") else "float32")


class CheckpointModel:
    """Greedy generation from a saved LLaVA checkpoint, with its own processor's chat template."""

    def __init__(self, path: Path | str, dtype: str = "float32", device: str = "cpu"):
        from synthvlm_data.models.llava import load_llava
        from synthvlm_data.models.refs import ModelRef

        self.path = check_checkpoint(Path(path))
        # Off the CPU the weights load straight onto the device (device_map), not into host memory first.
        extra = {} if device == "cpu" else {"device_map": device}
        model, self.processor = load_llava(ModelRef(id=str(self.path.resolve())), dtype, role="checkpoint", **extra)
        self.model = model.to(device).eval()
        self.device, self.dtype = device, dtype

    def prompt(self, text: str, n_images: int = 1) -> str:
        content = [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def generate(self, images: list, text: str, max_new_tokens: int = 32) -> str:
        import torch

        inputs = prompt_inputs(self.processor, images, self.prompt(text, len(images)))
        inputs = inputs.to(self.device, dtype=self.model.dtype)  # floating tensors (pixels) in the model's dtype
        tok = self.processor.tokenizer
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        return self.processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
