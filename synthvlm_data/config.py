"""Recipe schema and loading.

A recipe is one YAML file that fully determines a dataset. It is validated on load: an unknown
key, a wrong type or an out-of-range value is an error naming the key path and the file. Paper
values live in the shipped recipes (with citations in comments), not in code.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, model_serializer, model_validator

from synthvlm_data.captions.config import CaptionsConfig
from synthvlm_data.clustering import DiversityConfig
from synthvlm_data.errors import RecipeError
from synthvlm_data.models.families import PIPELINES, family
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.recipe_extends import (
    RECIPES_PACKAGE,
    RecipeFile,
    Resolved,
    locate,
    resolve,
    resolve_data,
    shipped_recipes,
)
from synthvlm_data.recipe_extends import merge as _deep_merge
from synthvlm_data.schema import StrictModel, validate
from synthvlm_data.scoring.safety import SafetyConfig

__all__ = ["RECIPES_PACKAGE", "Recipe", "load_recipe", "load_recipe_mapping", "recipe_from_dict", "shipped_recipes"]


class GenerateConfig(StrictModel):
    """Text-to-image generation (diffusers)."""

    pipeline: Literal[PIPELINES] = "sdxl"  # models.families: one row per family, or auto
    model: ModelRef
    refiner: ModelRef | None = Field(
        default=None, description="SDXL refiner; base runs to denoising_end=high_noise_frac."
    )
    high_noise_frac: float = Field(default=0.8, gt=0.0, lt=1.0)
    steps: int = Field(default=60, ge=1, le=1000)
    guidance_scale: float = Field(default=7.5, ge=0.0)
    negative_prompt: str = ""
    height: int = Field(default=1024, ge=8, multiple_of=8)
    width: int = Field(default=1024, ge=8, multiple_of=8)
    max_sequence_length: int | None = Field(default=None, ge=1, description="SD3 T5 length.")
    images_per_caption: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=4, ge=1)
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    device: str | None = Field(default=None, description="None: cuda if available, else cpu.")
    output: Literal["pixels", "latents"] = Field(
        default="pixels",
        description="latents: store the denoised latents (fp16) instead of images (Synth^2's embedding space).",
    )
    variant: str | None = Field(
        default=None, description="Weight-file variant to load (diffusers `variant`): `fp16` takes the repo's "
        "*.fp16.safetensors, half the download of the fp32 files, for a float16 run. None: the default files.",
    )
    vae: ModelRef | None = Field(
        default=None, description="A VAE to use instead of the model's own (generation and the latent decode), "
        "e.g. madebyollin/sdxl-vae-fp16-fix: SDXL's VAE fine-tuned to decode in float16, where the original "
        "is upcast to float32. It changes the pixels slightly; off by default, as in the papers.",
    )
    vae_slicing: bool = Field(
        default=False, description="Decode a batch one image at a time (diffusers `vae.enable_slicing()`): "
        "SDXL's float32 decode of 8 x 1024 px images otherwise peaks at 20-30 GB of GPU memory.",
    )
    image_format: Literal["png", "jpeg", "webp"] = "png"
    image_quality: int = Field(default=95, ge=1, le=100, description="JPEG/WebP quality.")

    @model_serializer(mode="wrap")
    def _omit_load_options_at_default(self, handler):
        """The loading options added after the first recipes (`LOAD_OPTIONS`) are left out of a dump
        while at their defaults, so a recipe that does not use them keeps its fingerprint, its work
        dir (a resume still finds it) and its card's recipe text."""
        data = handler(self)
        if isinstance(data, dict):
            for name in LOAD_OPTIONS:
                if getattr(self, name) == type(self).model_fields[name].default:
                    data.pop(name, None)
        return data

    @model_validator(mode="after")
    def _pipeline_options(self) -> GenerateConfig:
        """Options one pipeline family takes and another would reject at call time (or ignore)."""
        row = family(self.pipeline)
        if self.refiner is not None and not row.refiner:
            raise ValueError(f"refiner is SDXL-only (base + refiner hand-off); remove it for pipeline '{self.pipeline}'")
        if self.max_sequence_length is not None and not row.max_sequence_length:
            raise ValueError(f"max_sequence_length is the T5 prompt length of SD3-style pipelines; {self.pipeline} has none")
        if self.model.is_tiny and (self.variant is not None or self.vae is not None):
            raise ValueError("variant and vae apply to downloaded models; a tiny generator is built here: remove them")
        return self


LOAD_OPTIONS = ("variant", "vae", "vae_slicing")


class ClipScoreConfig(StrictModel):
    model: ModelRef = ModelRef(id="ViT-B-32", revision="openai")
    text_prefix: str = "A photo depicts "
    batch_size: int = Field(default=64, ge=1)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        default="auto",
        description="CLIP's weights: `auto` is fp16 on CUDA, as the official CLIPScore code runs it (OpenAI's "
                    "clip.load keeps fp16 weights on a GPU; LayerNorm in fp32: open_clip's precision='fp16'), "
                    "and fp32 elsewhere (scores then the same bytes on every CPU).")


class SSIMConfig(StrictModel):
    """SSIM of an image against its resize round-trip (size -> down -> size)."""

    size: int = Field(default=768, ge=8)
    down: int = Field(default=336, ge=8)
    grayscale: bool = True
    interpolation: Literal["bilinear", "bicubic", "nearest", "lanczos"] = "bilinear"
    win_size: int = Field(default=7, ge=3)

    @model_validator(mode="after")
    def _odd_window(self) -> SSIMConfig:
        if self.win_size % 2 == 0:
            raise ValueError(f"win_size must be odd, got {self.win_size}")
        if self.down >= self.size:
            raise ValueError(
                f"down ({self.down}) must be smaller than size ({self.size}): SSIM measures what survives "
                f"the resize {self.size} -> down -> {self.size} (SynthVLM: 768 -> 336 -> 768); with down >= size "
                "nothing is lost and every image scores ~1")
        return self


class ScoreConfig(StrictModel):
    clip: ClipScoreConfig = ClipScoreConfig()
    ssim: SSIMConfig = SSIMConfig()
    batch_size: int = Field(default=32, ge=1)
    safety: SafetyConfig | None = Field(default=None, description="Image safety detector (nudenet, offline): "
                                        "per-row nsfw_score and safe columns. Off when null.")


class SelectConfig(StrictModel):
    """score = w_clip * clip + w_ssim * ssim; best image per caption; then top-N / ratio.

    `diversity` (off when null, as in the SynthVLM paper) replaces the global top-N by per-cluster
    quotas over caption embeddings (Synth^2)."""

    w_clip: float = 1.0
    w_ssim: float = 0.5
    top_n: int | None = Field(default=None, ge=1)
    ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    min_clip: float | None = None
    min_ssim: float | None = None
    diversity: DiversityConfig | None = None
    drop_unsafe: bool = Field(default=True, description="With score.safety: images judged unsafe are never selected.")

    @model_validator(mode="after")
    def _one_size_rule(self) -> SelectConfig:
        if self.top_n is not None and self.ratio is not None:
            raise ValueError("set either top_n or ratio, not both")
        return self


class ExportConfig(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    pretty_name: str | None = None
    license: str = "cc-by-nc-4.0"
    rows_per_shard: int = Field(default=5000, ge=1)
    language: list[str] = ["en"]
    tags: list[str] = ["synthetic", "image-captioning", "vision-language"]
    formats: list[Literal["llava-json", "webdataset"]] = Field(
        default=[],
        description="Also write these next to the dataset folder: <name>-llava-json/ (LLaVA-Pretrain JSON + "
        "images/), <name>-webdataset/ (tar shards).",
    )
    webdataset_shard_size: int = Field(default=1000, ge=1, description="Samples per WebDataset tar shard.")


class Recipe(StrictModel):
    """A full dataset recipe. `profile: tiny` marks recipes whose models have random weights;
    `profile: world` recipes use the miniature world's trained models and caption pool."""

    name: str = Field(min_length=1)
    description: str = ""
    profile: Literal["full", "tiny", "world"] = "full"
    seed: int = Field(default=0, ge=0)
    rows_per_shard: int = Field(default=64, ge=1, description="Work-unit size of every stage.")
    captions: CaptionsConfig
    generate: GenerateConfig
    score: ScoreConfig = ScoreConfig()
    select: SelectConfig = SelectConfig()
    export: ExportConfig

    def fingerprint(self, *, include: set[str] | None = None, exclude: set[str] | None = None) -> str:
        """A stable hash of the recipe (or of some of its sections)."""
        blob = json.dumps(self.model_dump(mode="json", include=include, exclude=exclude), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def shards_fingerprint(self) -> str:
        """What the expensive stages (captions, generate, score) depend on: everything except the
        selection rule, the export settings and the free-text description. Changing only those
        re-selects and re-exports from the same shards."""
        return self.fingerprint(exclude={"select", "export", "description"})


def recipe_from_dict(data: object, where: str = "<dict>", overrides: dict | None = None) -> Recipe:
    """A recipe from a mapping (an `extends` in it is resolved, a relative base against `where`'s folder)."""
    return _validated(resolve_data(data, RecipeFile(path=Path(where))), overrides)


def _validated(resolved: Resolved, overrides: dict | None = None) -> Recipe:
    """The merged mapping validated; an error names the file each bad key came from."""
    data = resolved.data
    if overrides and isinstance(data, dict):
        data = _deep_merge(data, overrides)
    first = resolved.chain[0].key

    def origin(loc: tuple) -> str | None:
        file = resolved.origin(loc)
        return file.where if file is not None and file.key != first else None

    return validate(Recipe, data, resolved.where, "recipe", RecipeError, origin=origin,
                    hint=lambda err: f". See `synthvlm recipes --show {_example_recipe(data, err)}`.")


# Shipped recipes that show an `endpoint` (LLM steps on a server): the judge's, synthesis's.
ENDPOINT_EXAMPLES = {"judge": "synthvlm-100k", "synthesis": "synth2"}


def _example_recipe(data: object, err=None) -> str:
    """The shipped recipe to show next to an error: the one the file is named after, else the
    shipped recipe of the same profile (a copy of synthvlm-100k is pointed at synthvlm-100k).
    An error in an `endpoint` is shown next to a shipped recipe that has one, when the file's own
    does not (tiny runs its LLM steps in-process)."""
    chosen = _recipe_like(data)
    locs = [tuple(str(k) for k in e.get("loc", ())) for e in err.errors()] if err is not None else []
    at_endpoint = [loc for loc in locs if "endpoint" in loc]
    if at_endpoint and "endpoint:" not in read_shipped_text(chosen):
        return ENDPOINT_EXAMPLES["synthesis" if "synthesis" in at_endpoint[0] else "judge"]
    return chosen


def read_shipped_text(name: str) -> str:
    """A shipped recipe's YAML text ("" if there is none by that name)."""
    try:
        return (resources.files(RECIPES_PACKAGE) / f"{name}.yaml").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return ""


def _recipe_like(data: object) -> str:
    data = data if isinstance(data, dict) else {}
    name, shipped = str(data.get("name", "")), shipped_recipes()
    if name in shipped:
        return name
    export = data.get("export") if isinstance(data.get("export"), dict) else {}
    if export.get("name") in shipped:
        return export["name"]
    return {"tiny": "tiny", "world": "shapes"}.get(str(data.get("profile", "full")), "synthvlm-100k")


def load_recipe(name_or_path: str | Path, overrides: dict | None = None) -> Recipe:
    """Load a shipped recipe by name (`tiny`) or a user's YAML file by path, its `extends` chain
    merged (`synthvlm_data.recipe_extends`)."""
    return _validated(resolve(locate(str(name_or_path))), overrides)


def load_recipe_mapping(name_or_path: str | Path) -> Resolved:
    """The merged mapping of a recipe (validated), and the files it came from: what
    `synthvlm recipes --show` prints."""
    resolved = resolve(locate(str(name_or_path)))
    _validated(resolved)
    return resolved
