"""Scale: time and peak memory of the pipeline's real stages as the data grows .

    python bench/bench_scale.py [--captions 100000,1000000] [--images 64,640] [--dir /tmp/bench-scale]

Two parts, every measurement in a fresh process (peak RSS = that process's ru_maxrss):

1. captions: N synthetic captions (word-sampled from templates, seeded; about 1 in 8 breaks a
   SynthVLM Table-1 rule: repeated words or characters, URLs, symbol runs, flagged words, too
   few letters) go through the real caption stage (`CurateStage` units then `CaptionsStage`'s reduce: source reading,
   validation, the Table-1 rule filters + regex, exact dedup, ids, seeded prompts, caption
   shards of 1000 = the work-unit plan), then selection (`SelectStage`, top 10%, as the paper's
   100K of 1M) and export (`export_dataset`) of the selected rows. Peak RSS is read once the
   package is imported and after the caption stage (its state lives in scratch files, whose
   largest total size is shown); above `--select-max` captions only the caption stage runs. Generate and score shards for
   the N captions are written by the bench (one 12x12 PNG per caption, scores from a hash): no
   generator runs here.
2. images: one generate shard of M images of 1024x1024 (PNG, noise-textured so they compress
   like real renders: ~2 MB each), 2 per caption, scored by the real `ScoreStage` (the `tiny`
   recipe's random-weight open_clip `tiny:clip` + SSIM 768 -> 336 -> 768 as in the paper:
   decode, resize and SSIM are real, the CLIP model is small), selected (best of 2) and exported
   in one published shard. The shard is written by a separate process first.

`--code DIR` imports the package from DIR (e.g. a checkout of an older commit) for a before/after
comparison on the same shards. Prints one table per part (markdown).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

TEMPLATES = ("{a} {n1} {v} {p} {b} {n2}.", "{A} {n1} and {b} {n2} {v} {p} the {n3}.",
             "Close-up of {a} {adj} {n1} {p} {b} {n2}.", "{Num} {adj} {n1}s {v} {p} {b} {n2} at {t}.")
NOUNS = "man woman child dog cat bicycle car bus train boat pizza table chair lamp tree street field beach kitchen".split()
ADJ = "red blue green small large old young wooden white black striped shiny".split()
VERBS = "sitting standing riding holding waiting parked lying walking".split()
PREPS = "next to|on top of|under|near|in front of|behind|beside".split("|")


def synthetic_captions(n: int, seed: int = 0):
    """n captions, deterministic; ~1/8 break one Table-1 rule (and ~1% are exact duplicates)."""
    rng = random.Random(seed)
    prev = ""
    for i in range(n):
        t = rng.choice(TEMPLATES)
        cap = t.format(a=rng.choice(["a", "the"]), A=rng.choice(["A", "The"]), b=rng.choice(["a", "the"]),
                       n1=rng.choice(NOUNS), n2=rng.choice(NOUNS), n3=rng.choice(NOUNS), v=rng.choice(VERBS),
                       p=rng.choice(PREPS), adj=rng.choice(ADJ), Num=rng.choice(["Two", "Three", "Several"]),
                       t=rng.choice(["dusk", "noon", "night"]))
        r = rng.random()
        if r < 0.02:
            cap = " ".join([rng.choice(NOUNS)] * 14) + "."  # word repetition
        elif r < 0.04:
            cap = cap + " " + "ha" * 30  # character repetition
        elif r < 0.06:
            cap = cap + f" buy now at http://shop{i}.example.com"  # regex (URL / shop spam)
        elif r < 0.08:
            cap = cap + " #### $$$ %%% @@@ !!! *** &&& ~~~"  # special characters
        elif r < 0.10:
            cap = cap + " 12345 67890 123 456 789 000"  # digits: alnum/special ratio
        elif r < 0.12:
            cap = cap.rstrip(".") + " with a damn dog."  # flagged word
        elif r < 0.13 and prev:
            cap = prev  # an exact duplicate of the previous caption
        prev = cap
        yield {"id": i, "caption": cap}


@functools.lru_cache(maxsize=256)
def tiny_png(i: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (12, 12), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(buf, format="PNG")
    return buf.getvalue()


def texture_png(i: int, side: int = 1024) -> bytes:
    """A 1024-px PNG that compresses like a rendered photo (smooth shapes + grain), ~2 MB."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([128 + 100 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + c) + y * rng.uniform(1, 4))
                     for c in rng.uniform(0, 1, 3)], -1)
    img = np.clip(base + rng.normal(0, 7, (side, side, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def recipe(work: Path, part: str, n: int):
    from synthvlm_data.config import load_recipe

    rules = [{"type": "alnum_ratio", "min_ratio": 0.60},
             {"type": "char_repetition", "rep_len": 10, "max_ratio": 0.09373663},
             {"type": "word_repetition", "rep_len": 10, "max_ratio": 0.03085751},
             {"type": "special_characters", "min_ratio": 0.16534802, "max_ratio": 0.42023757},
             {"type": "flagged_words", "max_ratio": 0.0}, {"type": "regex"}]
    over = {"rows_per_shard": 1000,
            "captions": {"sources": [{"name": "bench", "type": "file", "path": str(work / "captions.jsonl"),
                                      "id_column": "id", "caption_column": "caption"}],
                         "filters": rules, "dedup": {"exact": True, "near": False}, "judge": None,
                         "synthesis": None, "diversity": None},
            "select": {"ratio": 0.1} if part == "captions" else {"ratio": 1.0},
            "export": {"rows_per_shard": 100_000 if part == "captions" else 2000}}
    if part == "images":
        over["rows_per_shard"] = n  # one shard holding every image: the worst case for memory
        over["generate"] = {"height": 1024, "width": 1024, "images_per_caption": 2}
        over["score"] = {"ssim": {"size": 768, "down": 336}}
    return load_recipe("tiny", overrides=over)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- child processes


def setup(part: str, work: Path, n: int) -> dict:
    """Write the inputs of a measurement (not measured)."""
    import pyarrow as pa

    from synthvlm_data.columns import CAPTION_SCHEMA, GENERATE_SCHEMA
    from synthvlm_data.workdir import CAPTIONS, GENERATE, WorkDir
    from synthvlm_data.workunits import WorkUnit

    work.mkdir(parents=True, exist_ok=True)
    if part == "captions":
        with (work / "captions.jsonl").open("w") as f:
            for rec in synthetic_captions(n):
                f.write(json.dumps(rec) + "\n")
        return {}
    k = 2
    wd = WorkDir(work / "run")
    wd.init(recipe(work, part, n))
    caps = [{"id": f"c{i:07d}", "caption": f"a photo of a red bicycle number {i} next to a wooden table",
             "prompt": "Describe the image concisely.", "source": "bench", "source_id": str(i), "concept": None}
            for i in range(n // k)]
    unit = WorkUnit(CAPTIONS, 0, 1)
    wd.store.write(unit, pa.Table.from_pylist(caps, schema=CAPTION_SCHEMA))
    wd.write_manifest(CAPTIONS, [unit], {"rows": len(caps)})
    wd.write_caption_report({"captions_out": len(caps), "steps": []})
    pool = [texture_png(i) for i in range(16)]
    gen = [{"id": c["id"], "repeat": r, "seed": i * k + r, "image": pool[(i * k + r) % len(pool)],
            "generator": "bench"} for i, c in enumerate(caps) for r in range(k)]
    wd.store.write(WorkUnit(GENERATE, 0, 1), pa.Table.from_pylist(gen, schema=GENERATE_SCHEMA))
    wd.write_manifest(GENERATE, [WorkUnit(GENERATE, 0, 1)])
    return {"mean_png_mb": sum(len(p) for p in pool) / len(pool) / 1e6,
            "shard_mb": wd.store.path(WorkUnit(GENERATE, 0, 1)).stat().st_size / 1e6}


def rule_filters_cpu(rc, path: Path) -> float:
    """CPU seconds of the recipe's rule filters over every caption of `path`, applied as the
    caption stage applies them (`_apply_step` on chunks of `chunk_size` survivors)."""
    from synthvlm_data.captions.pipeline import _apply_step, _build_steps
    from synthvlm_data.captions.report import StepReport
    from synthvlm_data.models.text import ModelCache

    steps = _build_steps(rc.captions, ModelCache())
    reps = [StepReport(st.label, st.params, 3) for st in steps]
    cpu = 0.0
    with path.open() as f:
        while True:
            rows = [json.loads(line) for _, line in zip(range(rc.captions.chunk_size), f)]
            if not rows:
                return cpu
            c = time.process_time()
            for st, rep in zip(steps, reps):
                rows = _apply_step(st, rows, rep)
            cpu += time.process_time() - c


def measure_captions(work: Path, n: int, with_select: bool = True) -> dict:
    import hashlib

    import numpy as np
    import pyarrow as pa

    from synthvlm_data.build import collect_stats
    from synthvlm_data.columns import GENERATE_SCHEMA, SCORE_SCHEMA
    from synthvlm_data.stages.base import RunContext
    from synthvlm_data.backends import get_backend
    from synthvlm_data.build import execute
    from synthvlm_data.stages.captions import CaptionsStage, CurateStage
    from synthvlm_data.stages.export import export_dataset
    from synthvlm_data.stages.select import SelectStage
    from synthvlm_data.workdir import CAPTIONS, GENERATE, SCORE, SELECT, WorkDir
    from synthvlm_data.workunits import WorkUnit, plan_units

    out: dict = {"rows": n}
    rc = recipe(work, "captions", n)
    wd = WorkDir(work / "run")
    wd.init(rc)
    ctx = RunContext(rc, wd)
    out["rss_start_mb"] = peak_mb()  # the package and its libraries imported, nothing read yet
    out["rules_cpu_s"] = rule_filters_cpu(rc, work / "captions.jsonl")
    t, c = time.perf_counter(), time.process_time()
    spill_mb = [0.0]

    def watch_spill() -> None:  # the largest the reduce's scratch folder got (its files on disk)
        while not done.is_set():
            size = sum(p.stat().st_size for p in wd.root.glob("*/.tmp-*/**/*") if p.is_file())
            spill_mb[0] = max(spill_mb[0], size / 1e6)
            done.wait(1.0)

    import threading

    done = threading.Event()
    watcher = threading.Thread(target=watch_spill, daemon=True)
    watcher.start()
    for stage in (CurateStage(), CaptionsStage()):  # the map (curate units) and the reduce, one process
        execute(stage, ctx, get_backend("local"), progress=False)
    done.set()
    watcher.join()
    spill_mb = round(spill_mb[0], 1)
    units = ctx.caption_units()
    out["caption_stage_s"], out["caption_stage_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    out["kept"] = wd.caption_report()["captions_out"]
    out["units"] = len(units)
    out["rss_captions_mb"] = peak_mb()
    out["spill_mb"] = spill_mb
    del stage  # what a resumed build holds: nothing
    if not with_select:
        return out

    # the generate and score shards of k=1 image per caption (bench-made, not timed)
    for u in units:
        ids = wd.store.read(u, ["id"])["id"].to_pylist()
        g = WorkUnit(GENERATE, u.index, u.num_units)
        wd.store.write(g, pa.table({"id": ids, "repeat": pa.array([0] * len(ids), pa.int32()),
                                    "seed": pa.array(range(len(ids)), pa.int64()),
                                    "image": [tiny_png(int(i[:2], 16)) for i in ids],
                                    "generator": ["bench"] * len(ids)}, schema=GENERATE_SCHEMA))
        h = np.array([int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) for i in ids], dtype=np.float64) / 2**32
        wd.store.write(WorkUnit(SCORE, u.index, u.num_units),
                       pa.table({"id": ids, "repeat": pa.array([0] * len(ids), pa.int32()), "clip_score": 0.2 + 0.1 * h,
                                 "ssim": 0.9 - 0.2 * h}, schema=SCORE_SCHEMA))
    wd.write_manifest(GENERATE, plan_units(GENERATE, len(units)))
    wd.write_manifest(SCORE, plan_units(SCORE, len(units)))

    t = time.perf_counter()
    sel = SelectStage()
    sel.prepare(ctx)
    wd.store.write(WorkUnit(SELECT, 0, 1), sel.run(ctx, WorkUnit(SELECT, 0, 1)))
    wd.write_manifest(SELECT, [WorkUnit(SELECT, 0, 1)])
    out["select_s"] = time.perf_counter() - t
    t = time.perf_counter()
    export_dataset(ctx, work / "out", collect_stats(wd))
    out["export_s"] = time.perf_counter() - t
    out["selected"] = wd.selection_stats()["selected"]
    out["rss_mb"] = peak_mb()
    return out


def measure_images(work: Path, n: int) -> dict:
    from synthvlm_data.build import collect_stats
    from synthvlm_data.stages.base import RunContext
    from synthvlm_data.stages.export import export_dataset
    from synthvlm_data.stages.score import ScoreStage
    from synthvlm_data.stages.select import SelectStage
    from synthvlm_data.workdir import SCORE, SELECT, WorkDir
    from synthvlm_data.workunits import WorkUnit

    wd = WorkDir(work / "run")
    ctx = RunContext(wd.recipe(), wd)
    out: dict = {"rows": n}
    stage = ScoreStage()
    stage.setup(ctx)
    out["rss_model_mb"] = peak_mb()
    t = time.perf_counter()
    unit = WorkUnit(SCORE, 0, 1)
    wd.store.write(unit, stage.run(ctx, unit))
    wd.write_manifest(SCORE, [unit])
    out["score_s"] = time.perf_counter() - t
    out["rss_score_mb"] = peak_mb()
    sel = SelectStage()
    sel.prepare(ctx)
    wd.store.write(WorkUnit(SELECT, 0, 1), sel.run(ctx, WorkUnit(SELECT, 0, 1)))
    t = time.perf_counter()
    export_dataset(ctx, work / "out", collect_stats(wd))
    out["export_s"] = time.perf_counter() - t
    out["export_mb"] = sum(p.stat().st_size for p in (work / "out" / "data").glob("*.parquet")) / 1e6
    out["rss_mb"] = peak_mb()
    return out


# --------------------------------------------------------------------------- driver


def child(args: list[str], code: str | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = code or str(Path(__file__).resolve().parents[1])
    res = subprocess.run([sys.executable, __file__, "--child", *args], env=env, capture_output=True, text=True, check=False)
    if res.returncode:
        sys.exit(f"bench child {args} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--captions", default="100000,1000000", help="caption counts (comma-separated; '' to skip)")
    ap.add_argument("--images", default="64,640", help="images per generate shard (comma-separated; '' to skip)")
    ap.add_argument("--dir", default="/tmp/bench-scale", help="scratch directory (deleted per run)")
    ap.add_argument("--select-max", type=int, default=1_000_000,
                    help="above this caption count only the caption stage is measured (no select/export)")
    ap.add_argument("--code", default=None, help="import synthvlm_data from this directory instead")
    ap.add_argument("--child", nargs=3, metavar=("ROLE", "DIR", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        role, work, n = args.child[0], Path(args.child[1]), int(args.child[2])
        fn = {"setup-captions": lambda: setup("captions", work, n), "setup-images": lambda: setup("images", work, n),
              "captions": lambda: measure_captions(work, n), "images": lambda: measure_images(work, n),
              "captions-only": lambda: measure_captions(work, n, with_select=False)}[role]
        print(json.dumps(fn()))
        return

    import shutil

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; one process per row, 1 thread; "
          f"code: {args.code or 'this checkout'}", flush=True)
    base = Path(args.dir)
    caps = [int(x) for x in args.captions.split(",") if x]
    if caps:
        print("\n| captions | rule filters: captions per CPU-s | caption stage: wall s (CPU s) | captions per CPU-s "
              "| kept | units | peak RSS MB: imported / after the caption stage | scratch files MB | select s "
              "| export s (rows) | peak RSS MB after export |\n|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
              flush=True)
    for n in caps:
        work = base / f"captions-{n}"
        shutil.rmtree(work, ignore_errors=True)
        child(["setup-captions", str(work), str(n)])
        full = n <= args.select_max
        r = child(["captions" if full else "captions-only", str(work), str(n)], args.code)
        tail = (f"{r['select_s']:.1f} | {r['export_s']:.1f} ({r['selected']:,}) | {r['rss_mb']:,.0f}" if full
                else "- | - | -")
        print(f"| {n:,} | {n / r['rules_cpu_s']:,.0f} | {r['caption_stage_s']:.1f} ({r['caption_stage_cpu_s']:.1f}) "
              f"| {n / r['caption_stage_cpu_s']:,.0f} | {r['kept']:,} | {r['units']} "
              f"| {r.get('rss_start_mb', 0):,.0f} / {r['rss_captions_mb']:,.0f} | {r.get('spill_mb', 0):,.0f} "
              f"| {tail} |", flush=True)
        shutil.rmtree(work, ignore_errors=True)
    imgs = [int(x) for x in args.images.split(",") if x]
    if imgs:
        print("\n| images in the shard | PNG MB each | shard MB | score s | images/s | export s | published MB "
              "| peak RSS MB: model loaded / after score / after export |\n|---:|---:|---:|---:|---:|---:|---:|---|",
              flush=True)
    for n in imgs:
        work = base / f"images-{n}"
        shutil.rmtree(work, ignore_errors=True)
        s = child(["setup-images", str(work), str(n)])
        r = child(["images", str(work), str(n)], args.code)
        print(f"| {n} | {s['mean_png_mb']:.2f} | {s['shard_mb']:,.0f} | {r['score_s']:.1f} | {n / r['score_s']:.1f} "
              f"| {r['export_s']:.1f} | {r['export_mb']:,.0f} | {r['rss_model_mb']:,.0f} / {r['rss_score_mb']:,.0f} "
              f"/ {r['rss_mb']:,.0f} |", flush=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
