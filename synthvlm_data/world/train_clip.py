"""Train the world CLIP: a real open_clip `CLIP` (ViT image tower + text transformer), trained
contrastively on world renders and their captions, saved as an open_clip local directory
(`open_clip_config.json` + `open_clip_model.safetensors` + tokenizer files) that the scorer loads
with `local-dir:` exactly as it loads `ViT-B-32`/`openai` from the Hub.

Hard negatives (NegCLIP, Yuksekgonul et al. 2023): each batch also carries wrong-attribute
captions of its images (one colour, shape, size or relation changed). Plain CLIP training learns
bags of words and cannot tell "a red circle left of a blue square" from its swap; SynthVLM's
caption filter and CLIPScore need exactly that distinction.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthvlm_data.world.data import render_array, split_scenes
from synthvlm_data.world.text import caption, wrong_attribute
from synthvlm_data.world.tokenizer import CONTEXT_LENGTH, EOS, PAD, build_tokenizer

# CLIP's own normalisation constants (open_clip OPENAI_DATASET_MEAN/STD): the world's images need
# no special statistics, and keeping CLIP's makes the checkpoint read like any other.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipTrainConfig:
    seed: int = 0
    n_train: int = 20000
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.1
    hard_negatives: float = 1.0  # wrong-attribute captions per image in the batch (share)
    # which attribute a hard negative changes, and how often: relations and shapes are what plain
    # contrastive training learns last (measured: with a uniform mix, relations stayed at chance)
    negative_mix: tuple[tuple[str, float], ...] = (
        ("relation", 0.4), ("shape", 0.25), ("colour", 0.1), ("size", 0.1), ("tone", 0.075), ("pattern", 0.075))
    # stop after this many steps of the `steps`-long schedule: the first steps of the real run, bit for
    # bit, at a fraction of its cost (how `build-models --repeat --stop-after` measures determinism)
    stop_after: int | None = None


# The defaults above built the packaged `world:clip`. V2: more shape negatives and 2,000 steps. Measured
# on 500 validation scenes (zero-shot, `python -m synthvlm_data.world quality`): relation 0.183 -> 0.355
# (95% CIs 0.130-0.248 and 0.284-0.426; chance 0.25), shape 0.668 -> 0.691 (0.620-0.718, 0.644-0.742:
# no gain detected; one training run each, intervals over scenes), colour / size / tone 1.000 both,
# pattern 0.988 -> 0.997; 3,493 s on one core.
V2 = ClipTrainConfig(steps=2000, negative_mix=(("shape", 0.4), ("relation", 0.35), ("colour", 0.07), ("size", 0.08),
                                               ("tone", 0.05), ("pattern", 0.05)))


def model_config(vocab_size: int, eos_id: int, pad_id: int) -> dict:
    return {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 2.0},
        "text_cfg": {
            "context_length": CONTEXT_LENGTH, "vocab_size": vocab_size, "width": 128, "heads": 4, "layers": 3,
            "mlp_ratio": 2.0, "hf_tokenizer_name": "synthvlm-world-tokenizer",
            "pad_id": pad_id, "eos_id": eos_id, "pool_type": "eos",
        },
    }


def _negative_kind(scene, mix: dict[str, float], rng: np.random.Generator) -> tuple[str]:
    """One attribute to falsify, drawn from `mix` among those the scene's caption has."""
    names = [a for a in mix if a != "relation" or len(scene.objects) > 1]
    p = np.array([mix[a] for a in names])
    return (names[int(rng.choice(len(names), p=p / p.sum()))],)


def _images_to_tensor(batch: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def train_clip(out_dir: Path, cfg: ClipTrainConfig = ClipTrainConfig(), log=print) -> dict:
    import open_clip
    from open_clip.model import CLIP
    from open_clip.push_to_hf_hub import save_for_hf
    from transformers import get_cosine_schedule_with_warmup

    tok = build_tokenizer()
    mcfg = model_config(len(tok), tok.convert_tokens_to_ids(EOS), tok.convert_tokens_to_ids(PAD))
    torch.manual_seed(cfg.seed)
    model = CLIP(**mcfg)
    scenes = split_scenes("train", cfg.n_train)
    images = render_array(scenes)
    rng = np.random.default_rng(cfg.seed)
    mix = dict(cfg.negative_mix)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup, cfg.steps)
    t0, losses = time.perf_counter(), []
    model.train()
    for step in range(min(cfg.steps, cfg.stop_after or cfg.steps)):
        idx = rng.choice(len(scenes), size=cfg.batch_size, replace=False)
        texts = [caption(scenes[i], rng) for i in idx]
        n_neg = int(round(cfg.hard_negatives * cfg.batch_size))
        negs = [wrong_attribute(texts[k], scenes[i], rng, _negative_kind(scenes[i], mix, rng)) for k, i in enumerate(idx[:n_neg])]
        ids = tok(texts + negs, padding="max_length", truncation=True, max_length=CONTEXT_LENGTH, return_tensors="pt").input_ids
        fi = F.normalize(model.encode_image(_images_to_tensor(images[idx])), dim=-1)
        ft = F.normalize(model.encode_text(ids), dim=-1)
        logits = model.logit_scale.exp() * fi @ ft.T  # (B, B + negatives)
        target = torch.arange(cfg.batch_size)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : cfg.batch_size].T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"clip step {step}/{cfg.steps} loss {np.mean(losses[-100:]):.4f} ({time.perf_counter() - t0:.0f}s)")
    model.eval()
    out_dir = Path(out_dir)
    half = copy.deepcopy(model).half()
    half.visual.image_mean, half.visual.image_std = MEAN, STD  # what save_config_for_hf records
    half.visual.preprocess_cfg = {"interpolation": "bicubic", "resize_mode": "shortest"}
    hf_tok = open_clip.tokenizer.HFTokenizer.__new__(open_clip.tokenizer.HFTokenizer)
    hf_tok.tokenizer = tok  # save_for_hf only calls tokenizer.save_pretrained
    save_for_hf(half, hf_tok, mcfg, str(out_dir), safe_serialization=True)
    return {"steps": len(losses), "final_loss": float(np.mean(losses[-100:])), "seconds": time.perf_counter() - t0}
