"""How good the world's text-to-image model and its VAE are, measured by the verifier against exact
ground truth (no learned judge): the numbers `make world-models` gates on and the README reports.

- `vae_round_trip`: real renders encoded and decoded by the VAE, read back attribute by attribute
  and compared with the scene's truth (what the UNet can at best see of an image);
- `generator_alignment`: one image per caption, no selection, scored against its caption
  (`verify`), per attribute, plus the oracle best of k minus a random one (the room selection has).

Every share comes with a 95% interval from a bootstrap over scenes (claims of one scene are not
independent), seeded, so a measurement is reproducible to the digit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from synthvlm_data.world.data import render_array
from synthvlm_data.world.scene import Scene
from synthvlm_data.world.verify import agreement_with_truth, read, verify

ATTRIBUTES = ("colour", "shape", "size", "relation", "count", "tone", "pattern")
# the VAE must keep what the UNet has to learn: a round trip of validation renders reads back at
# least this share of each attribute (the gate `train_diffusion` applies before training the UNet).
# The floors: shape what the v2 VAE reaches in this machine's budget, less a margin (0.82-0.90
# measured), colour the target, pattern about the v1 VAE's level (0.716 on 500 validation renders;
# v1: shape 0.574, colour 0.952); VAE_TARGET is the aim.
VAE_GATE = {"shape": 0.80, "colour": 0.98, "pattern": 0.70}
VAE_TARGET = {"shape": 0.95, "colour": 0.98, "pattern": 0.95}


def _share(per_scene: list[dict[str, list[bool]]], attr: str, rng: np.random.Generator, n_boot: int) -> dict | None:
    hits = np.array([sum(c.get(attr, [])) for c in per_scene], float)
    n = np.array([len(c.get(attr, [])) for c in per_scene], float)
    if n.sum() == 0:
        return None
    idx = rng.integers(0, len(per_scene), size=(n_boot, len(per_scene)))
    claims = n[idx].sum(1)
    boot = np.where(claims > 0, hits[idx].sum(1) / np.maximum(claims, 1), np.nan)  # a resample with no claim: no share
    lo, hi = np.nanquantile(boot, [0.025, 0.975])
    return {"share": round(float(hits.sum() / n.sum()), 4), "ci": [round(float(lo), 4), round(float(hi), 4)],
            "claims": int(n.sum())}


def _mean(values: Sequence[float], rng: np.random.Generator, n_boot: int) -> dict:
    v = np.asarray(values, float)
    boot = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"mean": round(float(v.mean()), 4), "ci": [round(float(lo), 4), round(float(hi), 4)], "n": len(v)}


def summarise(per_scene: list[dict[str, list[bool]]], seed: int = 0, n_boot: int = 1000) -> dict:
    """Per-attribute shares with scene-bootstrap intervals, and the mean per-scene alignment."""
    rng = np.random.default_rng(seed)
    out = {a: s for a in ATTRIBUTES if (s := _share(per_scene, a, rng, n_boot)) is not None}
    align = [sum(map(sum, c.values())) / max(sum(map(len, c.values())), 1) for c in per_scene]
    out["alignment"] = _mean(align, rng, n_boot)
    return out


@torch.no_grad()
def vae_round_trip(vae, scenes: list[Scene], batch: int = 64, seed: int = 0) -> dict:
    """Encode (posterior mean) and decode every render; read the result against its scene's truth."""
    images = render_array(scenes)
    per_scene = []
    for s in range(0, len(images), batch):
        x = torch.from_numpy(images[s : s + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        rec = vae.decode(vae.encode(x.to(vae.dtype)).latent_dist.mean).sample.float()
        rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        per_scene += [agreement_with_truth(sc, read(im)) for sc, im in zip(scenes[s : s + batch], rec, strict=True)]
    return summarise(per_scene, seed)


def vae_gate_failures(round_trip: dict, gate: dict[str, float] = VAE_GATE) -> list[str]:
    """'attribute share < floor' for every gated attribute the round trip falls short of."""
    return [f"{a} {round_trip[a]['share']:.3f} < {floor}" for a, floor in gate.items() if round_trip[a]["share"] < floor]


@torch.no_grad()
def generate(pipe, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, guidance: float,
             guidance_rescale: float = 0.0, batch: int = 32) -> list[np.ndarray]:
    """One 64 px image per (prompt, seed), as uint8 arrays, each from its own seeded generator."""
    out = []
    for s in range(0, len(prompts), batch):
        p = list(prompts[s : s + batch])
        gens = [torch.Generator().manual_seed(int(x)) for x in seeds[s : s + batch]]
        kwargs = {"guidance_rescale": guidance_rescale} if guidance_rescale else {}
        ims = pipe(prompt=p, negative_prompt=[""] * len(p), num_inference_steps=steps, guidance_scale=guidance,
                   height=64, width=64, generator=gens, output_type="np", **kwargs).images
        out += [np.clip(np.rint(im * 255), 0, 255).astype(np.uint8) for im in ims]
    return out


def generator_alignment(pipe, scenes: list[Scene], captions: Sequence[str], *, steps: int, guidance: float,
                        guidance_rescale: float = 0.0, k: int = 1, seed: int = 0, batch: int = 32) -> dict:
    """k images per caption (seeds seed*1000003 + i*k + j); the first image of each caption is the
    'random image' of the table; with k > 1, also the oracle best of k (by verifier alignment)."""
    prompts = [c for c in captions for _ in range(k)]
    seeds = [seed * 1_000_003 + i for i in range(len(prompts))]
    images = generate(pipe, prompts, seeds, steps=steps, guidance=guidance, guidance_rescale=guidance_rescale, batch=batch)
    verdicts = [verify(im, c) for im, c in zip(images, prompts, strict=True)]
    first = [verdicts[i * k].checks for i in range(len(captions))]
    out = summarise(first, seed)
    if k > 1:
        rng = np.random.default_rng(seed)
        aligns = np.array([v.alignment for v in verdicts]).reshape(len(captions), k)
        out["oracle_minus_random"] = _mean(aligns.max(1) - aligns.mean(1), rng, 1000)
    out["settings"] = {"steps": steps, "guidance": guidance, "guidance_rescale": guidance_rescale, "k": k, "seed": seed,
                       "n_captions": len(captions)}
    return out


# --------------------------------------------------------------------------- whole-model measurements


def load_world_models(models_dir, device: str = "cpu", clip: bool = True):
    """(SDXL pipeline in float32, (clip, preprocess, tokenizer) or None) from a `build-models`
    folder, through the loaders the build's stages use."""
    from pathlib import Path

    from diffusers import StableDiffusionXLPipeline

    from synthvlm_data.models.clip import load_clip_scorer
    from synthvlm_data.models.refs import ModelRef

    root = Path(models_dir)
    pipe = StableDiffusionXLPipeline.from_pretrained(root / "sdxl", torch_dtype=torch.float32).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, (load_clip_scorer(ModelRef(id=str(root / "clip")), device) if clip else None)


def split_captions(split: str, n: int, seed: int = 0) -> tuple[list[Scene], list[str]]:
    """n scenes of a world split and one sampled caption of each (the caption rng seeded once)."""
    from synthvlm_data.world.data import split_scenes
    from synthvlm_data.world.text import caption

    scenes = split_scenes(split, n)
    rng = np.random.default_rng(seed)
    return scenes, [caption(s, rng) for s in scenes]


def clip_zero_shot(clip, scenes: list[Scene], seed: int = 0) -> dict:
    """The CLIP's zero-shot reading of each attribute of held-out renders (`zeroshot.py`: 1-2 object
    scenes), with a bootstrap 95% interval over scenes and the chance level."""
    from synthvlm_data.world.render import render
    from synthvlm_data.world.zeroshot import zero_shot_accuracy

    model, preprocess, tokenizer = clip
    zs = zero_shot_accuracy(model, preprocess, tokenizer, scenes, [render(s) for s in scenes])
    rng, out = np.random.default_rng(seed), {}
    for a, v in zs.items():
        c = np.asarray(v["correct"], float)
        if not len(c):
            continue
        lo, hi = np.quantile(c[rng.integers(0, len(c), size=(1000, len(c)))].mean(1), [0.025, 0.975])
        out[a] = {"accuracy": round(v["accuracy"], 4), "ci": [round(float(lo), 4), round(float(hi), 4)],
                  "chance": round(v["chance"], 4), "n": v["n"]}
    return out


def measure_models(models_dir, split: str = "validation", n: int = 500, *, steps: int, guidance: float,
                   guidance_rescale: float = 0.0, k: int = 4, seed: int = 0, log=print) -> dict:
    """The world models' quality table on n scenes of `split`: the generator (one image per caption,
    no selection; oracle best of k minus random), the VAE round trip and the CLIP's zero-shot reading.
    A folder with only a CLIP (`build-models --only clip`) gets the CLIP's part."""
    from pathlib import Path

    from synthvlm_data.models.clip import load_clip_scorer
    from synthvlm_data.models.refs import ModelRef

    scenes, captions = split_captions(split, n, seed)
    out = {"split": split, "n": n}
    if (Path(models_dir) / "sdxl").is_dir():
        pipe, _ = load_world_models(models_dir, clip=False)
        log(f"generator: {n} captions x {k} images ({split})")
        out["generator"] = generator_alignment(pipe, scenes, captions, steps=steps, guidance=guidance,
                                               guidance_rescale=guidance_rescale, k=k, seed=seed)
        log("vae round trip")
        out["vae_round_trip"] = vae_round_trip(pipe.vae, scenes, seed=seed)
    log("clip zero-shot")
    out["clip_zero_shot"] = clip_zero_shot(load_clip_scorer(ModelRef(id=str(Path(models_dir) / "clip")), "cpu"), scenes, seed)
    return out


def sweep_generator(models_dir, split: str = "validation", n: int = 200, *, steps: Sequence[int],
                    guidance: Sequence[float], guidance_rescale: Sequence[float] = (0.0,), seed: int = 0, log=print) -> list[dict]:
    """Mean verifier alignment of one image per caption for every (steps, guidance, rescale) setting:
    how the recipe's sampling settings are chosen (on validation scenes, never on test)."""
    pipe, _ = load_world_models(models_dir, clip=False)
    scenes, captions = split_captions(split, n, seed)
    rows = []
    for s in steps:
        for g in guidance:
            for r in guidance_rescale:
                res = generator_alignment(pipe, scenes, captions, steps=s, guidance=g, guidance_rescale=r, seed=seed)
                rows.append({"steps": s, "guidance": g, "guidance_rescale": r, "alignment": res["alignment"],
                             **{a: res[a]["share"] for a in ATTRIBUTES if a in res}})
                log(f"steps {s} guidance {g} rescale {r}: alignment {res['alignment']['mean']:.3f} {res['alignment']['ci']}")
    return rows


def format_table(result: dict) -> str:
    """The measurements as a plain-text table (share and 95% interval per line)."""
    fmt = lambda name, d, key="share": f"  {name:<44} {d[key]:.3f}  [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"  # noqa: E731
    lines = [f"world models on {result['n']} {result['split']} scenes"]
    if "generator" in result:
        g, v = result["generator"], result["vae_round_trip"]
        lines[0] += f" (steps {g['settings']['steps']}, guidance {g['settings']['guidance']}, k {g['settings']['k']})"
        lines.append(fmt("generator: mean alignment of one image", g["alignment"], "mean"))
        lines += [fmt(f"generator: {a}", g[a]) for a in ATTRIBUTES if a in g]
        if "oracle_minus_random" in g:
            lines.append(fmt(f"generator: oracle best of {g['settings']['k']} minus random", g["oracle_minus_random"], "mean"))
        lines += [fmt(f"VAE round trip: {a}", v[a]) for a in ATTRIBUTES if a in v]
    lines += [fmt(f"CLIP zero-shot: {a}", d, "accuracy") + f"  (chance {d['chance']:.3f}, n {d['n']})"
              for a, d in result["clip_zero_shot"].items()]
    return "\n".join(lines)
