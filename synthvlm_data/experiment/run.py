"""`python -m synthvlm_data.experiment` (`make experiment`): build the arms' data, train the same
tiny LLaVA on each (the package's trainer, configs written here), score each on the world suite,
write `results.json` (scores and CIs only: the same settings give the same bytes), `results.md`
and `timings.json` into `--out`.

Resumable per arm and seed: a finished `arms/<arm>-seed<s>/result.json` is reused; the pools,
datasets, vision tower and LM are built once under `<out>/work/` and reused.

Protocol (LLaVA in miniature, identical for every arm): stage 1 on the arm's caption pairs
(projector + LM trained, vision tower frozen; the latent arm also trains its new tower) for a fixed
number of optimisation steps (the fifth-size arm gets the same steps, so more epochs: the
comparison is data, not compute); then the shared stage 2 on real-render VQA (projector + LM).
Captioning is scored on the stage-1 model (what the caption data taught), VQA on the stage-2 model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from synthvlm_data.experiment import data as D

ARM_TITLES = {
    "real": "(a) real renders + clean captions",
    "random": "(b) synthetic, random pick of k",
    "selected": "(c) synthetic, best of k by clip + 0.5 ssim",
    "selected_fifth": "(d) (c) at one fifth of the size",
    "latents": "(e) Synth^2: world:sdxl latents",
}
LATENT_SIZE, LATENT_PATCH = 16, 4  # world:sdxl at 64 px: 4 x 16 x 16 latents, 4x4 patches -> 16 tokens


@dataclass
class Settings:
    n: int = 800                # captions per arm (a, b, c, e); d gets n // 5
    k: int = 4                  # images per caption in the synthetic pool
    n_eval: int = 250           # held-out test scenes (captions + every question type they allow)
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    arms: list[str] = field(default_factory=lambda: list(D.ARMS))
    stage1_steps: int = 300
    stage2_steps: int = 200
    batch: int = 16
    lr1: float = 1e-3
    lr2: float = 3e-4
    vqa_scenes: int = 600       # stage-2 scenes (about 5 questions each)
    lm_steps: int = 600
    lm_scenes: int = 4000
    eval_seed: int = 0

    def fingerprint(self) -> dict:
        """The settings and the world models they run on (a factor of every arm: a resumed run with
        other models is refused, and results.json names the models its numbers come from)."""
        return {**asdict(self), "world_models": world_models_id()}


def world_models_id() -> str:
    """The packaged world models' identity: the SHA-256 (16 hex digits) of their CHECKSUMS.sha256."""
    import hashlib

    from synthvlm_data.world.build_models import CHECKSUMS, WEIGHTS_DIR

    return hashlib.sha256((WEIGHTS_DIR / CHECKSUMS).read_bytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- shared parts


def prepare(s: Settings, work: Path, log) -> dict:
    """Vision tower, LM, pools and every dataset (each skipped when already there)."""
    from synthvlm_data.world.clip_vit import save_world_clip_vit
    from synthvlm_data.world.lm import pretrain_lm

    t = {}
    t0 = time.perf_counter()
    tower = save_world_clip_vit(work / "clip-vit")
    lm_info = pretrain_lm(work / "lm", n_scenes=s.lm_scenes, steps=s.lm_steps)
    t["tower_and_lm"] = time.perf_counter() - t0
    log(f"LM: {lm_info['parameters']:,} parameters, loss {lm_info['first_loss']} -> {lm_info['last_loss']}")
    data = work / "data"
    t0 = time.perf_counter()
    pixel_arms = [a for a in s.arms if a != "latents"]
    if pixel_arms:
        pool = D.build_pool(work, s.n, s.k)
        rows = None
        for arm in pixel_arms:
            if not (data / arm / "data").is_dir():
                rows = rows or D.arm_rows(pool, s.n, s.k)
                D.write_dataset(rows[arm], data / arm)
    if "latents" in s.arms:
        lpool = D.build_pool(work, s.n, 1, "latents")
        if not (data / "latents" / "data").is_dir():
            D.write_dataset(D.latent_rows(lpool), data / "latents", (4, LATENT_SIZE, LATENT_SIZE))
    t["pools"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not (data / "vqa" / "data").is_dir() or ("latents" in s.arms and not (data / "vqa-latents" / "data").is_dir()):
        vqa, images = D.vqa_rows(s.vqa_scenes)
        D.write_dataset(vqa, data / "vqa")
        if "latents" in s.arms:
            z = encode_latents(images)
            D.write_dataset({**vqa, "latent": [z[i] for i in vqa["scene"]]}, data / "vqa-latents",
                            (4, LATENT_SIZE, LATENT_SIZE))
    t["vqa_data"] = time.perf_counter() - t0
    return {"tower": tower, "lm": work / "lm", "data": data, "lm_info": lm_info, "seconds": t}


def encode_latents(images, batch: int = 64) -> list[np.ndarray]:
    """Real renders -> world:sdxl latents (the VAE encoder, as the latent arm is evaluated)."""
    from synthvlm_data.models.refs import ModelRef
    from synthvlm_data.training.latent import LatentEncoder, load_vae

    enc = LatentEncoder(load_vae(ModelRef(id="world:sdxl")), LATENT_SIZE)
    out = []
    for i in range(0, len(images), batch):
        out.extend(z.numpy().astype(np.float16) for z in enc(images[i:i + batch]))
    return out


# --------------------------------------------------------------------------- one arm


def train_config(s: Settings, arm: str, seed: int, shared: dict, run_dir: Path) -> dict:
    latent = arm == "latents"
    model = {"llm": str(shared["lm"]), "vision_tower": "tiny:latent-vit" if latent else str(shared["tower"]),
             "projector": "mlp2x_gelu", "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
             "image_aspect_ratio": "pad", "chat_template": "chatml", "dtype": "float32", "attn_implementation": "sdpa"}
    if latent:
        model["latents"] = {"vae": "world:sdxl", "size": LATENT_SIZE, "patch_size": LATENT_PATCH}

    def training(out: str, steps: int, lr: float) -> dict:
        return {"output_dir": str(run_dir / out), "learning_rate": lr, "global_batch_size": s.batch,
                "per_device_train_batch_size": s.batch, "max_steps": steps, "lr_scheduler_type": "cosine",
                "warmup_ratio": 0.03, "weight_decay": 0.0, "max_length": 256, "logging_steps": 10,
                "eval_strategy": "no", "save_strategy": "no", "trackers": []}

    return {
        "name": f"experiment-{arm}-seed{seed}", "seed": seed,
        "description": f"the experiment in miniature, arm {ARM_TITLES[arm]}, seed {seed}",
        "model": model,
        "pretrain": {"data": {"dataset": str(shared["data"] / arm), "format": "captions"}, "eval_ratio": 0.0,
                     "train_llm": True, "train_vision_tower": latent,
                     "training": training("stage1", s.stage1_steps, s.lr1)},
        "finetune": {"init_from": str(run_dir / "stage1"), "train_vision_tower": False,
                     "data": [{"dataset": str(shared["data"] / ("vqa-latents" if latent else "vqa")),
                               "format": "captions"}],
                     "eval_ratio": 0.0, "training": training("stage2", s.stage2_steps, s.lr2)},
        "card": {"license": "apache-2.0", "tags": ["llava", "synthvlm", "experiment", "tiny"]},
    }


class LatentModel:
    """A latent-mode checkpoint answering about real images (through the VAE encoder), with
    `CheckpointModel.generate`'s interface and decoding (greedy)."""

    def __init__(self, path: Path):
        from synthvlm_data.training.latent import load_latent_llava

        self.model, self.processor, self.encoder = load_latent_llava(path)

    def generate(self, images: list, text: str, max_new_tokens: int = 32) -> str:
        import torch

        from synthvlm_data.training.latent import latent_inputs

        inputs = latent_inputs(self.processor, self.encoder, images, [text])
        tok = self.processor.tokenizer
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                      pad_token_id=tok.pad_token_id)
        return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def load_for_eval(path: Path, latent: bool):
    from synthvlm_data.evaluation.checkpoint import CheckpointModel

    return LatentModel(path) if latent else CheckpointModel(path)


def run_arm(s: Settings, arm: str, seed: int, shared: dict, run_dir: Path, log) -> dict:
    """Train stage 1 and 2, score captions (stage 1) and VQA (stage 2); write result.json + samples."""
    from synthvlm_data.evaluation.run import ANSWER_TOKENS, CAPTION_TOKENS, world_result
    from synthvlm_data.evaluation.world_suite import build_items
    from synthvlm_data.training.config import config_from_dict
    from synthvlm_data.training.run import run_stage
    from synthvlm_data.world.render import render

    result_path = run_dir / "result.json"
    if result_path.is_file():
        log(f"{arm} seed {seed}: done before, reusing {result_path}")
        return json.loads(result_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_from_dict(train_config(s, arm, seed, shared, run_dir), f"experiment arm {arm}")
    secs = {}
    summaries = {}
    for stage in ("pretrain", "finetune"):
        if (cfg.output_dir(stage) / "training_log.json").is_file():
            summaries[stage] = json.loads((cfg.output_dir(stage) / "training_log.json").read_text())
            continue
        t0 = time.perf_counter()
        summaries[stage] = run_stage(cfg, stage, command="make experiment")
        secs[stage] = time.perf_counter() - t0
    items = build_items(s.n_eval, s.eval_seed)
    images = [render(sc) for sc in items.scenes]
    t0 = time.perf_counter()
    latent = arm == "latents"
    m1 = load_for_eval(cfg.output_dir("pretrain"), latent)
    captions = [m1.generate([im], D.CAPTION_PROMPT, max_new_tokens=CAPTION_TOKENS) for im in images]
    m2 = load_for_eval(cfg.output_dir("finetune"), latent)
    answers = [m2.generate([images[q.scene_index]], q.prompt, max_new_tokens=ANSWER_TOKENS) for q in items.questions]
    secs["eval"] = time.perf_counter() - t0
    result, samples = world_result(items, captions, answers, f"{arm}-seed{seed}")
    from datasets import load_dataset

    n_train = len(load_dataset(str(shared["data"] / arm), split="train"))
    out = {"arm": arm, "seed": seed, "n_train": n_train, "captioning": result["captioning"], "vqa": result["vqa"],
           "baselines": result["baselines"], "items": result["items"],
           "training": {st: {k: summaries[st]["results"].get(k) for k in ("steps", "first_loss", "last_loss")}
                        for st in summaries},
           "per_item": {"captioning": [x["scores"] for x in samples if x["task"] == "captioning"],
                        "vqa": [float(x["correct"]) for x in samples if x["task"] == "vqa"]},
           "examples": [x["prediction"] for x in samples if x["task"] == "captioning"][:5]}
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in samples))
    (run_dir / "timings.json").write_text(json.dumps({k: round(v, 1) for k, v in secs.items()}, indent=2) + "\n")
    tmp = run_dir / ".result.json.tmp"
    tmp.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    tmp.rename(result_path)
    log(f"{arm} seed {seed}: exact {out['captioning']['exact']['score']:.3f}, colour "
        f"{out['captioning']['colour']['score']:.3f}, VQA {out['vqa']['all']['score']:.3f} "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in secs.items())})")
    return out


# --------------------------------------------------------------------------- the table


TABLE_CAPTION = ("exact", "colour", "shape", "size", "count", "relation", "background")
CAPTION_ENDPOINT = ("colour", "shape", "size", "count", "relation", "background")  # per scene: the mean of these
# The contrasts the experiment tests, fixed before any result is seen: (a, b, what a - b answers).
CONTRASTS = (
    ("selected", "random", "does SynthVLM's selection help (best of k vs a random pick)"),
    ("real", "selected", "how far synthetic selected data is from real renders"),
    ("selected", "selected_fifth", "what four fifths of the selected data add"),
    ("real", "latents", "how far Synth^2's latents are from real renders"),
)
ENDPOINTS = ("vqa", "caption")  # per scene: VQA accuracy over its questions; the caption's attribute mean
EQUIVALENCE_MARGIN = 0.02  # "equal" only if the 90% interval of the difference lies within +-0.02
TARGET_DELTA = 0.03  # the difference the design should detect (80% power, two-sided 5%)


def scene_matrix(runs: list[dict], endpoint: str, scene_of_question: list[int]) -> np.ndarray:
    """(seeds x scenes) scores of one arm: per scene, VQA accuracy over its questions, or the mean
    of the caption's attribute scores (scenes without a question are left out of VQA)."""
    rows = []
    for r in runs:
        if endpoint == "vqa":
            per: dict[int, list[float]] = {}
            for q, ok in zip(scene_of_question, r["per_item"]["vqa"], strict=True):
                per.setdefault(q, []).append(ok)
            rows.append([float(np.mean(per[k])) for k in sorted(per)])
        else:
            rows.append([float(np.mean([it[a] for a in CAPTION_ENDPOINT if a in it])) for it in r["per_item"]["captioning"]])
    return np.asarray(rows, dtype=float)


def contrasts(s: Settings, by_arm: dict[str, list[dict]], scene_of_question: list[int]) -> list[dict]:
    """Every fixed contrast whose arms ran, on every endpoint: the difference with its two-level
    intervals (seeds and scenes both random, `experiment/stats.py`), Holm-adjusted p over the whole
    family, TOST at EQUIVALENCE_MARGIN, and the power the design reached for TARGET_DELTA with the
    seeds needed for 80%."""
    from synthvlm_data.experiment import stats

    out, raw_p = [], []
    for a, b, question in CONTRASTS:
        if a not in by_arm or b not in by_arm:
            continue
        for endpoint in ENDPOINTS:
            ma, mb = (scene_matrix(by_arm[x], endpoint, scene_of_question) for x in (a, b))
            c = stats.contrast(ma, mb, margin=EQUIVALENCE_MARGIN)
            raw_p.append(c["p"])  # Holm on the unrounded p
            row = {"a": a, "b": b, "question": question, "endpoint": endpoint,
                   **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items() if k not in ("ci95", "ci90")},
                   "ci95": [round(x, 4) for x in c["ci95"]], "ci90": [round(x, 4) for x in c["ci90"]]}
            if ma.shape[0] >= 2:
                comp = stats.components(ma - mb)
                row["power_at_target"] = round(stats.power(comp, ma.shape[0], ma.shape[1], TARGET_DELTA), 3)
                row["seeds_for_80pct_power"] = stats.seeds_for_power(comp, ma.shape[1], TARGET_DELTA)
            else:
                row["power_at_target"] = row["seeds_for_80pct_power"] = None  # one seed: no seed variance to see
            out.append(row)
    for row, adj in zip(out, stats.holm(raw_p)):
        row["p_holm"] = round(adj, 4)
        row["verdict"] = ("differ" if adj < 0.05 else "equivalent" if row["equivalent"] else
                          "inconclusive")
    return out


def aggregate(s: Settings, results: list[dict]) -> dict:
    """Per arm: the mean over seeds of each score, a 95% CI with seeds and scenes both random,
    and the per-seed scores (their spread); then the fixed contrasts between arms (`contrasts`)."""
    from synthvlm_data.evaluation.world_suite import build_items

    scene_of_question = [q.scene_index for q in build_items(s.n_eval, s.eval_seed).questions]
    by_arm = {}
    arms = {}
    for arm in s.arms:
        runs = sorted((r for r in results if r["arm"] == arm), key=lambda r: r["seed"])
        if not runs:
            continue
        by_arm[arm] = runs
        row = {"title": ARM_TITLES[arm], "n_train": runs[0]["n_train"], "seeds": [r["seed"] for r in runs],
               "captioning": {}, "vqa": {}, "training": {str(r["seed"]): r["training"] for r in runs},
               "examples": runs[0]["examples"]}
        for attr in TABLE_CAPTION:
            per_seed = [[it[attr] for it in r["per_item"]["captioning"] if attr in it] for r in runs]
            row["captioning"][attr] = _cell(per_seed, s.eval_seed)
        vqa_types = list(runs[0]["vqa"])
        for qt in vqa_types:
            row["vqa"][qt] = {"score": float(np.mean([r["vqa"][qt]["score"] for r in runs])),
                              "per_seed": [r["vqa"][qt]["score"] for r in runs]}
        row["vqa"]["all"] = _cell(scene_matrix(runs, "vqa", scene_of_question), s.eval_seed)
        row["caption_endpoint"] = _cell(scene_matrix(runs, "caption", scene_of_question), s.eval_seed)
        arms[arm] = row
    first = results[0]
    return {"experiment": "real vs synthetic vs selected vs latent training data, miniature world",
            "settings": s.fingerprint(), "eval_items": first["items"],
            "arms": arms, "contrasts": contrasts(s, by_arm, scene_of_question),
            "statistics": {"interval": "t interval of a two-way random-effects model (seeds, scenes) with Satterthwaite "
                                       "degrees of freedom; VQA averaged per scene first",
                           "contrasts": "paired on seeds and scenes; Holm over the family",
                           "equivalence_margin": EQUIVALENCE_MARGIN, "target_delta": TARGET_DELTA},
            "baselines": {"majority": {
                "captioning": {a: first["baselines"]["majority"]["captioning"][a]["score"] for a in TABLE_CAPTION},
                "vqa": first["baselines"]["majority"]["vqa"]["all"]["score"]},
                "chance": {"vqa": first["baselines"]["chance"]["vqa"]["all"]["score"]}}}


def _cell(per_seed, seed: int) -> dict:
    from synthvlm_data.experiment.stats import mean_interval

    mat = np.asarray(per_seed, dtype=float)  # seeds x scenes
    lo, hi = mean_interval(mat)["ci"]
    scores = mat.mean(axis=1)
    return {"score": round(float(scores.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)],
            "per_seed": [round(float(x), 4) for x in scores], "n_items": int(mat.shape[1])}


def _fmt(cell: dict) -> str:
    text = f"{cell['score']:.3f} [{cell['ci95'][0]:.2f}, {cell['ci95'][1]:.2f}]"
    if len(cell["per_seed"]) > 1:
        text += f" ±{np.std(cell['per_seed'], ddof=1):.3f}"
    return text


def markdown(agg: dict, timings: dict) -> str:
    cols = ["arm", "n train", *[f"caption {a}" for a in TABLE_CAPTION], "VQA (all)", "train s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for arm, row in agg["arms"].items():
        secs = timings.get(arm)
        lines.append("| " + " | ".join([row["title"], str(row["n_train"]),
                                        *[_fmt(row["captioning"][a]) for a in TABLE_CAPTION],
                                        _fmt(row["vqa"]["all"]), f"{secs:.0f}" if secs is not None else "-"]) + " |")
    b = agg["baselines"]
    lines.append("| majority baseline | - | " + " | ".join(f"{b['majority']['captioning'][a]:.3f}" for a in TABLE_CAPTION)
                 + f" | {b['majority']['vqa']:.3f} | - |")
    lines.append("| chance | - | " + " | ".join("-" for _ in TABLE_CAPTION) + f" | {b['chance']['vqa']:.3f} | - |")
    seeds = agg["settings"]["seeds"]
    note = (f"\nScores: mean over seeds {seeds}; [95% CI, seeds and the "
            f"{agg['arms'][next(iter(agg['arms']))]['captioning']['exact']['n_items']} eval scenes both random: "
            "t with Satterthwaite's degrees of freedom; VQA averaged per scene first]"
            + ("; ± = std across seeds (n - 1)" if len(seeds) > 1 else "") + ". Captioning: stage-1 model; VQA: after the "
            "shared stage 2. train s = stage 1 + stage 2 training seconds per seed (mean).\n")
    vqa_types = [t for t in next(iter(agg["arms"].values()))["vqa"] if t != "all"]
    per_type = ["", "| arm | " + " | ".join(f"VQA {t}" for t in vqa_types) + " |", "|---|" + "---|" * len(vqa_types)]
    for arm, row in agg["arms"].items():
        per_type.append(f"| {row['title']} | " + " | ".join(f"{row['vqa'][t]['score']:.3f}" for t in vqa_types) + " |")
    return "\n".join(lines) + "\n" + note + "\n".join(per_type) + "\n" + contrast_table(agg)


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def contrast_table(agg: dict) -> str:
    """The fixed contrasts: difference, intervals, Holm p, verdict, power reached for the target."""
    rows = agg.get("contrasts") or []
    if not rows:
        return ""
    st = agg["statistics"]
    lines = ["", "| contrast | endpoint | a - b [95% CI] | 90% CI | p (Holm) | verdict | power for "
             f"{st['target_delta']} | seeds for 80% |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["power_at_target"] is None:  # one seed
            power = need = "-"
        else:
            power = f"{r['power_at_target']:.2f}"
            # None: the scene term alone keeps the power under 80%: more scenes, not seeds
            need = "none (more scenes)" if r["seeds_for_80pct_power"] is None else str(r["seeds_for_80pct_power"])
        lines.append(f"| {r['a']} - {r['b']} | {r['endpoint']} | {r['diff']:+.3f} [{r['ci95'][0]:+.3f}, "
                     f"{r['ci95'][1]:+.3f}] | [{r['ci90'][0]:+.3f}, {r['ci90'][1]:+.3f}] | {_p(r['p'])} "
                     f"({_p(r['p_holm'])}) | {r['verdict']} | {power} | {need} |")
    lines.append(f"\nContrasts fixed in the code before the run, paired on seeds and scenes; Holm over the "
                 f"{len(rows)} tests; \"equivalent\" only if the 90% interval lies within +-{st['equivalence_margin']} "
                 "(TOST at 5%); \"inconclusive\" otherwise. Intervals and p: t with Satterthwaite's degrees of "
                 "freedom (seeds and scenes both random; df in results.json). Power: of that t-test for a "
                 f"{st['target_delta']} difference, from the difference's seed, scene and residual variance at this "
                 "design's seeds and scenes (with few seeds the seed variance is itself uncertain); seeds for 80%: "
                 "at this many scenes.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- entry point


def parse(argv=None) -> tuple[Settings, Path]:
    env = os.environ.get
    d = Settings()
    arm_list = "; ".join(f"{k}: {v}" for k, v in ARM_TITLES.items())
    p = argparse.ArgumentParser(
        prog="python -m synthvlm_data.experiment", description=__doc__.split("\n\n")[0],
        epilog=f"arms: {arm_list}. Each default can also come from the EXPERIMENT_* variable named in its help.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=env("EXPERIMENT_OUT", "outputs/experiment"),
                   help="results folder (results.json/.md, timings.json, work/, arms/); EXPERIMENT_OUT")
    p.add_argument("--n", type=int, default=int(env("EXPERIMENT_N", d.n)),
                   help="captions per arm (selected_fifth gets n // 5); EXPERIMENT_N")
    p.add_argument("--k", type=int, default=d.k, help="images generated per caption in the synthetic pool")
    p.add_argument("--n-eval", type=int, default=int(env("EXPERIMENT_N_EVAL", d.n_eval)),
                   help="held-out world scenes scored (captions + questions); EXPERIMENT_N_EVAL")
    p.add_argument("--seeds", default=env("EXPERIMENT_SEEDS", ",".join(map(str, d.seeds))),
                   help="training seeds, comma-separated (scores are their mean); EXPERIMENT_SEEDS")
    p.add_argument("--arms", default=env("EXPERIMENT_ARMS", ",".join(d.arms)),
                   help=f"arms to run, comma-separated, from {', '.join(D.ARMS)}; EXPERIMENT_ARMS")
    p.add_argument("--stage1-steps", type=int, default=int(env("EXPERIMENT_STAGE1_STEPS", d.stage1_steps)),
                   help="optimisation steps of stage 1 (caption pairs); EXPERIMENT_STAGE1_STEPS")
    p.add_argument("--stage2-steps", type=int, default=int(env("EXPERIMENT_STAGE2_STEPS", d.stage2_steps)),
                   help="optimisation steps of stage 2 (real-render VQA); EXPERIMENT_STAGE2_STEPS")
    p.add_argument("--batch", type=int, default=d.batch, help="training batch size of both stages")
    p.add_argument("--vqa-scenes", type=int, default=int(env("EXPERIMENT_VQA_SCENES", d.vqa_scenes)),
                   help="world scenes of stage 2's VQA data; EXPERIMENT_VQA_SCENES")
    p.add_argument("--lm-steps", type=int, default=int(env("EXPERIMENT_LM_STEPS", d.lm_steps)),
                   help="steps pre-training the shared tiny LM on world text; EXPERIMENT_LM_STEPS")
    p.add_argument("--lm-scenes", type=int, default=d.lm_scenes, help="world scenes of the LM's text")
    p.add_argument("--verbose", action="store_true", help="also show the libraries' progress bars, logging and "
                   "known warnings")
    a = p.parse_args(argv)
    from synthvlm_data.output import quiet_libraries

    quiet_libraries(verbose=a.verbose)
    arms = [x for x in a.arms.split(",") if x]
    bad = [x for x in arms if x not in D.ARMS]
    if bad:
        p.error(f"unknown arm(s) {', '.join(bad)}; known: {', '.join(D.ARMS)}")
    s = Settings(n=a.n, k=a.k, n_eval=a.n_eval, seeds=[int(x) for x in a.seeds.split(",") if x], arms=arms,
                 stage1_steps=a.stage1_steps, stage2_steps=a.stage2_steps, batch=a.batch, vqa_scenes=a.vqa_scenes,
                 lm_steps=a.lm_steps, lm_scenes=a.lm_scenes)
    return s, Path(a.out)


def run(s: Settings, out: Path) -> dict:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(int(os.environ.get("SYNTHVLM_CPU_THREADS", "1")))
    from synthvlm_data.outdir import check_destination, ensure_marker

    # New, empty or an earlier experiment (resumed): a folder holding anything else is refused before any work.
    check_destination(out, "experiment", overwrite_flag=None, replaces=False)
    out.mkdir(parents=True, exist_ok=True)
    ensure_marker(out, "experiment")
    settings_file = out / "settings.json"
    earlier = json.loads(settings_file.read_text()) if settings_file.is_file() else None
    if earlier is not None and "world_models" not in earlier and earlier == asdict(s):
        # a run from before the models were recorded: resumed with the same settings, its models taken to be these
        # (the packaged ones have not changed since the record began), and recorded from now on
        earlier = s.fingerprint()
    if earlier is not None and earlier != s.fingerprint():
        what = ("other world models (world_models "
                f"{earlier.get('world_models', 'not recorded')} there, {world_models_id()} here)"
                if {k: v for k, v in earlier.items() if k != "world_models"} == asdict(s) else "other settings")
        raise SystemExit(f"{out} holds a run with {what} ({settings_file}); pass another --out or delete it")
    settings_file.write_text(json.dumps(s.fingerprint(), indent=2, sort_keys=True) + "\n")
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[experiment {time.perf_counter() - started:7.0f} s] {msg}", flush=True)

    shared = prepare(s, out / "work", log)
    log(f"data ready ({', '.join(f'{k} {v:.0f} s' for k, v in shared['seconds'].items())})")
    results = [run_arm(s, arm, seed, shared, out / "arms" / f"{arm}-seed{seed}", log)
               for seed in s.seeds for arm in s.arms]
    agg = aggregate(s, results)
    train_secs = {}
    for arm in s.arms:
        ts = [json.loads((out / "arms" / f"{arm}-seed{sd}" / "timings.json").read_text()) for sd in s.seeds]
        if all("pretrain" in t and "finetune" in t for t in ts):
            train_secs[arm] = float(np.mean([t["pretrain"] + t["finetune"] for t in ts]))
    (out / "results.json").write_text(json.dumps(agg, indent=2, sort_keys=True) + "\n")
    table = markdown(agg, train_secs)
    (out / "results.md").write_text(table)
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
    timings.update({"last_invocation_seconds": round(time.perf_counter() - started, 1),
                    "prepare": {k: round(v, 1) for k, v in shared["seconds"].items()},
                    "train_seconds_per_arm": {k: round(v, 1) for k, v in train_secs.items()}})
    (out / "timings.json").write_text(json.dumps(timings, indent=2, sort_keys=True) + "\n")
    print(table, flush=True)
    log(f"wrote {out / 'results.json'}, {out / 'results.md'}")
    return agg


def main(argv=None) -> int:
    from synthvlm_data.errors import SynthVLMError

    s, out = parse(argv)
    try:
        run(s, out)
    except SynthVLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0
