"""Transformers text models: causal LMs (perplexity, judge, synthesis, the LLaVA LLM), sentence
embedders (dedup, diversity) and BLIP image-text matching.

A model is a local folder, a local `.gguf` file, `pkg:<package>` or a Hub id (a local snapshot:
the cache first, else a download when the Hub is reachable; an identical packaged copy when it is
not). Weights load from safetensors only, never from a pickled `pytorch_model.bin`; a GGUF file is
de-quantised once (SmolLM2: ~20 s) into an ordinary float32 safetensors checkpoint under
`cache_dir()`, shared by the caption stage and training, so later loads take < 1 s and the model
carries no GGUF quantizer (Trainer refuses to fine-tune "quantized" models).

`ModelCache` holds what one run loaded, so the perplexity filter, the judge and synthesis share one
LM; tests pass one cache to several runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synthvlm_data.errors import ModelUnavailableError, one_line
from synthvlm_data.models.devices import resolve_device, torch_dtype
from synthvlm_data.models.refs import ModelRef, cache_dir, from_pretrained, hub_snapshot, local_files, offline_hint

HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def model_files(ref: ModelRef, role: str, hint: str | None = None) -> tuple[Path, str | None]:
    """(local folder, GGUF file name or None) holding `ref`, or ModelUnavailableError."""
    found = local_files(ref, role, hint)
    return found if found is not None else (hub_snapshot(ref, role, HUB_PATTERNS, hint), None)


# --------------------------------------------------------------------------- GGUF


def _dequantized_dir(gguf: Path) -> Path:
    """Keyed by the GGUF file's bytes and the converting libraries' versions, not by its path: a
    fresh environment holding the same file reuses the entry instead of adding another copy."""
    from importlib.metadata import PackageNotFoundError, version

    import transformers

    try:
        gguf_version = version("gguf")
    except PackageNotFoundError:  # the conversion itself then says what to install
        gguf_version = ""
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    digest.update(f"|{transformers.__version__}|{gguf_version}".encode())
    return cache_dir() / "gguf" / f"{gguf.stem}-{digest.hexdigest()[:12]}"


def _dequantize(gguf: Path, dest: Path) -> None:
    """De-quantise a GGUF checkpoint and save it as a plain float32 safetensors checkpoint + tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # no use_safetensors here: transformers reads gguf_file directly; GGUF is no pickle
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "architectures"):
        config.pop(key, None)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), assign=True, strict=False)
    model.tie_weights()
    model.generation_config = quantized.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "done").write_text(json.dumps({"gguf": str(gguf)}))
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dequantized(gguf: Path, role: str) -> Path:
    """The float32 safetensors checkpoint of a GGUF file, built on first use (file-locked: safe
    across the ranks of a launch; a partial one is rebuilt)."""
    from filelock import FileLock

    dest = _dequantized_dir(gguf)
    if (dest / "done").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not (dest / "done").is_file():
            shutil.rmtree(dest, ignore_errors=True)
            try:
                _dequantize(gguf, dest)
            except Exception as err:
                raise ModelUnavailableError(f"cannot load {role} GGUF {gguf}: {one_line(err)}") from None
    return dest


def pretrained_dir(ref: ModelRef, role: str, hint: str | None = None) -> Path:
    """A transformers checkpoint folder for `ref` (a GGUF file is de-quantised once)."""
    folder, gguf_file = model_files(ref, role, hint)
    return dequantized(folder / gguf_file, role) if gguf_file else folder


def load_tokenizer(ref: ModelRef, role: str, hint: str | None = None):
    """The tokenizer of a model (`pkg:`, local folder or GGUF file, Hub id), with one-line errors."""
    from transformers import AutoTokenizer

    hint = hint or offline_hint(role)
    folder = pretrained_dir(ref, role, hint)
    return from_pretrained(AutoTokenizer.from_pretrained, ref, role, source=folder, noun="tokenizer", hint=hint)


# --------------------------------------------------------------------------- causal LM


@dataclass
class LM:
    model: object
    tokenizer: object
    name: str


def load_causal_lm(ref: ModelRef, role: str, dtype: torch.dtype, hint: str | None = None, noun: str = "model",
                   **kwargs):
    """(model, tokenizer) of a causal LM checkpoint, safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hint = hint or offline_hint(role)
    folder = pretrained_dir(ref, role, hint)
    tokenizer = from_pretrained(AutoTokenizer.from_pretrained, ref, role, source=folder, noun=noun, hint=hint)
    model = from_pretrained(AutoModelForCausalLM.from_pretrained, ref, role, use_safetensors=True, source=folder,
                            noun=noun, hint=hint, dtype=dtype, **kwargs)
    return model, tokenizer


def load_lm(ref: ModelRef, role: str, device: str | None = None, dtype: str = "auto") -> LM:
    """A causal LM for the caption stage (eval mode; padding set; on `device`, multi-GPU on cuda)."""
    device = resolve_device(device)
    extra = {"device_map": "auto"} if device == "cuda" else {}
    model, tok = load_causal_lm(ref, role, torch_dtype(dtype, device), **extra)
    if not extra:
        model = model.to(device)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return LM(model=model, tokenizer=tok, name=ref.id)


# --------------------------------------------------------------------------- sentence embedder


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe of
    all-MiniLM-L6-v2), computed with plain transformers."""

    def __init__(self, ref: ModelRef, role: str = "embedder", device: str | None = None):
        from transformers import AutoModel, AutoTokenizer

        folder, gguf_file = model_files(ref, role)
        if gguf_file:
            raise ModelUnavailableError(f"{role}: '{ref.id}' is a GGUF LM, not a sentence embedder")
        hint = offline_hint(role)
        self.device = resolve_device(device)
        self.tokenizer = from_pretrained(AutoTokenizer.from_pretrained, ref, role, source=folder, hint=hint)
        self.model = from_pretrained(AutoModel.from_pretrained, ref, role, use_safetensors=True, source=folder,
                                     hint=hint, dtype=torch.float32).eval().to(self.device)
        self.name = ref.id
        self.max_length = min(256, int(getattr(self.tokenizer, "model_max_length", 256) or 256))

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dim) float32, rows in input order. Batches group similar lengths (less
        padding); with the attention mask a text's embedding does not depend on its batch."""
        dim = self.model.config.hidden_size
        out = np.zeros((len(texts), dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()
        return out


# --------------------------------------------------------------------------- BLIP


def load_blip_itm(ref: ModelRef, role: str, device: str):
    """(BlipForImageTextRetrieval, BlipProcessor) for image-text matching, safetensors only."""
    from transformers import BlipForImageTextRetrieval, BlipProcessor

    folder, _ = model_files(ref, role)
    hint = offline_hint(role)
    model = from_pretrained(BlipForImageTextRetrieval.from_pretrained, ref, role, use_safetensors=True, source=folder,
                            hint=hint)
    processor = from_pretrained(BlipProcessor.from_pretrained, ref, role, source=folder, hint=hint)
    return model.eval().to(device), processor


# --------------------------------------------------------------------------- one run's models


@dataclass
class ModelCache:
    """Models loaded by one run (or shared by several runs in tests), keyed by what was loaded."""

    _items: dict = field(default_factory=dict)

    def lm(self, ref: ModelRef, role: str, device: str | None = None, dtype: str = "auto") -> LM:
        key = ("lm", ref.id, ref.revision, resolve_device(device), dtype)
        return self.get(key, lambda: load_lm(ref, role, device, dtype))

    def embedder(self, ref: ModelRef, role: str = "embedder", device: str | None = None) -> Embedder:
        key = ("emb", ref.id, ref.revision, resolve_device(device))
        return self.get(key, lambda: Embedder(ref, role, device))

    def endpoint(self, cfg, role: str, record_dir: Path | None = None):
        """An OpenAI-compatible server (`synthvlm_data.models.endpoint.Endpoint`), checked on first use."""
        from synthvlm_data.models.endpoint import Endpoint

        key = ("endpoint", cfg.model_dump_json(), str(record_dir))
        return self.get(key, lambda: Endpoint(cfg, role, record_dir))

    def get(self, key, build):
        if key not in self._items:
            self._items[key] = build()
        return self._items[key]

    def close(self) -> None:
        """Release what the loaded models hold beyond memory (an endpoint's thread pool and record file)."""
        from synthvlm_data.models.endpoint import Endpoint

        for item in self._items.values():
            if isinstance(item, Endpoint):
                item.close()


def cache_kwarg(model) -> str:
    """The keyword a model's forward takes its KV cache by: `cache` in recent transformers 5
    releases (`past_key_values` is then deprecated, with a warning per process), else `past_key_values`."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache of a model output, under either name (see `cache_kwarg`)."""
    return out["cache"] if "cache" in out.keys() else out.past_key_values
