"""The `synthvlm` command. Thin: parses arguments, calls the library, prints results.

User-facing errors (`SynthVLMError`) are printed as one line on stderr with a non-zero exit code;
only genuine bugs show a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from synthvlm_data.errors import SynthVLMError, os_error_message


OVERWRITE_HELP = ("also replace synthvlm-data output of another kind there; files this package did not write are "
                  "never deleted: a folder holding one is refused even with --overwrite")


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("item")
    table.add_column("value", justify="right")
    for k, v in rows:
        table.add_row(k, v)
    Console(stderr=False).print(table)


def cmd_build(args: argparse.Namespace) -> int:
    from synthvlm_data.build import build
    from synthvlm_data.config import load_recipe

    overrides = {}
    if args.limit is not None:
        overrides = {"captions": {"limit": args.limit}}
    recipe = load_recipe(args.recipe, overrides=overrides)
    out = Path(args.out or recipe.export.name)
    result = build(recipe, out, work_dir=args.work_dir, backend=args.backend, options=_backend_options(args),
                   progress=not args.quiet, overwrite=args.overwrite)
    if not result.main_process:  # other ranks of `accelerate launch`: the main process reports
        return 0
    total = sum(result.timings.values())
    rows = [(f"{k} (s)", f"{v:.1f} ({100 * v / total:.0f}%)") for k, v in result.timings.items()]
    rows += [("total (s)", f"{total:.1f}"), ("rows", str(result.stats["selected"])), ("output", str(result.out_dir))]
    _print_table(f"synthvlm build: {recipe.name}", rows)
    return 0


def _backend_options(args: argparse.Namespace):
    """The backend's options: the flags given, else what the environment sets (`BackendOptions.from_env`).
    Every rank of `accelerate launch` parses the same flags."""
    from synthvlm_data.backends import BackendOptions

    return BackendOptions.from_env(cpu_threads=args.cpu_threads, workers=args.workers, ray_address=args.ray_address)


def cmd_pilot(args: argparse.Namespace) -> int:
    from synthvlm_data.config import load_recipe
    from synthvlm_data.pilot import format_pilot, run_pilot

    recipe = load_recipe(args.recipe)
    res = run_pilot(recipe, n=args.n, total_captions=args.captions, work_dir=args.work_dir)
    _print_table(f"synthvlm pilot: {recipe.name} (cost forecast)", format_pilot(res, devices=args.gpus))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from synthvlm_data.build import decode_run
    from synthvlm_data.workdir import DECODE, WorkDir

    n = decode_run(args.work_dir, backend=args.backend, options=_backend_options(args), images_dir=args.images,
                   progress=not args.quiet)
    where = f"; image files in {args.images}" if args.images else ""
    print(f"decoded {n} latents into {WorkDir(args.work_dir).stage_dir(DECODE)}{where}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from synthvlm_data.config import load_recipe, load_recipe_mapping, shipped_recipes

    if args.show:
        resolved = load_recipe_mapping(args.show)  # validated
        print(_recipe_text(resolved, raw=args.raw))
        return 0
    for name in shipped_recipes():
        r = load_recipe(name)
        print(f"{name:16s} {r.profile:5s} {r.description.strip().splitlines()[0] if r.description else ''}")
    return 0


def _recipe_text(resolved, raw: bool = False) -> str:
    """A recipe as a person reads it: the file itself (with its comments) when it extends nothing
    or with `--raw`; else the merged mapping, headed by the chain of files it came from."""
    import yaml

    if raw or len(resolved.chain) == 1:
        return resolved.chain[0].read().rstrip("\n")
    chain = " <- ".join(f.label for f in reversed(resolved.chain))
    head = (f"# {resolved.chain[0].label}: merged from {chain} (`extends`); the file as written: "
            f"`synthvlm recipes --show {resolved.chain[0].label} --raw`\n")
    return head + yaml.safe_dump(resolved.data, sort_keys=False, allow_unicode=True, width=100).rstrip("\n")


def cmd_validate(args: argparse.Namespace) -> int:
    from synthvlm_data.build import preflight
    from synthvlm_data.config import load_recipe
    from synthvlm_data.workdir import WorkDir

    r = load_recipe(args.recipe)
    checked = "schema"
    if not args.schema_only:
        preflight(r)  # caption files, every model, the accelerator: what `build` checks first
        checked = "schema, caption files, models"
    # Two fingerprints, each named for what it keys: the work dir's (the stages' settings, so a
    # changed `select` or `export` resumes the same shards) and the whole recipe's (the card's).
    shards = r.shards_fingerprint()[:8]
    print(f"recipe {args.recipe}: ok ({checked}; {r.name}); `synthvlm build` works in {WorkDir.default(r).root}/ "
          f"(stages fingerprint {shards}) and writes {r.export.name}/ (recipe fingerprint {r.fingerprint()}, "
          "in its card)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from synthvlm_data.presentation.report import report_into_dataset

    report, out = report_into_dataset(
        args.dataset,
        args.work_dir,
        args.out,
        reference=args.reference,
        reference_split=args.reference_split,
        reference_limit=args.reference_limit,
        device=args.device,
    )
    card = None
    if not args.no_card_update and out.resolve().is_relative_to(Path(args.dataset).resolve()):
        from synthvlm_data.presentation.cards import refresh_if_dataset

        card = refresh_if_dataset(args.dataset, quality_dir=out)
    print_quality_table(report)
    print(f"wrote {', '.join(report['files'])} to {out}")
    if card is not None:
        print(f"updated {card}: the card now shows the report and its plots")
    return 0


def print_quality_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from synthvlm_data.presentation.report import table_rows

    table = Table(title=f"data quality: {report['dataset']} ({report['recipe']}, {report['profile']})")
    for col in ("set", "n", "clip mean", "clip med", "CLIP-S", "ssim mean", "ssim med", "score"):
        table.add_column(col, justify="left" if col == "set" else "right")
    for row in table_rows(report):
        table.add_row(row["set"], row["n"], row["clip_mean"], row["clip_median"], row["clips_mean"], row["ssim_mean"],
                      row["ssim_median"], row["score_mean"])
    Console(width=max(Console().width, 110)).print(table)  # never squeeze the numbers
    for note in report["notes"]:
        print(f"note: {note}")


def cmd_export(args: argparse.Namespace) -> int:
    from synthvlm_data.stages.formats import export_formats

    done = export_formats(args.dataset, args.format, shard_size=args.shard_size, out=args.out, overwrite=args.overwrite)
    for fmt, res in done.items():
        what = f"{len(res['shards'])} tar shards" if fmt == "webdataset" else f"{Path(res['json']).name} + images/"
        print(f"{fmt}: {res['rows']} rows -> {res['out']} ({what})")
    return 0


def cmd_decontaminate(args: argparse.Namespace) -> int:
    from synthvlm_data.decontam import check_dataset, config_from_cli

    cfg = config_from_cli(args.against, config=args.config, caption_column=args.caption_column,
                          image_column=args.image_column, split=args.split, ngram=args.ngram, min_ngram=args.min_ngram,
                          max_distance=args.max_distance, minhash_threshold=args.minhash)
    report = check_dataset(args.dataset, cfg, remove=args.remove)
    _print_table(f"contamination: {report['dataset']} ({report['rows_checked']} rows)", [
        *((f"{s['name']} ({s['captions']} texts, {s['images']} images)",
           f"{report['caption_hits'][s['name']]} caption / {report['image_hits'][s['name']]} image hits") for s in report["sets"]),
        ("rows with a hit", str(report["contaminated"])), ("removed", str(report["removed"])),
    ])
    from synthvlm_data.dataset_dir import DatasetDir
    from synthvlm_data.presentation.cards import refresh_if_dataset

    card = refresh_if_dataset(args.dataset)
    print(f"wrote {DatasetDir(args.dataset).contamination_file}" + ("; the card shows the report" if card else ""))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from synthvlm_data.hub.publish import format_result, publish_folder

    result = publish_folder(
        args.folder, args.repo_id, repo_type=args.repo_type, private=args.private, revision=args.revision,
        dry_run=args.dry_run,
    )
    print(format_result(result))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from synthvlm_data.evaluation.report import lmms_rows, world_rows
    from synthvlm_data.evaluation.run import evaluate

    res = evaluate(args.checkpoint, args.suite, n=args.n, seed=args.seed, out=args.out, tasks=args.tasks,
                   limit=args.limit, dataset_paths=args.dataset_path, update_card=not args.no_card_update,
                   device=args.device, dtype=args.dtype)
    if not res.main_process:
        return 0
    from rich.console import Console
    from rich.table import Table

    world = res.result["suite"] == "world"
    cols = ("task", "metric", "n", "model", "95% CI", "majority", "chance") if world else \
        ("task", "metric", "n", "score", "stderr")
    keys = ("task", "metric", "n", "model", "ci", "majority", "chance") if world else ("task", "metric", "n", "score", "stderr")
    table = Table(title=f"synthvlm eval: {res.result['checkpoint_name']} ({res.result['suite']}, {res.seconds:.0f} s)")
    for c in cols:
        table.add_column(c, justify="left" if c in ("task", "metric") else "right")
    for r in (world_rows if world else lmms_rows)(res.result):
        table.add_row(*(str(r[k]) for k in keys))
    Console(width=max(Console().width, 100)).print(table)
    print(f"wrote {', '.join(str(f) for f in res.files)}")
    if res.card is not None:
        print(f"updated {res.card}: its Evaluation section shows the table")
    return 0


def _add_backend_options(p: argparse.ArgumentParser) -> None:
    from synthvlm_data.backends import ADDRESS_ENV, CPU_THREADS_ENV, WORKERS_ENV

    p.add_argument("--cpu-threads", type=int,
                   help=f"torch threads of CPU stages, the same on every backend (default: ${CPU_THREADS_ENV} or 1); "
                        "CPU float results depend on it: keep it equal across runs you compare or resume")
    p.add_argument("--workers", type=int,
                   help=f"ray: actor pool size (default: ${WORKERS_ENV}, else one per GPU, or per CPU, of the cluster)")
    p.add_argument("--ray-address",
                   help=f"ray: join this cluster (e.g. auto, ray://head:10001; default: ${ADDRESS_ENV}, else a local Ray)")


def make_parser() -> argparse.ArgumentParser:
    from synthvlm_data.backends import BACKENDS

    p = argparse.ArgumentParser(prog="synthvlm", description="Synthetic image-caption datasets for VLMs (SynthVLM, Synth^2).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --verbose on every command (before or after its name): the libraries' own bars, logs, warnings
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="also show the libraries' progress bars, logging and known warnings")
    p.add_argument("--verbose", action="store_true", help="also show the libraries' progress bars, logging and known warnings")

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)


    b = command("build", help="run a recipe end to end and export the dataset folder")
    b.add_argument("--recipe", required=True,
                   help="shipped recipe name (see `synthvlm recipes`; `tiny` runs offline in minutes) or a path to a YAML file")
    b.add_argument("--out", help="output dataset folder (default: the recipe's export.name); it must be new, empty "
                   "or an earlier build's (checked before anything runs)")
    b.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    b.add_argument("--work-dir", type=Path, help="where stage shards live (default: runs/<recipe name>-<fingerprint>); re-running resumes")
    b.add_argument("--backend", default="local", choices=list(BACKENDS),
                   help="local (one process); accelerate (every rank of `accelerate launch -m synthvlm_data.cli build ...`); "
                        "ray (Ray Data actor pool; pip install 'synthvlm-data[ray]')")
    _add_backend_options(b)
    b.add_argument("--limit", type=int, help="use at most N captions (a quick trial of a recipe)")
    b.add_argument("--quiet", action="store_true", help="no progress bars: only the summary and errors")
    b.set_defaults(func=cmd_build)

    pl = command("pilot", help="time generation on a few captions; print s/image and the full recipe's GPU-hours")
    pl.add_argument("--recipe", default="tiny", help="shipped recipe name or a path to a YAML file")
    pl.add_argument("--n", type=int, default=8, help="captions to generate for (default 8)")
    pl.add_argument("--captions", type=int, help="captions in the full run (default: from a previous build's work dir)")
    pl.add_argument("--work-dir", type=Path, help="a previous build's work dir, for its caption count")
    pl.add_argument("--gpus", type=int, help="GPUs for the wall-clock line (default: those visible here; "
                    "a CPU pilot forecasts this machine)")
    pl.set_defaults(func=cmd_pilot)

    d = command("decode", help="decode a latent-mode run's latents into images (with the generator's VAE)")
    d.add_argument("--work-dir", type=Path, required=True, help="the latent build's work dir")
    d.add_argument("--backend", default="local", choices=list(BACKENDS), help="as for build")
    _add_backend_options(d)
    d.add_argument("--images", type=Path, help="also write the images as files <id>-<repeat>.<ext> here")
    d.add_argument("--quiet", action="store_true", help="no progress bars: only the summary and errors")
    d.set_defaults(func=cmd_decode)

    r = command("recipes", help="list the shipped recipes, or print one")
    r.add_argument("--show", metavar="NAME", help="print a recipe (shipped name or YAML path), its `extends` merged")
    r.add_argument("--raw", action="store_true", help="with --show: the file as written, `extends` unresolved")
    r.set_defaults(func=cmd_recipes)

    v = command("validate", help="check a recipe without running it: schema, caption files, models")
    v.add_argument("recipe")
    v.add_argument("--schema-only", action="store_true", help="check the schema only (no file or model checks)")
    v.set_defaults(func=cmd_validate)

    q = command("report", help="data-quality table (CLIPScore/SSIM: selected, rejected, real reference) + PNGs")
    q.add_argument("dataset", type=Path, help="a dataset folder written by `synthvlm build`")
    q.add_argument("--work-dir", type=Path, help="the build's work dir, for the rejected pool (default: found under runs/)")
    q.add_argument("--out", type=Path, help="report folder (default: DATASET/plots)")
    q.add_argument("--reference", default="builtin",
                   help="real reference set: 'builtin' (12 sample images, offline) or a load_dataset path / Hub id")
    q.add_argument("--reference-split", default="train", help="split of a --reference dataset")
    q.add_argument("--reference-limit", type=int, default=500, help="at most N pairs of a --reference dataset")
    q.add_argument("--device", help="torch device for the CLIP scorer (default: the recipe's)")
    q.add_argument("--no-card-update", action="store_true",
                   help="do not re-render DATASET/README.md (by default it is, when the report is inside DATASET)")
    q.set_defaults(func=cmd_report)

    ex = command("export", help="write a built dataset as LLaVA JSON + image folder, or WebDataset tar shards")
    ex.add_argument("dataset", type=Path, help="a dataset folder written by `synthvlm build`")
    ex.add_argument("--format", action="append", required=True, choices=["llava-json", "webdataset"],
                    help="llava-json: DATASET-llava-json/<name>.json + images/; webdataset: DATASET-webdataset/<name>-NNNNNN.tar "
                         "(repeat the flag for both)")
    ex.add_argument("--out", type=Path, help="output folder (one --format only; default: next to DATASET, as above); "
                    "it must be new, empty or an earlier export of that format")
    ex.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    ex.add_argument("--shard-size", type=int, default=1000, help="webdataset: samples per tar shard (default 1000)")
    ex.set_defaults(func=cmd_export)

    from synthvlm_data.decontam import DecontamConfig

    dc_defaults = DecontamConfig.model_fields  # help defaults are the code's, never a copy
    dc = command("decontaminate", help="check a dataset's captions (13-gram) and images (pHash) against evaluation sets")
    dc.add_argument("dataset", type=Path, help="a dataset folder written by `synthvlm build`")
    dc.add_argument("--against", action="append", default=[], metavar="SET",
                    help="an evaluation set: a caption file (json/jsonl/csv/parquet/txt), an image folder, or a Hub "
                         "dataset OWNER/NAME@REVISION (repeat for several)")
    dc.add_argument("--config", type=Path, help="YAML with `against:` (caption sources + `images:` folders) and thresholds")
    dc.add_argument("--caption-column", default="caption", help="caption column of --against files / Hub sets")
    dc.add_argument("--image-column", help="image column of --against Hub sets / files")
    dc.add_argument("--split", default="test", help="split of --against Hub sets (default test)")
    dc.add_argument("--ngram", type=int, help=f"n-gram length (default {dc_defaults['ngram'].default}, GPT-3)")
    dc.add_argument("--min-ngram", type=int, help="shorter evaluation texts are matched whole from this length "
                    f"(default {dc_defaults['min_ngram'].default})")
    dc.add_argument("--max-distance", type=int, help="pHash Hamming distance of an image near-duplicate "
                    f"(default {dc_defaults['max_distance'].default})")
    dc.add_argument("--minhash", type=float, metavar="JACCARD", help="also MinHash LSH at this Jaccard threshold")
    dc.add_argument("--remove", action="store_true", help="rewrite the dataset without the contaminated rows")
    dc.set_defaults(func=cmd_decontaminate)

    pb = command("publish", help="upload a dataset folder (or a model checkpoint) to the Hugging Face Hub")
    pb.add_argument("folder", type=Path, help="a dataset folder from `synthvlm build` (or a model folder)")
    pb.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="target repo, created if missing")
    pb.add_argument("--repo-type", choices=["dataset", "model"], default="dataset", help="default: dataset")
    pb.add_argument("--private", action="store_true", help="create the repo as private")
    pb.add_argument("--revision", metavar="BRANCH", help="push to this branch (created if missing; default main)")
    pb.add_argument("--dry-run", action="store_true", help="check the folder and list what would be uploaded; no network")
    pb.set_defaults(func=cmd_publish)

    e = command("eval", help="evaluate a checkpoint from train/: the world suite (offline) or lmms-eval")
    e.add_argument("checkpoint", type=Path, help="the output_dir of train/pretrain.py or train/finetune.py")
    e.add_argument("--suite", default="world",
                   help="world: held-out world renders, captioning + VQA against exact ground truth (default); "
                        "lmms: lmms-eval on the LLaVA-1.5 suite (pip install 'synthvlm-data[eval]')")
    e.add_argument("--n", type=int, default=100, help="world scenes (each: one caption + up to 6 questions; default 100)")
    e.add_argument("--seed", type=int, default=0, help="which objects the questions ask about, and the bootstrap")
    e.add_argument("--out", type=Path, help="results folder (default: the checkpoint folder)")
    e.add_argument("--tasks", nargs="+", metavar="TASK",
                   help="lmms: lmms-eval task names (default: the LLaVA-1.5 suite; synthvlm_world_vqa = the world "
                        "questions as a local lmms-eval task)")
    e.add_argument("--limit", type=int, help="lmms: at most N items per task")
    e.add_argument("--dataset-path", action="append", metavar="TASK=DIR",
                   help="lmms: read TASK's data from a datasets save_to_disk folder instead of the Hub (repeatable)")
    e.add_argument("--device", help="where the model runs: cuda, cuda:N or cpu (default: cuda when a GPU is visible, "
                                    "else cpu; under accelerate launch each rank takes its own GPU and its share of "
                                    "the lmms requests)")
    e.add_argument("--dtype", help="float32, float16 or bfloat16 (default: bfloat16 on CUDA, float32 on the CPU)")
    e.add_argument("--no-card-update", action="store_true", help="do not add the table to CHECKPOINT/README.md")
    e.set_defaults(func=cmd_eval)

    rh = command("rehearse", help="build every full-scale model at real size on the meta device (no weights, "
                        "no download): parameter counts, LLaVA assembly, chat template, memory plan per GPU")
    rh.add_argument("targets", nargs="*", metavar="RECIPE|CONFIG",
                    help="shipped recipes, training configs (7b, 13b or a YAML path); default: every full-scale one")
    rh.add_argument("--markdown", action="store_true", help="print the memory tables as markdown (for the README)")
    rh.set_defaults(func=cmd_rehearse)
    return p


def cmd_rehearse(args: argparse.Namespace) -> int:
    from synthvlm_data.rehearsal.run import markdown, print_rich, rehearse

    result = rehearse(args.targets or None)
    if args.markdown:
        print(markdown(result))
    else:
        print_rich(result)
    failures = result.failures
    for target, name, detail in failures:
        print(f"FAILED {target}: {name}" + (f": {detail}" if detail else ""), file=sys.stderr)
    checks = sum(len(r.models) + len(r.checks) for r in result.results)
    print(f"rehearse: {checks} checks, {len(failures)} failed, {result.seconds:.0f} s", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    from synthvlm_data.output import quiet_libraries

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = make_parser().parse_args(argv)
    quiet_libraries(verbose=args.verbose)
    try:
        return args.func(args)
    except SynthVLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # disk full, read-only or vanished directories, outside the shard store
        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: complete shards are kept; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
