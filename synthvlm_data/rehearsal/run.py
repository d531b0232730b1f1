"""`synthvlm rehearse [RECIPE|CONFIG ...]`: every full-scale model at real size on the meta device,
the LLaVA checks, and the memory plans, as tables. No weights, no download, no GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthvlm_data.errors import SynthVLMError
from synthvlm_data.rehearsal import memory
from synthvlm_data.rehearsal.catalogue import Model, load_config, lookup
from synthvlm_data.rehearsal.llava import Check, rehearse_llava
from synthvlm_data.rehearsal.meta import build, count_parameters

# The accelerate config each training stage is launched with (the configs' own headers say so).
STAGE_ACCELERATE = {"pretrain": "zero2.yaml", "finetune": "zero3.yaml"}
PRETRAIN_TEXT_TOKENS = 64  # stage 1: LLaVA's instruction + a LCS-558K caption fit in 64 tokens (assumed)


@dataclass
class Result:
    target: str
    models: list[tuple[str, str, int, Any, bool]] = field(default_factory=list)  # model, part, count, published, ok
    checks: list[Check] = field(default_factory=list)
    training: list[dict[str, Any]] = field(default_factory=list)
    generation: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass
class Rehearsal:
    results: list[Result]
    seconds: float

    @property
    def failures(self) -> list[tuple[str, str, str]]:
        out = [(r.target, f"{m} {p}: {n:,} parameters, published {pub.describe()}", "")
               for r in self.results for m, p, n, pub, ok in r.models if not ok]
        return out + [(r.target, c.name, c.detail) for r in self.results for c in r.checks if not c.ok]


# --------------------------------------------------------------------------- targets


def default_targets() -> list[str]:
    """Every shipped full-profile recipe and every shipped 7B/13B training config."""
    from synthvlm_data.config import load_recipe, shipped_recipes
    from synthvlm_data.training.config import shipped_configs_dir

    recipes = [name for name in shipped_recipes() if load_recipe(name).profile == "full"]
    configs = [str(shipped_configs_dir() / f"{name}.yaml") for name in ("7b", "13b")
               if (shipped_configs_dir() / f"{name}.yaml").is_file()]
    return recipes + configs


def _is_training_config(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model"), dict) and "llm" in data["model"]


def _model_refs(node: Any) -> list[tuple[str, str | None]]:
    """Every model a recipe names: ModelRef-shaped {id, revision} and endpoint {url, model} entries."""
    found: list[tuple[str, str | None]] = []
    if isinstance(node, dict):
        if isinstance(node.get("id"), str):
            found.append((node["id"], node.get("revision")))
        if isinstance(node.get("url"), str) and isinstance(node.get("model"), str):
            found.append((node["model"], None))
        for value in node.values():
            found += _model_refs(value)
    elif isinstance(node, list):
        for value in node:
            found += _model_refs(value)
    return list(dict.fromkeys(found))


def _as_loaded(comp, model_id: str, revision: str | None):
    """An open_clip component as the package would create it (`models.clip.open_clip_name` resolves
    the architecture of an architecture + pretrained tag)."""
    if not comp.builder.startswith("open_clip:") or not revision:
        return comp
    from dataclasses import replace

    from synthvlm_data.models.clip import open_clip_name
    from synthvlm_data.models.refs import ModelRef

    arch = open_clip_name(ModelRef(id=model_id, revision=revision))[0]
    return replace(comp, builder=f"open_clip:{arch}")


def _count_models(result: Result, model: Model, built: dict, model_id: str = "", revision: str | None = None
                  ) -> dict[str, int]:
    counts = {}
    for comp in (_as_loaded(c, model_id, revision) for c in model.components):
        key = (comp.builder, comp.config)
        if key not in built:
            built[key] = count_parameters(build(comp))
        n = built[key]
        counts[comp.name] = n
        result.models.append((model.label, comp.name, n, comp.published, comp.published.matches(n)))
    return counts


# --------------------------------------------------------------------------- recipes


def rehearse_recipe(name: str, built: dict) -> Result:
    from synthvlm_data.config import load_recipe

    recipe = load_recipe(name)
    result = Result(recipe.name)
    counts: dict[str, dict[str, int]] = {}
    for model_id, revision in _model_refs(recipe.model_dump(mode="json")):
        model = lookup(model_id, revision)
        if model is None:
            result.skipped.append(model_id if not revision else f"{model_id}/{revision}")
            continue
        counts[model_id] = _count_models(result, model, built, model_id, revision)
    gen = recipe.generate
    if gen.model.id in counts:
        result.generation += generation_plans(gen, counts)
    return result


def generation_plans(gen, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Per-GPU memory of the recipe's generation at its batch size (and 1), VAE sliced or not."""
    base = counts[gen.model.id]
    refiner = counts.get(gen.refiner.id, {}) if gen.refiner is not None else {}
    bytes_fp16 = 2 * (sum(n for k, n in base.items() if k != "vae") + sum(refiner.values()))
    vae_name = "sd3-medium.vae.json" if gen.pipeline == "sd3" else "sdxl-base-1.0.vae.json"
    vae_cfg = load_config(vae_name)
    weights = bytes_fp16 + 4 * base["vae"]  # the VAE decodes upcast to fp32 (force_upcast)
    latent = gen.height // 8
    guidance = gen.guidance_scale > 1.0
    rows = []
    for batch in sorted({1, gen.batch_size}):
        if gen.pipeline == "sd3":
            work = memory.transformer_working_bytes(load_config("sd3-medium.transformer.json"), latent, batch, guidance,
                                                    77 + (gen.max_sequence_length or 256))
        else:
            work = memory.unet_working_bytes(load_config("sdxl-base-1.0.unet.json"), latent, batch, guidance)
        for sliced in (False, True) if batch > 1 else (False,):  # slicing decodes one image at a time
            plan = memory.GenerationPlan(weights, work,
                                         memory.vae_decode_bytes(vae_cfg, gen.height, gen.width, 1 if sliced else batch))
            rows.append({"batch": batch, "vae_slicing": sliced, "plan": plan,
                         "what": f"{gen.pipeline}{' + refiner' if refiner else ''} fp16, {gen.height} px, "
                                 f"{gen.steps} steps{', CFG' if guidance else ''}"
                                 + (" (VAE decode in the decode stage)" if gen.output == "latents" else "")})
    return rows


# --------------------------------------------------------------------------- training configs


def _accelerate(stage: str, configs_dir: Path) -> tuple[int, int]:
    """(ZeRO stage, processes) of the accelerate config a stage is launched with (2/3 and 8 if absent)."""
    path = configs_dir.parent / "accelerate" / STAGE_ACCELERATE[stage]
    default = (2 if stage == "pretrain" else 3, 8)
    if not path.is_file():
        return default
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return int((data.get("deepspeed_config") or {}).get("zero_stage", default[0])), int(data.get("num_processes", 8))


def rehearse_training(path: str, built: dict) -> Result:
    from synthvlm_data.training.config import load_config as load_train_config

    cfg = load_train_config(path)
    result = Result(cfg.name)
    parts = {}
    for role, ref in (("vision_tower", cfg.model.vision_tower), ("llm", cfg.model.llm)):
        model = lookup(ref.id, ref.revision)
        if model is None:
            result.skipped.append(f"{role} {ref.id}")
            continue
        _count_models(result, model, built)
        parts[role] = model.components[0]
    if len(parts) < 2:
        return result
    stage_cfg = cfg.finetune or cfg.pretrain
    templates = {stage: cfg.stage_chat_template(stage) for stage in ("pretrain", "finetune")
                 if getattr(cfg, stage, None) is not None}
    report, model, _ = rehearse_llava(cfg.model, parts["vision_tower"], parts["llm"], seed=cfg.seed,
                                      max_length=stage_cfg.training.max_length, stage_templates=templates)
    result.checks += report.checks
    if "total" in report.counts:
        result.training += training_plans(cfg, report, Path(path).parent)
    del model
    return result


def training_plans(cfg, report, configs_dir: Path) -> list[dict[str, Any]]:
    text = report.text_shape
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    shape = memory.LlamaShape(hidden=text.hidden_size, kv_hidden=text.num_key_value_heads * head_dim,
                              intermediate=text.intermediate_size, layers=text.num_hidden_layers,
                              vocab=report.counts.get("vocab", text.vocab_size))
    rows = []
    for stage in ("pretrain", "finetune"):
        section = getattr(cfg, stage)
        if section is None:
            continue
        targs = section.training
        zero, n_gpus = _accelerate(stage, configs_dir)
        image_tokens = report.counts["image_tokens"]
        seq = targs.max_length or 2048
        if stage == "pretrain":
            seq = min(seq, image_tokens + PRETRAIN_TEXT_TOKENS)
        for ckpt in (targs.gradient_checkpointing, not targs.gradient_checkpointing):
            plan = memory.training_plan(
                total_params=report.counts["total"], trainable_params=report.counts[f"trainable_{stage}"],
                shape=shape, micro_batch=targs.per_device_train_batch_size, seq_len=seq, zero_stage=zero,
                n_gpus=n_gpus, checkpointing=ckpt)
            rows.append({"stage": stage, "zero": zero, "gpus": n_gpus, "batch": targs.per_device_train_batch_size,
                         "seq": seq, "checkpointing": ckpt, "config_setting": ckpt == targs.gradient_checkpointing,
                         "plan": plan})
    return rows


# --------------------------------------------------------------------------- driver


def rehearse(targets: list[str] | None = None) -> Rehearsal:
    """Run the rehearsal of the given recipes / training configs (default: every full-scale one)."""
    from synthvlm_data.config import shipped_recipes
    from synthvlm_data.training.config import shipped_configs_dir

    start = time.perf_counter()
    built: dict = {}
    results = []
    for target in targets or default_targets():
        path = Path(target).expanduser()
        shipped_cfg = shipped_configs_dir() / f"{target}.yaml"
        if path.suffix in (".yaml", ".yml") and path.is_file() and _is_training_config(path):
            results.append(rehearse_training(str(path), built))
        elif not path.is_file() and shipped_cfg.is_file() and target not in shipped_recipes():
            results.append(rehearse_training(str(shipped_cfg), built))
        elif path.is_file() or target in shipped_recipes():
            results.append(rehearse_recipe(target, built))
        else:
            raise SynthVLMError(f"rehearse: '{target}' is neither a shipped recipe ({', '.join(shipped_recipes())}), "
                                "a shipped training config (7b, 13b, ...) nor a recipe / training-config YAML file")
    return Rehearsal(results, time.perf_counter() - start)


# --------------------------------------------------------------------------- presentation


def _gb(value: float) -> str:
    return f"{value / memory.GIB:.1f}"


def _fit_cells(total: float) -> list[str]:
    return ["fits" if memory.fits(total, card) else "no" for card in memory.CARDS_GB]


def table_rows(reh: Rehearsal) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The four tables as (header, rows) of strings, for rich and for markdown."""
    models = (["target", "model", "part", "parameters (meta)", "published", "ok"],
              [[r.target, m, p, f"{n:,}", pub.describe(), "ok" if ok else "FAIL"]
               for r in reh.results for m, p, n, pub, ok in r.models])
    checks = (["target", "check", "ok", "detail"],
              [[r.target, c.name, "ok" if c.ok else "FAIL", c.detail] for r in reh.results for c in r.checks])
    cards = [f"{c} GB" for c in memory.CARDS_GB]
    training = (["config", "stage", "ZeRO x GPUs", "batch x seq", "grad ckpt", "weights", "grads", "optimizer",
                 "activations", "logits", "total GiB", *cards],
                [[r.target, row["stage"], f"{row['zero']} x {row['gpus']}", f"{row['batch']} x {row['seq']}",
                  ("on" if row["checkpointing"] else "off") + ("" if row["config_setting"] else " (alt.)"),
                  _gb(p.weights), _gb(p.grads), _gb(p.optimizer), _gb(p.activations), _gb(p.logits), _gb(p.total),
                  *_fit_cells(p.total)]
                 for r in reh.results for row in r.training for p in [row["plan"]]])
    generation = (["recipe", "generation", "batch", "VAE slicing", "weights", "denoiser", "VAE decode", "total GiB",
                   *cards],
                  [[r.target, row["what"], str(row["batch"]), "on" if row["vae_slicing"] else "off",
                    _gb(p.weights), _gb(p.denoiser), _gb(p.vae_decode), _gb(p.total), *_fit_cells(p.total)]
                   for r in reh.results for row in r.generation for p in [row["plan"]]])
    return {"models at real size (meta device)": models, "LLaVA checks": checks,
            "training memory per GPU (GiB)": training, "generation memory per GPU (GiB)": generation}


def print_rich(reh: Rehearsal) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    for title, (header, rows) in table_rows(reh).items():
        if not rows:
            continue
        table = Table(title=title)
        for h in header:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    skipped = sorted({s for r in reh.results for s in r.skipped})
    if skipped:
        console.print(f"not rehearsed (small models that run here, or not full-scale): {', '.join(skipped)}")


def markdown(reh: Rehearsal, titles: tuple[str, ...] = ("training memory per GPU (GiB)",
                                                        "generation memory per GPU (GiB)")) -> str:
    out = []
    for title, (header, rows) in table_rows(reh).items():
        if title not in titles or not rows:
            continue
        out.append(f"**{title}**\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)
