"""`python -m builders`: build a recipe through the `datasets` builder (what `make build-dataset` runs).

Runs `SynthVLM(...).download_and_prepare()`, which runs or resumes `synthvlm build` (writing the
Hub-ready folder that `load_dataset(OUT)` reads) and prepares the Arrow cache that
`builder.as_dataset()` serves. Models are checked first, so a recipe that needs GPUs or the Hub
stops with one line naming the model before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from synthvlm_data.dataset_dir import DatasetDir
from synthvlm_data.errors import SynthVLMError, os_error_message


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m builders", description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="tiny", help="shipped recipe name or a path to a recipe YAML")
    p.add_argument("--out", type=Path, help="dataset folder (default: the recipe's export.name)")
    p.add_argument("--work-dir", type=Path, help="stage shards (default: runs/<name>-<fingerprint>); re-running resumes")
    p.add_argument("--cache-dir", type=Path, help="datasets cache for the Arrow files (default: HF_DATASETS_CACHE)")
    p.add_argument("--backend", default="local",
                   help="execution backend: local, accelerate (every rank of `accelerate launch`; "
                        "`make build-dataset NPROC=N`), ray")
    p.add_argument("--limit", type=int, help="use at most N captions (a quick trial of a recipe)")
    p.add_argument("--quiet", action="store_true", help="no progress bars: only the summary and errors")
    p.add_argument("--verbose", action="store_true", help="also show the libraries' progress bars, logging and known warnings")
    p.add_argument("--overwrite", action="store_true",
                   help="also replace synthvlm-data output of another kind at --out (files this package did not "
                        "write are never deleted: a folder holding one is refused even so)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the quality report (plots + table in the dataset card; `synthvlm report` does it later)")
    return p


def builder_for(recipe: str, overrides: dict | None = None, **kwargs):
    """The builder for a shipped recipe name (its own config) or a recipe file (a custom config)."""
    from builders.synthvlm import SynthVLM
    from synthvlm_data.config import shipped_recipes

    if recipe in shipped_recipes():
        return SynthVLM(config_name=recipe, overrides=overrides, **kwargs)
    return SynthVLM(name=f"custom-{Path(recipe).stem}", recipe=str(recipe), overrides=overrides, **kwargs)


def run(args: argparse.Namespace) -> int:
    from synthvlm_data.build import check_destinations, preflight
    from synthvlm_data.config import load_recipe

    overrides = {"captions": {"limit": args.limit}} if args.limit is not None else None
    recipe = load_recipe(args.recipe, overrides=overrides)
    # One clear line before any file is written (the datasets cache included): the folders, the models.
    check_destinations(recipe, args.out or Path(recipe.export.name), args.overwrite)
    preflight(recipe)
    builder = builder_for(
        args.recipe, overrides, cache_dir=str(args.cache_dir) if args.cache_dir else None,
        work_dir=args.work_dir, out_dir=args.out, backend=args.backend, progress=not args.quiet,
        overwrite=args.overwrite,
    )
    builder.download_and_prepare()  # under `accelerate launch`: every rank builds, the main one prepares
    ds = builder.as_dataset(split="train")
    if not builder.main_process:  # the main process reports (and writes the quality report)
        return 0
    result = builder.build_result
    folder = result.out_dir if result else (args.out or builder.recipe.export.name)
    print(f"built {builder.recipe.name}: {ds.num_rows} rows")
    kept = result is None and args.work_dir is None and DatasetDir(folder).quality_file.is_file()
    if kept:  # nothing was built now (an existing export was read): its card's report stays as it is
        print(f"  quality report: kept ({DatasetDir(folder).quality_dir}; `synthvlm report {folder} --work-dir DIR` redoes it)")
    elif not args.no_report:
        from synthvlm_data.cli import print_quality_table
        from synthvlm_data.presentation.cards import refresh_if_dataset
        from synthvlm_data.presentation.report import report_into_dataset

        report, out = report_into_dataset(folder, result.work_dir if result else args.work_dir, recipe=builder.recipe)
        card = refresh_if_dataset(folder, builder.recipe)
        print_quality_table(report)
        print(f"  quality report: {out}" + (f" (shown in {card})" if card else ""))
    print(f"  dataset folder: {folder}  (load_dataset(\"{folder}\"); publish with `synthvlm publish {folder} --repo-id OWNER/NAME`)")
    print(f"  arrow cache:    {builder.cache_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from synthvlm_data.output import quiet_libraries

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = make_parser().parse_args(argv)
    quiet_libraries(verbose=args.verbose)
    try:
        return run(args)
    except SynthVLMError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # datasets wraps errors raised while generating examples
        cause = err.__cause__
        if isinstance(cause, SynthVLMError):
            print(f"error: {cause}", file=sys.stderr)
            return cause.exit_code
        if isinstance(cause, OSError):
            print(f"error: {os_error_message(cause)}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print("interrupted: complete shards are kept; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
