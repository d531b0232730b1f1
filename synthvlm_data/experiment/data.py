"""The experiment's training sets, built with the package's own stages.

One synthetic pool: `n` clean captions of the world's `pool` split (disjoint from the `test`
scenes the suite evaluates on) -> `k` images each from world:sdxl -> CLIPScore (world CLIP) + SSIM,
through `synthvlm_data.build` (resumable shards). Every arm reads that pool:

(a) real: each caption with the real render of its own scene (the pool row's image);
(b) random: one of its k synthetic images, a seeded pick;
(c) selected: its best image by clip + 0.5 * ssim (`stages.select.best_of_k`);
(d) selected/5: the top n/5 of (c) by that score;
(e) latents: a latent-mode build of the same captions (`generate.output: latents`, one per
    caption, the seed of repeat 0), read as VAE latents, nothing decoded (Synth^2).

Stage 2 data is shared by every arm: the world suite's question types on real `train`-split
renders (for the latent arm the same renders through the VAE encoder).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from synthvlm_data.evaluation.world_suite import CAPTION_PROMPT, scene_questions
from synthvlm_data.world.data import split_scenes
from synthvlm_data.world.render import render

ARMS = ("real", "random", "selected", "selected_fifth", "latents")
W_CLIP, W_SSIM = 1.0, 0.5  # SynthVLM's rule (the shapes recipe)
VQA_SCENE_OFFSET = 500_000  # train-split scenes 500,000+ for stage 2 (the LM's text uses 1,000,000+)


def pool_recipe(n: int, k: int, output: str = "pixels", seed: int = 0) -> dict:
    """The shapes-large recipe, minus curation (clean captions only) and selection (done per arm)."""
    name = f"experiment-pool-{output}"
    return {
        "name": name, "profile": "world", "seed": seed, "rows_per_shard": 64,
        "description": "the experiment in miniature: world pool captions -> world:sdxl -> CLIPScore + SSIM",
        "captions": {"sources": [{"name": "world-pool", "type": "world",
                                  "world": {"n_clean": n, "n_per_corruption": 0, "seed": 1}}],
                     "num_threads": 1, "filters": []},
        "generate": {"pipeline": "sdxl", "model": {"id": "world:sdxl"}, "steps": 15, "guidance_scale": 3.0,
                     "negative_prompt": "", "height": 64, "width": 64, "images_per_caption": k, "batch_size": 32,
                     "dtype": "float32", "device": "cpu", "image_format": "png", "output": output},
        "score": {"clip": {"model": {"id": "world:clip"}, "text_prefix": "", "batch_size": 64},
                  "ssim": {"size": 64, "down": 28, "grayscale": True, "interpolation": "bilinear"}},
        "select": {"w_clip": W_CLIP, "w_ssim": W_SSIM},
        "export": {"name": name, "license": "apache-2.0", "rows_per_shard": 512},
    }


def build_pool(root: Path, n: int, k: int, output: str = "pixels", seed: int = 0) -> Path:
    """Run (or resume) the pool build; returns its work dir (stage shards under it)."""
    from synthvlm_data.build import build
    from synthvlm_data.config import recipe_from_dict

    recipe = recipe_from_dict(pool_recipe(n, k, output, seed), "experiment pool")
    work = root / "runs" / recipe.name
    build(recipe, root / recipe.name, work_dir=work, progress=False)
    return work


def read_stage(work: Path, stage: str, columns: list[str] | None = None) -> pa.Table:
    files = sorted((work / stage).glob(f"{stage}-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no {stage} shards in {work}")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def pool_index(source_id: str) -> int:
    return int(source_id.rsplit("-", 1)[1])  # "pool-000123" -> row 123 of world.pool.pool_rows


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def arm_rows(work: Path, n: int, k: int, seed: int = 0) -> dict[str, dict[str, list]]:
    """Rows {id, image (PNG bytes), caption, prompt, score} of arms real / random / selected / selected_fifth."""
    from synthvlm_data.stages.select import best_of_k

    caps = read_stage(work, "captions", ["id", "caption", "source_id"]).to_pydict()
    caption_of = dict(zip(caps["id"], caps["caption"]))
    source_of = dict(zip(caps["id"], caps["source_id"]))
    gen = read_stage(work, "generate", ["id", "repeat", "image"])
    sc = read_stage(work, "score", ["id", "repeat", "clip_score", "ssim"]).to_pydict()
    image_of = {(i, r): im for i, r, im in zip(gen.column("id").to_pylist(), gen.column("repeat").to_pylist(),
                                                 gen.column("image").to_pylist())}
    ids, reps = np.array(sc["id"]), np.array(sc["repeat"])
    score = W_CLIP * np.array(sc["clip_score"]) + W_SSIM * np.array(sc["ssim"])
    scenes = split_scenes("pool", n)
    out: dict[str, dict[str, list]] = {a: {"id": [], "image": [], "caption": [], "prompt": [], "score": []}
                                       for a in ARMS[:4]}

    def add(arm, sid, image, s):
        for key, v in (("id", sid), ("image", image), ("caption", caption_of[sid]), ("prompt", CAPTION_PROMPT),
                       ("score", float(s))):
            out[arm][key].append(v)

    best = best_of_k(ids, reps, score)  # one index per caption, ordered by id
    for j in best:
        sid = str(ids[j])
        add("real", sid, _png(render(scenes[pool_index(source_of[sid])])), float("nan"))
        pick = int(np.random.default_rng([seed, pool_index(source_of[sid])]).integers(k))
        rand = np.flatnonzero((ids == sid) & (reps == pick))[0]
        add("random", sid, image_of[(sid, pick)], score[rand])
        add("selected", sid, image_of[(sid, int(reps[j]))], score[j])
    sel = out["selected"]
    order = np.lexsort((np.array(sel["id"]), -np.array(sel["score"])))[: max(1, len(sel["id"]) // 5)]
    for i in sorted(order.tolist(), key=lambda t: sel["id"][t]):
        add("selected_fifth", sel["id"][i], sel["image"][i], sel["score"][i])
    return out


def latent_rows(work: Path) -> dict[str, list]:
    """Rows {id, latent (C, H, W) float16, caption, prompt} of the latent-mode build (repeat 0)."""
    from synthvlm_data.columns import latent_from_bytes

    caps = read_stage(work, "captions", ["id", "caption"]).to_pydict()
    caption_of = dict(zip(caps["id"], caps["caption"]))
    gen = read_stage(work, "generate", ["id", "repeat", "latent", "latent_shape"]).to_pydict()
    order = sorted(range(len(gen["id"])), key=lambda i: gen["id"][i])
    rows = {"id": [], "latent": [], "caption": [], "prompt": []}
    for i in order:
        if gen["repeat"][i] != 0:
            continue
        rows["id"].append(gen["id"][i])
        rows["latent"].append(latent_from_bytes(gen["latent"][i], gen["latent_shape"][i]).numpy())
        rows["caption"].append(caption_of[gen["id"][i]])
        rows["prompt"].append(CAPTION_PROMPT)
    return rows


def vqa_rows(n_scenes: int, seed: int = 0) -> tuple[dict[str, list], list]:
    """Stage-2 rows {id, image, caption (answer), prompt (question + short-answer suffix)} of real
    train-split renders, every question type the suite asks; and the renders (for the latent arm)."""
    from synthvlm_data.world.data import SPLIT_OFFSET, WORLD_SEED
    from synthvlm_data.world.scene import sample_scenes

    scenes = sample_scenes(WORLD_SEED, n_scenes, offset=SPLIT_OFFSET["train"] + VQA_SCENE_OFFSET)
    images = [render(s) for s in scenes]
    pngs = [_png(im) for im in images]
    rows = {"id": [], "image": [], "caption": [], "prompt": [], "scene": []}
    for i, s in enumerate(scenes):
        for q in scene_questions(s, i, np.random.default_rng([seed, 7, i])):
            rows["id"].append(f"vqa-{q.id}")
            rows["image"].append(pngs[i])
            rows["caption"].append(q.answer)
            rows["prompt"].append(q.prompt)
            rows["scene"].append(i)
    return rows, images


def write_dataset(rows: dict[str, list], folder: Path, latent_shape: tuple[int, ...] | None = None) -> Path:
    """A local dataset folder (`data/train-00000-of-00001.parquet`) that `load_dataset(folder)` reads."""
    from datasets import Array3D, Dataset, Features, Image, Value

    folder = Path(folder)
    if (folder / "data" / "train-00000-of-00001.parquet").is_file():
        return folder
    feats = {"id": Value("string"), "caption": Value("string"), "prompt": Value("string")}
    cols = {k: rows[k] for k in ("id", "caption", "prompt")}
    if latent_shape is None:
        feats["image"] = Image()
        cols["image"] = [{"bytes": b, "path": None} for b in rows["image"]]
    else:
        feats["latent"] = Array3D(shape=latent_shape, dtype="float16")
        cols["latent"] = [np.asarray(x, dtype=np.float16) for x in rows["latent"]]
    ds = Dataset.from_dict(cols, features=Features(feats))
    (folder / "data").mkdir(parents=True, exist_ok=True)
    tmp = folder / "data" / ".tmp-train.parquet"
    ds.to_parquet(str(tmp))
    tmp.rename(folder / "data" / "train-00000-of-00001.parquet")
    return folder
