"""Command line of `train/pretrain.py` and `train/finetune.py` (thin TRL-example-style scripts).

    accelerate launch train/pretrain.py --config train/configs/tiny.yaml [--key value ...]

Any config value can be overridden with `--key value` (see `config.apply_overrides`). Errors a
user can act on are printed on one line and exit non-zero (2, or 3 for an unavailable model).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from synthvlm_data.training.config import Stage, load_config
from synthvlm_data.training.errors import SynthVLMError

DESCRIPTIONS = {
    "pretrain": "LLaVA stage 1: train the projector on image-caption pairs (vision tower and LLM frozen).",
    "finetune": "LLaVA stage 2: train projector + LLM on instruction data mixed with synthetic pairs.",
}


def build_parser(stage: Stage) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"train/{stage}.py",
        description=DESCRIPTIONS[stage],
        allow_abbrev=False,
        epilog="Other --key value flags override config values, e.g. --output_dir DIR --max_steps 10 "
        "--learning_rate 1e-3 --dataset FOLDER --resume_from_checkpoint latest.",
    )
    parser.add_argument("--config", required=True, help="a YAML file from train/configs/")
    parser.add_argument("--validate-only", action="store_true", help="check the config (no download) and exit")
    parser.add_argument("--num-processes", type=int, default=None,
                        help="with --validate-only: check the batch split for this many processes")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="publish the trained model")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    parser.add_argument("--hub-revision", default=None, help="with --push-to-hub: branch to push to")
    parser.add_argument("--push-dry-run", action="store_true", help="with --push-to-hub: plan only")
    return parser


def requested_cpu_processes_ignored(parent_argv: list[str] | None = None) -> int | None:
    """N if `accelerate launch --cpu --num_processes N>1` started us as a single process.

    accelerate's simple launcher (used for --cpu without mpirun) runs one process whatever
    --num_processes says (huggingface/accelerate#2741). We read the launcher's command line
    (Linux /proc, best effort) to say so instead of silently training on one rank.
    """
    import os

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in {"1", "true"} or "WORLD_SIZE" in os.environ:
        return None
    parent = parent_argv
    if parent is None:
        try:
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
                parent = f.read().decode(errors="replace").split("\0")
        except OSError:
            return None
    for i, arg in enumerate(parent):
        value = None
        if arg in ("--num_processes", "--num-processes") and i + 1 < len(parent):
            value = parent[i + 1]
        elif arg.startswith(("--num_processes=", "--num-processes=")):
            value = arg.split("=", 1)[1]
        if value is not None and value.isdigit() and int(value) > 1:
            return int(value)
    return None


def main(stage: Stage, argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = build_parser(stage).parse_known_args(argv)
    ignored = requested_cpu_processes_ignored()
    if ignored:
        print(f"warning: accelerate launch --cpu started 1 process, not {ignored} (it needs mpirun for more, "
              "huggingface/accelerate#2741); for several CPU processes use: accelerate launch --config_file "
              "train/accelerate/cpu.yaml --num_processes N ...", file=sys.stderr, flush=True)
    try:
        cfg = load_config(args.config, overrides, stage)
        if args.validate_only:
            from synthvlm_data.training.validation import validate_config

            print(validate_config(cfg, stage, args.num_processes).render())
            return 0
        from synthvlm_data.training.run import run_stage

        command = "accelerate launch train/{}.py {}".format(stage, shlex.join(argv))
        run_stage(cfg, stage, command=command, push_to_hub=args.push_to_hub, private=args.private,
                  hub_revision=args.hub_revision, push_dry_run=args.push_dry_run)
        return 0
    except SynthVLMError as err:
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr, flush=True)
        return getattr(err, "exit_code", 2)
