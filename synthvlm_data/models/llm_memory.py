"""Will an in-process LLM fit the device it would run on? A preflight estimate, no download.

A 70B judge loaded in-process needs about 140 GB in bf16 for its weights alone: on one GPU it does
not fail fast, it fails after downloading the weights (or crawls with CPU offload). The caption
stage's LMs (perplexity filter, judge, synthesis) are checked before any stage runs:

  needed    = parameters x bytes per parameter (the step's dtype; `auto` is bf16 on CUDA, fp32 on
              the CPU, as `models.devices.torch_dtype`) x HEADROOM (activations, KV cache, the CUDA
              context: +20%)
  available = `captions.device` `cuda:N`: that GPU's total memory; `cuda` (transformers spreads
              the model over every visible GPU, `device_map="auto"`): their sum divided by the
              processes of this node that share them (`LOCAL_WORLD_SIZE`, set by `accelerate
              launch` / torchrun); `cpu`: the host's physical memory, shared the same way.

Parameters come from the model's `config.json` when it is a local folder or already in the Hub
cache (the model is built on the meta device: exact, nothing allocated), else from `KNOWN_PARAMS`,
the published sizes of the instruction LMs a recipe is likely to name. A model found in neither is
not checked (one line says so).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from synthvlm_data.errors import SynthVLMError
from synthvlm_data.models.refs import PACKAGED_ORIGIN, ModelRef

GB = 1e9
HEADROOM = 1.2  # weights + 20% for activations, the KV cache and the CUDA context
SERVER_GPU_BYTES = 80 * GB  # the per-GPU memory a suggested `vllm serve` command is sized for

# Published parameter counts (billions) of instruction LMs a recipe may name (model cards; the
# safetensors metadata on the Hub). Lower-cased ids; `pkg:` ids resolve to the model they ship.
KNOWN_PARAMS: dict[str, float] = {
    "meta-llama/meta-llama-3-70b-instruct": 70.6,
    "meta-llama/meta-llama-3-8b-instruct": 8.03,
    "meta-llama/llama-3.1-70b-instruct": 70.6,
    "meta-llama/llama-3.1-8b-instruct": 8.03,
    "meta-llama/llama-3.3-70b-instruct": 70.6,
    "meta-llama/llama-2-70b-chat-hf": 69.0,
    "meta-llama/llama-2-13b-chat-hf": 13.0,
    "meta-llama/llama-2-7b-chat-hf": 6.74,
    "lmsys/vicuna-13b-v1.5": 13.0,
    "lmsys/vicuna-7b-v1.5": 6.74,
    "mistralai/mistral-7b-instruct-v0.3": 7.25,
    "mistralai/mixtral-8x7b-instruct-v0.1": 46.7,
    "qwen/qwen2.5-72b-instruct": 72.7,
    "qwen/qwen2.5-7b-instruct": 7.62,
    "google/gemma-2-27b-it": 27.2,
    "google/gemma-2-9b-it": 9.24,
    "huggingfacetb/smollm2-1.7b-instruct": 1.71,
    "huggingfacetb/smollm2-360m-instruct": 0.362,
    "huggingfacetb/smollm2-135m-instruct": 0.135,
}
BYTES_PER_PARAM = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class LMStep:
    """An in-process LM of the caption stage: who uses it, which model, where and in which dtype."""

    role: str
    ref: ModelRef
    device: str | None
    dtype: str
    server_key: str | None  # the recipe key of the step's `endpoint`; None: it always runs in-process


def lm_steps(captions) -> list[LMStep]:
    """The caption stage's in-process causal LMs (perplexity filters, judge, synthesis)."""
    steps = []
    for f in captions.filters:
        if f.enabled and getattr(f, "type", None) == "perplexity":
            ref = f.model or captions.lm
            if ref is not None:
                steps.append(LMStep(f.role, ref, captions.device, captions.dtype, None))
    for key, step, runs in (("judge", captions.judge, bool(captions.sources)), ("synthesis", captions.synthesis, True)):
        if step is not None and runs and captions.step_endpoint(step) is None and (step.model or captions.lm):
            steps.append(LMStep(f"captions {key}", step.model or captions.lm, captions.device, captions.dtype,
                                f"captions.{key}"))
    return steps


def parameter_count(ref: ModelRef) -> float | None:
    """Parameters of a causal LM without loading it: its config.json (local or cached), else the table."""
    config = _config_file(ref)
    if config is not None:
        counted = _count_from_config(config)
        if counted is not None:
            return counted
    model_id = PACKAGED_ORIGIN.get(ref.id, ref.id).lower()
    billions = KNOWN_PARAMS.get(model_id)
    return billions * 1e9 if billions is not None else None


def _config_file(ref: ModelRef) -> Path | None:
    if ref.is_packaged or ref.is_tiny:
        return None
    if ref.is_local:
        path = ref.path / "config.json"
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(ref.id, "config.json", revision=ref.revision)
    except Exception:  # noqa: BLE001 - a malformed id, no cache: the table decides
        return None
    return Path(found) if isinstance(found, str) else None


def _count_from_config(path: Path) -> float | None:
    """The exact parameter count of the architecture a config.json describes (built on the meta device)."""
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        json.loads(path.read_text(encoding="utf-8"))  # not JSON: not a transformers folder
        config = AutoConfig.from_pretrained(path.parent)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return float(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001 - not a causal LM config this transformers knows: the table decides
        return None


def bytes_per_param(dtype: str, device: str) -> int:
    if dtype == "auto":
        return BYTES_PER_PARAM["bfloat16" if device.startswith("cuda") else "float32"]
    return BYTES_PER_PARAM[dtype]


def local_processes() -> int:
    """Processes of this node sharing its devices (`accelerate launch` / torchrun set LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass(frozen=True)
class Budget:
    """Memory one process may use on a device, the size of one of its GPUs (to size a server) and
    how a message names it."""

    available: float
    per_gpu: float
    label: str


def device_memory(device: str) -> Budget | None:
    """The budget of one process on `device`; None for a CUDA device when no GPU is visible (loading
    it fails with its own error)."""
    import torch

    share = local_processes()
    shared = f", shared by {share} processes" if share > 1 else ""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return None
        if ":" in device:
            total = torch.cuda.get_device_properties(int(device.split(":", 1)[1])).total_memory
            return Budget(total, total, f"{device}, {total / GB:.0f} GB")
        sizes = [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
        label = f"{len(sizes)} GPU(s) of {max(sizes) / GB:.0f} GB{shared}"
        return Budget(sum(sizes) / share, max(sizes), label)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Budget(total / share, SERVER_GPU_BYTES, f"the CPU, {total / GB:.0f} GB of host memory{shared}")


def serve_command(model_id: str, need_bytes: float, gpu_bytes: float) -> str:
    """A `vllm serve` command with enough tensor parallelism for the model (a power of two, <= 8)."""
    tp = 1
    while tp < 8 and need_bytes / tp > gpu_bytes:
        tp *= 2
    return f"vllm serve {model_id} --tensor-parallel-size {tp} --port 8000"


def check_lm_memory(captions, resolve_device) -> None:
    """Refuse, in one line, an in-process LM step whose model does not fit where it would run.

    `resolve_device` maps the configured device (None: cuda if available, else cpu) to the one used."""
    for step in lm_steps(captions):
        if step.ref.is_tiny:  # built from a tiny config: megabytes
            continue
        params = parameter_count(step.ref)
        device = resolve_device(step.device)
        budget = device_memory(device) if params is not None else None
        if budget is None:
            why = (f"the size of '{step.ref.id}' is unknown here (not a local folder, not in the Hub cache, "
                   "not in models.llm_memory.KNOWN_PARAMS)" if params is None else f"no GPU is visible for '{device}'")
            print(f"{step.role}: memory not checked: {why}", file=sys.stderr)
            continue
        width = bytes_per_param(step.dtype, device)
        need = params * width * HEADROOM
        if need <= budget.available:
            continue
        size = f"~{params / 1e9:.1f}B parameters x {width} bytes + {HEADROOM - 1:.0%}: ~{need / GB:.0f} GB"
        head = (f"{step.role}: in-process model '{step.ref.id}' ({size}) does not fit the device it would run on "
                f"({budget.label})")
        if step.server_key is None:
            raise SynthVLMError(f"{head}; this step always runs in-process: name a smaller model for it "
                                "(and recalibrate its threshold: `python -m synthvlm_data.captions.perplexity`)")
        raise SynthVLMError(
            f"{head}; serve it instead (`{serve_command(step.ref.id, need, budget.per_gpu)}`) and point the step "
            f"to the server in place of its `model`: `{step.server_key}: {{endpoint: {{url: \"http://localhost:8000/v1\", "
            f"model: {step.ref.id}}}}}` (README: LLM steps on a server)")
