"""Which parameters each LLaVA stage trains.

Stage 1 (feature alignment): only the projector; the vision tower and the LLM stay frozen.
Stage 2 (visual instruction tuning): projector + LLM; the vision tower stays frozen (LLaVA-1.5).
Either stage may also train what its config says (`pretrain.train_llm`, `train_vision_tower`).
"""

from __future__ import annotations


def freeze_for_pretrain(model, train_llm: bool = False, train_vision_tower: bool = False) -> None:
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    if train_llm:
        model.model.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    if train_vision_tower:
        model.model.vision_tower.requires_grad_(True)


def freeze_for_finetune(model, train_vision_tower: bool = False) -> None:
    model.requires_grad_(True)
    if not train_vision_tower:
        model.model.vision_tower.requires_grad_(False)


def freeze_for_stage(model, stage: str, train_vision_tower: bool = False, train_llm: bool = False) -> None:
    if stage == "pretrain":
        freeze_for_pretrain(model, train_llm, train_vision_tower)
    else:
        freeze_for_finetune(model, train_vision_tower)


def parameter_counts(model) -> dict[str, int]:
    """Total and trainable parameters (shared tensors, e.g. tied embeddings, counted once).

    Under ZeRO-3 a loaded parameter is an empty shard on each rank; DeepSpeed keeps its full size
    in `ds_numel`, which is what is counted then."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = getattr(p, "ds_numel", None) or p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return {"total": total, "trainable": trainable}


def trainable_modules(model) -> list[str]:
    """Top-level module names that hold trainable parameters (for logs and the model card)."""
    names = set()
    for name, p in model.named_parameters():
        if p.requires_grad:
            parts = name.split(".")
            names.add(".".join(parts[:2]) if parts[0] == "model" else parts[0])
    return sorted(names)
