"""The `synthvlm` command. Thin: parses arguments, calls the library, prints results.

User-facing errors (`SynthVLMError`) are printed as one line on stderr with a non-zero exit code;
only genuine bugs show a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from synthvlm_data.errors import SynthVLMError


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
    result = build(recipe, out, work_dir=args.work_dir, backend=args.backend, progress=not args.quiet)
    total = sum(result.timings.values())
    rows = [(f"{k} (s)", f"{v:.1f} ({100 * v / total:.0f}%)") for k, v in result.timings.items()]
    rows += [("total (s)", f"{total:.1f}"), ("rows", str(result.stats["selected"])), ("output", str(result.out_dir))]
    _print_table(f"synthvlm build: {recipe.name}", rows)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from synthvlm_data.config import _read_recipe_text, load_recipe, shipped_recipes

    if args.show:
        load_recipe(args.show)  # validate first
        print(_read_recipe_text(args.show)[0])
        return 0
    for name in shipped_recipes():
        r = load_recipe(name)
        print(f"{name:16s} {r.profile:5s} {r.description.strip().splitlines()[0] if r.description else ''}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from synthvlm_data.config import load_recipe

    r = load_recipe(args.recipe)
    print(f"recipe {args.recipe}: ok ({r.name}, fingerprint {r.fingerprint()})")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from synthvlm_data.hub import format_result, publish_folder

    result = publish_folder(
        args.folder, args.repo_id, repo_type=args.repo_type, private=args.private, revision=args.revision,
        dry_run=args.dry_run,
    )
    print(format_result(result))
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synthvlm", description="Synthetic image-caption datasets for VLMs (SynthVLM, Synth^2).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="run a recipe end to end and export the dataset folder")
    b.add_argument("--recipe", default="tiny", help="shipped recipe name (see `synthvlm recipes`) or a path to a YAML file")
    b.add_argument("--out", help="output dataset folder (default: the recipe's export.name)")
    b.add_argument("--work-dir", type=Path, help="where stage shards live (default: runs/<recipe name>); re-running resumes")
    b.add_argument("--backend", default="local", help="execution backend: local")
    b.add_argument("--limit", type=int, help="use at most N captions (a quick trial of a recipe)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_build)

    r = sub.add_parser("recipes", help="list the shipped recipes, or print one")
    r.add_argument("--show", metavar="NAME", help="print a recipe's YAML")
    r.set_defaults(func=cmd_recipes)

    v = sub.add_parser("validate", help="validate a recipe file without running it")
    v.add_argument("recipe")
    v.set_defaults(func=cmd_validate)

    pb = sub.add_parser("publish", help="upload a dataset folder (or a model checkpoint) to the Hugging Face Hub")
    pb.add_argument("folder", type=Path, help="a dataset folder from `synthvlm build` (or a model folder)")
    pb.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="target repo, created if missing")
    pb.add_argument("--repo-type", choices=["dataset", "model"], default="dataset", help="default: dataset")
    pb.add_argument("--private", action="store_true", help="create the repo as private")
    pb.add_argument("--revision", metavar="BRANCH", help="push to this branch (created if missing; default main)")
    pb.add_argument("--dry-run", action="store_true", help="check the folder and list what would be uploaded; no network")
    pb.set_defaults(func=cmd_publish)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except SynthVLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: complete shards are kept; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
