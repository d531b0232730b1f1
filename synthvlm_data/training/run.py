"""Run one LLaVA stage end to end: model, data, TRL SFTTrainer, save, card, optional publish.

Works unchanged under `python`, `accelerate launch` (1..N processes, CPU or GPU, DeepSpeed through
the accelerate config) and torchrun: everything process-dependent comes from `PartialState`.
Output layout of `<output_dir>/`: the final model (safetensors + processor + README.md card +
loss_curve.png + training_log.json), `checkpoints/checkpoint-N/` (resumable) and `logs/` (trackers).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from synthvlm_data.presentation import model_card as card_lib
from synthvlm_data.training import data as data_lib
from synthvlm_data.training.config import Stage, TrainConfig
from synthvlm_data.training.errors import CheckpointError, InputDataError, TrainConfigError
from synthvlm_data.training.freezing import freeze_for_stage, parameter_counts, trainable_modules

STAGE_TITLES = {
    "pretrain": ("stage 1: feature alignment", "vision tower and LLM frozen, projector trained on image-caption pairs"),
    "finetune": ("stage 2: visual instruction tuning", "projector and LLM trained on instruction data"),
}


def resolve_resume(value: str | None, checkpoints_dir: Path) -> str | None:
    """'latest' -> newest checkpoint-N under the run; a path must be a checkpoint directory."""
    if not value:
        return None
    if value.lower() in {"latest", "last", "true"}:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(checkpoints_dir)) if checkpoints_dir.is_dir() else None
        if last is None:
            raise CheckpointError(f"--resume_from_checkpoint latest: no checkpoint-N directory in {checkpoints_dir}")
        return last
    path = Path(value).expanduser()
    if not (path / "trainer_state.json").is_file():
        raise CheckpointError(f"--resume_from_checkpoint {value}: not a trainer checkpoint (no trainer_state.json)")
    return str(path)


def use_cpu() -> bool:
    """CPU training: no GPU torch can see (CUDA/ROCm, MPS, XPU), or `accelerate launch --cpu`.

    Decided before the first `PartialState` exists: it is a process-wide singleton, and only a
    `cpu=True` state turns torchrun's ranks on a CPU-only machine into a gloo process group
    (`accelerate launch --multi_gpu --num_processes N` there; `--cpu` alone starts one process
    unless mpirun is configured, accelerate#2741).
    """
    import torch

    return not accelerator_visible() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true"}


def accelerator_visible() -> bool:
    """Whether torch sees an accelerator accelerate would train on (CUDA/ROCm, MPS, XPU, ...)."""
    import torch

    acc = getattr(torch, "accelerator", None)
    if acc is not None and acc.is_available():
        return True
    return torch.cuda.is_available()


def check_accelerator(cfg: TrainConfig, stage: Stage) -> None:
    """A GPU-precision config (bf16/fp16) on a machine where CUDA is invisible would not fail: it
    would train a 7B model on the CPU for months. Refused, as `synthvlm build` refuses a full-scale
    recipe, unless the CPU is asked for explicitly (`accelerate launch --cpu`)."""
    import torch

    targs = cfg.stage(stage).training
    precision = "bf16" if targs.bf16 else "fp16" if targs.fp16 else None
    if cfg.model.dtype != "float32":
        precision = precision or cfg.model.dtype
    if precision is None or accelerator_visible() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true"}:
        return
    build = f"torch {torch.__version__}" + (f" built for CUDA {torch.version.cuda}" if torch.version.cuda else " (a CPU build)")
    raise TrainConfigError(
        f"config '{cfg.name}' trains {stage} in {precision} on a GPU, but no GPU (CUDA, ROCm, MPS, XPU) is visible to {build}; check "
        "nvidia-smi and that the driver supports that CUDA version (README: Training), install the torch build for "
        "your driver (make venv TORCH_SPEC=...), or run on the CPU on purpose with accelerate launch --cpu")


def build_sft_config(cfg: TrainConfig, stage: Stage, output_dir: Path, num_processes: int, has_eval: bool):
    from trl import SFTConfig

    targs = cfg.stage(stage).training
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir / "checkpoints"),
        learning_rate=targs.learning_rate,
        per_device_train_batch_size=targs.per_device_train_batch_size,
        per_device_eval_batch_size=targs.per_device_eval_batch_size or targs.per_device_train_batch_size,
        gradient_accumulation_steps=targs.gradient_accumulation_steps(num_processes),
        num_train_epochs=targs.num_train_epochs,
        max_steps=targs.max_steps,
        lr_scheduler_type=targs.lr_scheduler_type,
        warmup_steps=targs.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=targs.weight_decay,
        max_grad_norm=targs.max_grad_norm,
        optim=targs.optim,
        bf16=targs.bf16,
        fp16=targs.fp16,
        activation_checkpointing=targs.gradient_checkpointing,  # transformers 5 name
        max_length=targs.max_length,
        logging_steps=_steps(targs.logging_steps),
        logging_first_step=True,
        eval_strategy=targs.eval_strategy if has_eval else "no",
        eval_steps=_steps(targs.eval_steps) if targs.eval_steps is not None else None,
        save_strategy=targs.save_strategy,
        save_steps=_steps(targs.save_steps),
        save_total_limit=targs.save_total_limit,
        dataloader_num_workers=targs.dataloader_num_workers,
        report_to="none",  # trackers go through accelerate (trackers.py)
        run_name=targs.run_name or f"{cfg.name}-{stage}",
        seed=cfg.seed,
        remove_unused_columns=False,  # stage-1 rows are a lazy transform; the collator picks its keys
        # LLaVA trains on answers only: the completion of prompt-completion rows (stage 1, and stage 2 on
        # latents), the assistant turns of conversations (stage 2)
        completion_only_loss=True if stage == "pretrain" or cfg.model.latents is not None else None,
        assistant_only_loss=stage == "finetune" and cfg.model.latents is None,
        use_cpu=use_cpu(),
        # Stage 1: every row has an image, so the projector is always used; skip DDP's unused-parameter
        # scan. Stage 2 may see text-only batches: None lets TRL turn the scan on.
        ddp_find_unused_parameters=False if stage == "pretrain" else None,
        disable_tqdm=True,
    )
    if targs.tf32 is not None:
        kwargs["tf32"] = targs.tf32
    kwargs.update(targs.sft_args)
    return SFTConfig(**kwargs)


def _steps(value: float) -> float | int:
    """Trainer reads a value < 1 as a ratio of the total steps and >= 1 as a step count."""
    return int(value) if value >= 1 else value


def stage2_start(cfg: TrainConfig):
    """The model stage 2 starts from: finetune.init_from, else the stage-1 output directory."""
    from synthvlm_data.training.config import ComponentRef

    init = cfg.finetune.init_from
    if init is None:
        default = cfg.output_dir("pretrain") if cfg.pretrain else None
        if default is None or not (default / "config.json").is_file():
            raise CheckpointError(
                f"stage 2 starts from the stage-1 model, but {default or 'no pretrain output'} has none: run "
                "train/pretrain.py first or set finetune.init_from (--init_from DIR)"
            )
        init = ComponentRef(id=str(default))
    elif init.is_local and not (init.path / "config.json").is_file():
        raise CheckpointError(f"finetune.init_from {init.id} is not a saved model (no config.json)")
    return init


def check_model_sources(cfg: TrainConfig, stage: Stage) -> None:
    """Fail in a second, before any data is read, if the model cannot be loaded here."""
    from synthvlm_data.models.llava import check_component

    if stage == "pretrain":
        check_component(cfg.model.llm, "llm")
        check_component(cfg.model.vision_tower, "vision_tower")
    else:
        init = stage2_start(cfg)
        if not init.is_local:
            check_component(init, "finetune.init_from")


def load_model(cfg: TrainConfig, stage: Stage):
    """(model, processor) a stage starts from, the processor carrying the stage's chat template.

    Under DeepSpeed ZeRO-3 call it only after the stage's SFTConfig exists: building the training
    arguments registers the DeepSpeed config with transformers, and only then does `from_pretrained`
    partition the weights as they load (`zero.Init`) instead of materialising the whole model on
    every rank (LLaVA's train.py parses its TrainingArguments before loading for the same reason).
    """
    from synthvlm_data.models.llava import load_llava
    from synthvlm_data.training.assembly import build_model
    from synthvlm_data.training.chat_templates import set_chat_template

    if stage == "pretrain":
        model, processor = build_model(cfg.model, seed=cfg.seed)
    else:
        model, processor = load_llava(stage2_start(cfg), cfg.model.dtype)
    set_chat_template(processor, cfg.stage_chat_template(stage))
    return model, processor


def load_datasets(cfg: TrainConfig, stage: Stage):
    section = cfg.stage(stage)
    if stage == "pretrain":
        ds = data_lib.pretrain_dataset(section.data, cfg.model.latents)
        train, evaluation = data_lib.split_eval(ds, section.eval_ratio, cfg.seed)
        train = data_lib.as_prompt_completion(train)
        evaluation = data_lib.as_prompt_completion(evaluation) if evaluation is not None else None
        return train, evaluation
    if cfg.model.latents is not None:  # Synth^2: single-turn instruction rows over latents (prompt-completion)
        if len(section.data) != 1 or section.data[0].format != "captions":
            raise InputDataError("stage 2 on latents takes one `captions`-format source with a `latent` column "
                                 "(prompt = instruction, caption = answer); remove model.latents to fine-tune a "
                                 "pixel model on other data")
        ds = data_lib.pretrain_dataset(section.data[0], cfg.model.latents)
        train, evaluation = data_lib.split_eval(ds, section.eval_ratio, cfg.seed)
        return (data_lib.as_prompt_completion(train),
                data_lib.as_prompt_completion(evaluation) if evaluation is not None else None)
    ds = data_lib.finetune_dataset(section.data, cfg.seed, section.stopping_strategy)
    return data_lib.split_eval(ds, section.eval_ratio, cfg.seed)


def _print(state, msg: str) -> None:
    if state.is_main_process:
        print(f"[synthvlm-train] {msg}", flush=True)


@contextlib.contextmanager
def pinned_cpu_threads() -> Iterator[int]:
    """CPU runs use `SYNTHVLM_CPU_THREADS` intra-op threads per process (default 1), like every stage.

    Why: on a shared machine two spinning OpenMP threads per process made a tiny stage-1 step ~4x
    slower than one (measured: 625 s vs 162 s for the same 15 steps), and a pinned count keeps CPU
    results comparable between runs. GPU runs are left alone.
    """
    import torch

    from synthvlm_data.models.devices import cpu_threads_from_env, torch_threads

    with torch_threads(cpu_threads_from_env() if use_cpu() else None):
        yield torch.get_num_threads()


def run_stage(cfg: TrainConfig, stage: Stage, *, command: str = "", push_to_hub: str | None = None,
              private: bool = False, hub_revision: str | None = None, push_dry_run: bool = False) -> dict:
    """Train one stage and return the run summary (also written to training_log.json)."""
    with pinned_cpu_threads() as threads:
        return _run_stage(cfg, stage, command=command, push_to_hub=push_to_hub, private=private,
                          hub_revision=hub_revision, push_dry_run=push_dry_run, threads=threads)


def _run_stage(cfg: TrainConfig, stage: Stage, *, command: str, push_to_hub: str | None, private: bool,
               hub_revision: str | None, push_dry_run: bool, threads: int) -> dict:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from accelerate import PartialState
    from transformers import set_seed
    from trl import SFTTrainer

    from synthvlm_data.training.trackers import AccelerateTrackers, check_trackers, flat_config

    from synthvlm_data.outdir import check_destination, ensure_marker

    started = time.perf_counter()
    output_dir = cfg.output_dir(stage)
    # New, empty or this package's training folder (resuming its checkpoints): checked before anything loads.
    check_destination(output_dir, "model", flag="--output_dir", overwrite_flag=None, replaces=False)
    state = PartialState(cpu=use_cpu())
    section = cfg.stage(stage)
    targs = section.training
    accumulation = targs.gradient_accumulation_steps(state.num_processes)  # fail before loading anything
    check_accelerator(cfg, stage)
    check_trackers(targs.trackers)
    if state.is_main_process:  # only a run that will start marks (and so creates) its folder
        ensure_marker(output_dir, "model")
    resume = resolve_resume(targs.resume_from_checkpoint, output_dir / "checkpoints")
    check_model_sources(cfg, stage)
    set_seed(cfg.seed)

    with state.main_process_first():  # builds the datasets cache once; data first: fails faster
        train_ds, eval_ds = load_datasets(cfg, stage)
    args = build_sft_config(cfg, stage, output_dir, state.num_processes, eval_ds is not None)  # before the model: ZeRO-3
    with state.main_process_first():  # the SmolLM2 cache once
        model, processor = load_model(cfg, stage)
    freeze_for_stage(model, stage, section.train_vision_tower, getattr(section, "train_llm", False))
    counts = parameter_counts(model)
    modules = trainable_modules(model)
    _print(state, f"{stage}: {counts['trainable']:,} / {counts['total']:,} parameters trained ({', '.join(modules)}); "
                  f"{len(train_ds)} train rows, {len(eval_ds) if eval_ds is not None else 0} eval rows; "
                  f"{state.num_processes} process(es) x {targs.per_device_train_batch_size} x {accumulation} "
                  f"accumulation = global batch {targs.global_batch_size}")

    trackers = AccelerateTrackers(targs.trackers, targs.project, args.run_name, output_dir / "logs",
                                  flat_config(cfg.model_dump(mode="json", include={"name", "seed", "model", stage})))
    collator = None
    if cfg.model.latents is not None:  # Synth^2: latents are the pixel_values, nothing is decoded
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        from synthvlm_data.training.latent import LatentProcessor, image_token_count

        collator = DataCollatorForVisionLanguageModeling(
            processor=LatentProcessor(processor, image_token_count(model)), max_length=args.max_length,
            completion_only_loss=True)
    trainer_cls = SFTTrainer
    if targs.group_by_modality_length and stage == "finetune" and cfg.model.latents is None:
        from synthvlm_data.training.sampling import modality_grouped_trainer

        trainer_cls = modality_grouped_trainer(SFTTrainer)
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=processor, data_collator=collator, callbacks=[trackers])
    load_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - t0
    metrics = dict(result.metrics)
    final_eval = [e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == trainer.state.global_step]
    if eval_ds is not None:
        metrics.update({k: v for k, v in final_eval[-1].items() if k.startswith("eval_")} if final_eval
                       else trainer.evaluate())
    trackers.close()

    trainer.save_model(str(output_dir))
    summary = {}
    if state.is_main_process:
        processor.save_pretrained(str(output_dir))
        if cfg.model.latents is not None:
            from synthvlm_data.training.latent import write_latent_info

            write_latent_info(output_dir, cfg.model.latents)
        summary = write_artifacts(cfg, stage, output_dir, trainer, metrics, counts, modules,
                                  num_processes=state.num_processes, accumulation=accumulation,
                                  seconds={"load": load_seconds, "train": train_seconds,
                                           "total": time.perf_counter() - started},
                                  command=command, repo_id=push_to_hub, n_train=len(train_ds),
                                  n_eval=len(eval_ds) if eval_ds is not None else 0, device=str(args.device),
                                  threads=threads)
        _print(state, f"saved {output_dir} ({summary['results']['steps']} steps, "
                      f"loss {summary['results']['first_loss']} -> {summary['results']['last_loss']}, "
                      f"{train_seconds:.1f} s training)")
    state.wait_for_everyone()  # every rank is done before anything leaves the machine
    if push_to_hub and state.is_main_process:
        from synthvlm_data.training.publish import push_model_folder

        summary["publish"] = push_model_folder(output_dir, push_to_hub, private=private, revision=hub_revision,
                                               dry_run=push_dry_run)
        for warning in getattr(summary["publish"], "warnings", ()):
            _print(state, f"warning: {warning}")
        _print(state, f"published {output_dir} to {push_to_hub}" + (" (dry run)" if push_dry_run else ""))
    return summary


def _hyperparameters(cfg: TrainConfig, stage: Stage, num_processes: int, accumulation: int) -> dict[str, Any]:
    t = cfg.stage(stage).training
    hp = {
        "learning rate": t.learning_rate,
        "global batch size": f"{t.global_batch_size} ({t.per_device_train_batch_size} per device x "
                             f"{num_processes} process(es) x {accumulation} accumulation)",
        "epochs / max steps": f"{t.num_train_epochs:g}" if t.max_steps <= 0 else f"max_steps {t.max_steps}",
        "schedule": f"{t.lr_scheduler_type}, warmup ratio {t.warmup_ratio:g}",
        "weight decay": t.weight_decay,
        "optimizer": t.optim,
        "precision": "bf16" if t.bf16 else "fp16" if t.fp16 else "fp32",
        "max length": t.max_length,
        "gradient checkpointing": t.gradient_checkpointing,
        "seed": cfg.seed,
    }
    return hp


def _latent_note(cfg: TrainConfig) -> str:
    lat = cfg.model.latents
    if lat is None:
        return ""
    return (f"; input: {lat.size}x{lat.size} VAE latents of {lat.vae.id}, not pixels (real images: that VAE's "
            "encoder, synthvlm_data.training.latent.load_latent_llava)")


def write_artifacts(cfg: TrainConfig, stage: Stage, output_dir: Path, trainer, metrics: dict, counts: dict,
                    modules: list[str], *, num_processes: int, accumulation: int, seconds: dict, command: str,
                    repo_id: str | None, n_train: int, n_eval: int, device: str, threads: int) -> dict:
    from synthvlm_data.models.llava import base_model_id
    from synthvlm_data.presentation.plots import plot_loss_curve

    series = card_lib.loss_series(trainer.state.log_history)
    curve = plot_loss_curve(series, output_dir / card_lib.LOSS_CURVE_PNG, f"{cfg.name} ({stage})")
    train_losses = [v for _, v in series["train"]]
    results = {
        "steps": trainer.state.global_step,
        "train_samples": n_train,
        "eval_samples": n_eval,
        "first_loss": train_losses[0] if train_losses else None,
        "last_loss": train_losses[-1] if train_losses else None,
        "eval_loss": metrics.get("eval_loss"),
        "wall_seconds": seconds["total"],
        "train_seconds": seconds["train"],
        "load_seconds": seconds["load"],
        "num_processes": num_processes,
        "device": device.split(":")[0],
        "threads_per_process": threads,
    }
    section = cfg.stage(stage)
    sources = [section.data] if stage == "pretrain" else section.data
    data = card_lib.data_sources(sources)
    base_models = [b for b in (base_model_id(cfg.model.llm), base_model_id(cfg.model.vision_tower)) if b]
    config = trainer.model.config
    context = {
        "name": f"{cfg.name}-{stage}",
        "description": cfg.description,
        "stage": stage,
        "stage_title": STAGE_TITLES[stage][0],
        "stage_summary": STAGE_TITLES[stage][1],
        "is_tiny": cfg.model.llm.is_tiny or cfg.model.vision_tower.is_tiny,
        "llm": base_model_id(cfg.model.llm) or cfg.model.llm.id,
        "llm_revision": cfg.model.llm.revision,
        "vision_tower": card_lib.describe_component(cfg.model.vision_tower) + _latent_note(cfg),
        "vision_tower_revision": cfg.model.vision_tower.revision,
        "projector": cfg.model.projector,
        "vision_feature_layer": config.vision_feature_layer,
        "image_tokens": config.image_seq_length,
        "chat_template": cfg.stage_chat_template(stage),
        "params": counts,
        "trainable_modules": modules,
        "hyperparameters": _hyperparameters(cfg, stage, num_processes, accumulation),
        "results": results,
        "loss": series,
        "loss_curve": card_lib.LOSS_CURVE_PNG if curve else "",
        "command": card_lib.reproduce_command(command or f"accelerate launch train/{stage}.py --config <config>",
                                              device.split(":")[0], num_processes),
        "repo_id": repo_id or str(output_dir),
        "datasets": card_lib.hub_dataset_ids(d["name"] for d in data),
        "dataset_names": list(dict.fromkeys(d["name"] for d in data)),
        "data_sources": data,
        "base_models": base_models,
        "license": cfg.card.license,
        "language": cfg.card.language,
        "tags": cfg.card.tags,
    }
    card_lib.write_model_card(output_dir, context)
    summary = {"config": cfg.model_dump(mode="json"), "stage": stage, "results": results, "metrics": metrics,
               "loss": series, "parameters": counts, "trainable_modules": modules, "command": command}
    card_lib.write_training_log(output_dir / card_lib.TRAINING_LOG_JSON, summary)
    return summary

