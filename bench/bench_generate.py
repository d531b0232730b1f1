"""Generation throughput of the tiny SDXL (base + refiner, 64 px, CPU): where the time goes.

Prints one table:
- the generate stage (fixed batches, per-sample generators, PNG encoding, shard write) vs the
  bare diffusers calls on the same batches: the stage's overhead ratio;
- batch of B vs one image at a time (bare calls);
- pixel vs latent mode (latent skips the VAE decode and PNG; the decode stage is timed apart);
- 1 vs 2 processes: the whole generate stage (model load included) through the local backend
  vs `accelerate launch` with 2 CPU processes, each pinned to SYNTHVLM_CPU_THREADS=1.

Each in-process figure is the best of --repeats runs (the machine may be shared). Random-weight
tiny models: the numbers show the machinery's costs, not a real SDXL's (use `synthvlm pilot`).

    python bench/bench_generate.py [--captions 16] [--batch 8] [--steps 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from synthvlm_data.backends import BackendOptions, get_backend  # noqa: E402
from synthvlm_data.build import execute  # noqa: E402
from synthvlm_data.config import _deep_merge, recipe_from_dict  # noqa: E402
from synthvlm_data.stages import CaptionsStage, CurateStage, DecodeStage, GenerateStage, RunContext  # noqa: E402
from synthvlm_data.workdir import WorkDir  # noqa: E402


def bench_recipe(captions: int, batch: int, steps: int, output: str = "pixels"):
    """The shipped tiny recipe with its caption file only (no caption-curation models)."""
    from importlib import resources

    data = yaml.safe_load((resources.files("synthvlm_data.recipes") / "tiny.yaml").read_text())
    data["captions"] = {"sources": data["captions"]["sources"], "limit": captions}
    extra = {"rows_per_shard": max(1, captions // 4), "generate": {"steps": steps, "batch_size": batch, "output": output}}
    return recipe_from_dict(_deep_merge(data, extra), "tiny (bench)")


def context(recipe, root: Path) -> RunContext:
    ctx = RunContext(recipe=recipe, work=WorkDir(root))
    for stage in (CurateStage(), CaptionsStage()):
        execute(stage, ctx, get_backend("local"), progress=False)
    return ctx


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bare_calls(gen, batches) -> None:
    """The diffusers calls alone: base (to latents) + refiner (to PIL), nothing else."""
    cfg = gen.cfg
    with torch.inference_mode():
        for part in batches:
            prompts = [j[1] for j in part]
            neg = [cfg.negative_prompt] * len(part)
            gens = lambda: [torch.Generator("cpu").manual_seed(j[3]) for j in part]  # noqa: E731
            lat = gen.pipe(prompt=prompts, negative_prompt=neg, num_inference_steps=cfg.steps,
                           guidance_scale=cfg.guidance_scale, height=cfg.height, width=cfg.width,
                           generator=gens(), denoising_end=cfg.high_noise_frac, output_type="latent").images
            gen.refiner(prompt=prompts, negative_prompt=neg, num_inference_steps=cfg.steps,
                        guidance_scale=cfg.guidance_scale, image=lat, generator=gens(),
                        denoising_start=cfg.high_noise_frac, output_type="pil")


# --------------------------------------------------------------------------- 1 vs 2 processes


def worker(args) -> None:
    """Run the generate stage of a prepared work dir on a backend; the main rank prints timings."""
    backend = get_backend(args.backend, BackendOptions.from_env())
    work = WorkDir(args.worker)
    ctx = RunContext(recipe=work.recipe(), work=work)
    timings = {"setup": 0.0, "run": 0.0, "units": 0}

    class Timed(GenerateStage):
        def setup(self, ctx):
            t = time.perf_counter()
            super().setup(ctx)
            timings["setup"] += time.perf_counter() - t

        def run(self, ctx, unit):
            t = time.perf_counter()
            out = super().run(ctx, unit)
            timings["run"] += time.perf_counter() - t
            timings["units"] += 1
            return out

    stage = Timed()
    backend.wait_for_everyone()
    t0 = time.perf_counter()
    backend.run_stage(stage, ctx, stage.plan(ctx), progress=False)
    wall = time.perf_counter() - t0
    print("BENCH " + json.dumps({"rank": int(os.environ.get("RANK", 0)), "wall": wall, **timings}), flush=True)


def staged_run(recipe, root: Path, processes: int) -> dict:
    """A fresh work dir with captions; then the generate stage in a subprocess (or 2 ranks)."""
    ctx = context(recipe, root)
    WorkDir(root).init(recipe)
    del ctx
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    script = [str(Path(__file__).resolve()), "--worker", str(root)]
    if processes == 1:
        cmd = [sys.executable, *script, "--backend", "local"]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
               str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), *script, "--backend", "accelerate"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    ranks = [json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    return {"wall": max(r["wall"] for r in ranks), "setup": max(r["setup"] for r in ranks),
            "units": [r["units"] for r in sorted(ranks, key=lambda r: r["rank"])]}


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--captions", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="local", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    torch.set_num_threads(BackendOptions.from_env().cpu_threads)  # what every backend runs CPU stages with
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        tmp = Path(tmp)
        recipe = bench_recipe(args.captions, args.batch, args.steps)
        ctx = context(recipe, tmp / "pixels")
        stage = GenerateStage()
        stage.setup(ctx)
        units = stage.plan(ctx)
        batches = [b for u in units for b in stage.batches(ctx, u)]
        n = sum(len(b) for b in batches)
        bare_calls(stage.generator, batches[:1])  # warm-up

        t_stage = best(lambda: [ctx.store.write(u, stage.run(ctx, u)) for u in units], args.repeats)
        t_bare = best(lambda: bare_calls(stage.generator, batches), args.repeats)
        singles = [[j] for b in batches for j in b]
        t_single = best(lambda: bare_calls(stage.generator, singles), args.repeats)

        lat_recipe = bench_recipe(args.captions, args.batch, args.steps, output="latents")
        lctx = context(lat_recipe, tmp / "latents")
        lstage = GenerateStage()
        lstage.generator = stage.generator  # same pipelines; only the output differs
        t_latent = best(lambda: [lctx.store.write(u, lstage.run(lctx, u)) for u in lstage.plan(lctx)], args.repeats)
        dstage = DecodeStage()
        dstage.setup(lctx)
        t_decode = best(lambda: [lctx.store.write(u, dstage.run(lctx, u)) for u in dstage.plan(lctx)], args.repeats)

        one = staged_run(recipe, tmp / "p1", 1)
        two = staged_run(recipe, tmp / "p2", 2)

    ips = lambda t: n / t  # noqa: E731
    rows += [
        ("bare diffusers calls, batch %d" % args.batch, f"{ips(t_bare):.2f}", "1.00"),
        ("generate stage (encode + shard write), batch %d" % args.batch, f"{ips(t_stage):.2f}", f"{t_stage / t_bare:.2f}"),
        ("bare diffusers calls, one image at a time", f"{ips(t_single):.2f}", f"{t_single / t_bare:.2f}"),
        ("generate stage, latent mode (no VAE decode, no PNG)", f"{ips(t_latent):.2f}", f"{t_latent / t_bare:.2f}"),
        ("decode stage (latents -> PNG), alone", f"{ips(t_decode):.2f}", f"{t_decode / t_bare:.2f}"),
        ("latent + decode", f"{ips(t_latent + t_decode):.2f}", f"{(t_latent + t_decode) / t_bare:.2f}"),
        (f"1 process, whole stage incl. model load ({one['setup']:.1f} s)", f"{ips(one['wall']):.2f}", f"{one['wall'] / t_bare:.2f}"),
        (f"2 processes (accelerate), units {two['units']}, load {two['setup']:.1f} s", f"{ips(two['wall']):.2f}",
         f"{two['wall'] / t_bare:.2f}"),
        ("2 vs 1 process, generation only (excl. load)", "",
         f"{(two['wall'] - two['setup']) / max(1e-9, one['wall'] - one['setup']):.2f}"),
    ]
    title = (f"tiny SDXL base+refiner, {n} images ({args.captions} captions x 2), {args.steps} steps, 64 px, "
             f"CPU, {BackendOptions.from_env().cpu_threads} thread(s) per process")
    print(title)
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'images/s':>9}  {'time vs bare':>12}")
    for name, v, rel in rows:
        print(f"{name:{width}}  {v:>9}  {rel:>12}")


if __name__ == "__main__":
    main()
