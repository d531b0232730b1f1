"""Rebuild every world model from nothing, deterministically: `python -m synthvlm_data.world build-models`.

The CLIP and the text-to-image model train in two processes at once (one intra-op thread each:
the fastest split of a 2-core box, and CPU float results depend on the thread count, so it is
fixed). Each model is written to a staging folder and renamed into place when complete. Then
every file's SHA-256 goes into `CHECKSUMS.sha256`; `--check` rebuilds into a temporary folder and
compares against that file, which is how "the same command gives the same bytes" is tested.

Bytes are reproducible in one environment: the same library versions (`requirements.lock`) on the
same CPU kind (x86-64 AVX2 here). Another torch release or instruction set may pick other float
kernels, and a library writes its version into the configs it saves, so `training.json` records the
environment (`synthvlm_data.environment.world_environment`) and `--check` refuses to compare when
this one differs. `--repeat` builds twice and compares the two (run-to-run determinism), with
`--stop-after N` on the first N steps of each training phase only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from synthvlm_data.models.refs import WORLD_WEIGHTS_DIR

WEIGHTS_DIR = WORLD_WEIGHTS_DIR  # the package's own models (`world:<name>` reads them)
CHECKSUMS = "CHECKSUMS.sha256"
MODELS = ("clip", "sdxl")
MAX_FILE_BYTES = 5_000_000


def _train(name: str, out: str, quick: bool, stop_after: int | None, queue, preset: str = "v1") -> None:
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    def log(msg: str) -> None:
        print(f"[{name}] {msg}", flush=True)

    if name == "clip":
        from synthvlm_data.world.train_clip import V2, ClipTrainConfig, train_clip

        base = V2 if preset == "v2" else ClipTrainConfig()
        cfg = replace(base, stop_after=stop_after, **(dict(n_train=400, steps=4, batch_size=16, warmup=1) if quick else {}))
        result = train_clip(Path(out), cfg, log)
    else:
        from synthvlm_data.world.train_diffusion import V2, DiffusionTrainConfig, train_diffusion

        base = V2 if preset == "v2" else DiffusionTrainConfig()
        quick_cfg = dict(n_train=200, vae_steps=3, unet_steps=3, warmup=1, vae_batch=4, unet_batch=4, vae_gate_n=16,
                         vae_gate=None)
        cfg = replace(base, stop_after=stop_after, **(quick_cfg if quick else {}))
        result = train_diffusion(Path(out), cfg, log)
    queue.put((name, {"config": asdict(cfg), **result}))


def checksums(root: Path) -> dict[str, str]:
    """SHA-256 of every model file under root, by path relative to root."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in (CHECKSUMS, "training.json", ".synthvlm-output.json"):
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def build(out_dir: Path, quick: bool = False, only: tuple[str, ...] = MODELS, stop_after: int | None = None,
          preset: str = "v1") -> dict:
    """Train the models named in `only` into out_dir/<model>/ (staged, renamed when complete);
    the others already in out_dir are kept and checksummed with them. `out_dir` must be new,
    empty or earlier world models (`synthvlm_data.outdir`), checked before any training."""
    from synthvlm_data.outdir import check_destination, write_marker

    check_destination(out_dir, "world-models", overwrite_flag=None, replaces=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_train, args=(m, str(stage / m), quick, stop_after, queue, preset)) for m in only]
    for p in procs:
        p.start()
    results = {}
    try:
        while len(results) < len(procs):
            try:
                name, res = queue.get(timeout=2)
                results[name] = res
            except queue_module.Empty:
                # a model that failed puts nothing: stop at once rather than wait for it (the other
                # model's training is stopped too; nothing is replaced)
                failed = [(m, p.exitcode) for m, p in zip(only, procs, strict=True)
                          if p.exitcode not in (None, 0) and m not in results]
                if failed:
                    raise SystemExit(f"error: training {failed[0][0]} failed (exit {failed[0][1]}, its error above); "
                                     "nothing was replaced") from None
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise SystemExit(f"error: training {only[procs.index(p)]} failed (exit {p.exitcode}); nothing was replaced")
        check_destination(out_dir, "world-models", overwrite_flag=None, replaces=False)  # again: files may have appeared meanwhile
        for m in only:
            target = out_dir / m
            if target.exists():
                shutil.rmtree(target)
            os.replace(stage / m, target)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        shutil.rmtree(stage, ignore_errors=True)
    from synthvlm_data.environment import world_environment

    sums = checksums(out_dir)
    (out_dir / CHECKSUMS).write_text("".join(f"{h}  {p}\n" for p, h in sums.items()))
    previous = json.loads((out_dir / "training.json").read_text()).get("models", {}) if (out_dir / "training.json").is_file() else {}
    meta = {"models": {**{m: previous[m] for m in MODELS if m in previous and m not in results}, **results}, "wall_seconds": round(time.perf_counter() - t0, 1),
            "environment": world_environment(), "preset": preset}
    (out_dir / "training.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    if out_dir.resolve() != WEIGHTS_DIR.resolve():  # the package's own folder ships without a marker
        write_marker(out_dir, "world-models")
    too_big = {p: (out_dir / p).stat().st_size for p in sums if (out_dir / p).stat().st_size >= MAX_FILE_BYTES}
    if too_big:
        raise SystemExit(f"error: weight files over {MAX_FILE_BYTES} bytes: {too_big}")
    return meta


def out_problem(out: Path | None, quick: bool, check: bool) -> str | None:
    """Why `build-models` may not write where it was asked, or None. The package's own models
    (world/weights/) are replaced only when --out names them, and never by --quick ones."""
    if check:
        return None
    if out is None:
        return (f"build-models needs --out: a new folder for the models, or --out {WEIGHTS_DIR} to replace the "
                "package's own (`make world-models` does)")
    if quick and out.resolve() == WEIGHTS_DIR.resolve():
        return (f"--quick models (a few steps, to test the command) never replace the package's own in {WEIGHTS_DIR}: "
                "pass --out another folder")
    return None


def read_checksums(root: Path) -> dict[str, str]:
    path = root / CHECKSUMS
    if not path.is_file():
        return {}
    return {p: h for h, p in (line.split("  ", 1) for line in path.read_text().splitlines() if line.strip())}


def recorded_environment(root: Path) -> dict[str, str | None]:
    """The environment `training.json` says built root's models (older files: torch/python/machine)."""
    path = root / "training.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    return meta.get("environment") or {k: meta[k] for k in ("torch", "python", "machine") if k in meta}


def environment_mismatch(recorded: dict, current: dict) -> list[str]:
    """'name: X here, Y recorded' for every recorded entry that differs here. The lock's hash is
    provenance, not a condition: a lock that moved on elsewhere (a test tool) builds the same bytes."""
    return [f"{k} {current.get(k)} here, {v} recorded" for k, v in recorded.items()
            if k != "lock_sha256" and current.get(k) != v]


def _compare(expected: dict[str, str], got: dict[str, str]) -> list[str]:
    return sorted(p for p in set(expected) | set(got) if expected.get(p) != got.get(p))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthvlm_data.world", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-models", help="retrain every world model (about 50 min on 2 cores)")
    b.add_argument("--out", type=Path,
                   help="where the models go: a new or empty folder, or earlier world models (required, except "
                        f"with --check, which compares against {WEIGHTS_DIR} by default); the package's own "
                        f"models are replaced only by naming their folder: --out {WEIGHTS_DIR}")
    b.add_argument("--check", action="store_true", help="rebuild into a temporary folder and compare with --out's checksums "
                   "(refused when this environment differs from the one training.json records)")
    b.add_argument("--repeat", action="store_true", help="build twice into temporary folders and compare the two "
                   "(run-to-run determinism in this environment); --out is not touched")
    b.add_argument("--stop-after", type=int, metavar="N", help="with --repeat: train only the first N steps of each "
                   "phase (of the full schedule), a determinism measurement at a fraction of the cost")
    b.add_argument("--quick", action="store_true", help="a few steps only (tests the command, not the models)")
    b.add_argument("--only", choices=MODELS, action="append", help="rebuild only this model (repeatable); the others are kept")
    b.add_argument("--preset", choices=("v1", "v2"), default="v1",
                   help="v1: the settings that built the packaged models (default); v2: the fixes under development "
                        "(train_diffusion.V2, train_clip.V2), never into the package's folder")
    q = sub.add_parser("quality", help="measure world models with the verifier: generator, VAE round trip, CLIP zero-shot")
    q.add_argument("--models", type=Path, default=WEIGHTS_DIR, help="a build-models folder (default: the package's own)")
    q.add_argument("--split", choices=("validation", "test"), default="validation",
                   help="validation for every design decision; test once, for the final table")
    q.add_argument("--n", type=int, default=500, help="scenes (captions) measured")
    q.add_argument("--k", type=int, default=4, help="images per caption (the oracle best of k)")
    q.add_argument("--steps", type=int, default=None, help="denoising steps (default: the shapes recipe's)")
    q.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the shapes recipe's)")
    q.add_argument("--json", type=Path, help="also write the measurements here (a new file)")
    w = sub.add_parser("sweep", help="alignment of the generator for each sampling setting, on validation scenes")
    w.add_argument("--models", type=Path, default=WEIGHTS_DIR, help="a build-models folder (default: the package's own)")
    w.add_argument("--n", type=int, default=200, help="validation captions per setting")
    w.add_argument("--steps", default="10,15,25", help="comma-separated denoising steps")
    w.add_argument("--guidance", default="1,2,3,4,6", help="comma-separated guidance scales")
    w.add_argument("--rescale", default="0", help="comma-separated guidance_rescale values (Lin et al.: 0.7)")
    w.add_argument("--json", type=Path, help="also write the table here (a new file)")
    c = sub.add_parser("calibrate", help="the clip_similarity caption filter's threshold for a world CLIP (validation renders)")
    c.add_argument("--models", type=Path, default=WEIGHTS_DIR, help="a build-models folder (default: the package's own)")
    c.add_argument("--n", type=int, default=600, help="validation renders")
    c.add_argument("--json", type=Path, help="also write the calibration here (a new file)")
    args = ap.parse_args(argv)
    if args.cmd in ("quality", "sweep", "calibrate"):
        return _measure(args)
    only = tuple(args.only) if args.only else MODELS
    if args.stop_after is not None and (not args.repeat or args.stop_after < 1):
        print("error: --stop-after N (N >= 1) goes with --repeat: truncated models are only compared, never kept",
              file=sys.stderr)
        return 2
    if args.preset != "v1" and (args.check or args.repeat or args.out is None
                                or (args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())))):
        print(f"error: --preset {args.preset} builds models under development into a new or empty folder (--out DIR; "
              f"not {WEIGHTS_DIR} nor earlier models); --check and --repeat compare the packaged v1 models",
              file=sys.stderr)
        return 2
    if args.repeat:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [build(Path(tmp) / f"run{i}", quick=args.quick, only=only, stop_after=args.stop_after) for i in (1, 2)]
            first, second = checksums(Path(tmp) / "run1"), checksums(Path(tmp) / "run2")
        diff = _compare(first, second)
        seconds = sum(r["wall_seconds"] for r in runs)
        print(f"built twice in {seconds:.0f} s; {len(first)} files, {len(diff)} differ")
        for p in diff:
            print(f"  differs: {p}  first {first.get(p, '-')[:12]}  second {second.get(p, '-')[:12]}")
        return 1 if diff else 0
    problem = out_problem(args.out, args.quick, args.check)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    args.out = args.out or WEIGHTS_DIR
    if args.check:
        expected = read_checksums(args.out)
        if not expected:
            print(f"error: {args.out / CHECKSUMS} is missing: nothing to check against", file=sys.stderr)
            return 2
        from synthvlm_data.environment import world_environment

        differs = environment_mismatch(recorded_environment(args.out), world_environment())
        if differs:
            print(f"error: not comparing: this environment is not the one that built {args.out} ({'; '.join(differs)}); "
                  "install the recorded versions (`make venv` installs requirements.lock) or rebuild without --check",
                  file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory() as tmp:
            meta = build(Path(tmp), quick=args.quick, only=only)
            got = checksums(Path(tmp))
        expected = {p: h for p, h in expected.items() if p.split("/")[0] in only}
        diff = _compare(expected, got)
        print(f"rebuilt in {meta['wall_seconds']:.0f} s; {len(got)} files, {len(diff)} differ")
        for p in diff:
            print(f"  differs: {p}  expected {expected.get(p, '-')[:12]}  got {got.get(p, '-')[:12]}")
        return 1 if diff else 0
    from synthvlm_data.errors import SynthVLMError

    try:
        meta = build(args.out, quick=args.quick, only=only, preset=args.preset)
    except SynthVLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"built {', '.join(only)} into {args.out} in {meta['wall_seconds']:.0f} s")
    return 0


def _measure(args) -> int:
    import torch

    from synthvlm_data.world import quality

    if args.json is not None and args.json.exists():
        print(f"error: {args.json} exists; name a new file (measurements never replace a file)", file=sys.stderr)
        return 2
    if not (args.models / "clip").is_dir() or (args.cmd == "sweep" and not (args.models / "sdxl").is_dir()):
        print(f"error: {args.models} holds no world models (sdxl/ and clip/); build them with "
              "`python -m synthvlm_data.world build-models --out DIR`", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.cmd == "calibrate":
        from synthvlm_data.models.clip import load_clip_scorer
        from synthvlm_data.models.refs import ModelRef
        from synthvlm_data.world.calibrate import calibrate_clip_similarity

        result = calibrate_clip_similarity(*load_clip_scorer(ModelRef(id=str(args.models / "clip")), "cpu"), n=args.n)
        print("\n".join(f"{k}: {v}" for k, v in result.items()))
    elif args.cmd == "sweep":
        nums = lambda text, kind: [kind(v) for v in text.split(",") if v.strip()]  # noqa: E731
        result = quality.sweep_generator(args.models, "validation", args.n, steps=nums(args.steps, int),
                                         guidance=nums(args.guidance, float), guidance_rescale=nums(args.rescale, float),
                                         log=log)
        print(f"{'steps':>5} {'guid':>5} {'resc':>5} {'align':>6}  95% CI         " + " ".join(f"{a[:6]:>6}" for a in quality.ATTRIBUTES))
        for r in result:
            print(f"{r['steps']:>5} {r['guidance']:>5} {r['guidance_rescale']:>5} {r['alignment']['mean']:>6.3f}  "
                  f"[{r['alignment']['ci'][0]:.3f}, {r['alignment']['ci'][1]:.3f}] "
                  + " ".join(f"{r.get(a, float('nan')):>6.3f}" for a in quality.ATTRIBUTES))
    else:
        from synthvlm_data.config import load_recipe

        gen = load_recipe("shapes").generate
        steps = args.steps or gen.steps
        guidance = gen.guidance_scale if args.guidance is None else args.guidance
        result = quality.measure_models(args.models, args.split, args.n, steps=steps, guidance=guidance, k=args.k, log=log)
        print(quality.format_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0
