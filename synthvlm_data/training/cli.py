"""Command line of `train/pretrain.py` and `train/finetune.py` (thin TRL-example-style scripts).

    accelerate launch train/pretrain.py --config train/configs/tiny.yaml [--key value ...]

The arguments are parsed by transformers' `HfArgumentParser`: the script's own (`ScriptArguments`)
and one option per config value (`--key value`, see `config.override_parser`). Errors a user can
act on are printed on one line and exit non-zero (2, or 3 for an unavailable model).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field

from synthvlm_data.training.config import (
    Stage,
    apply_overrides,
    config_from_dict,
    override_parser,
    parse_overrides,
    read_config_file,
)
from synthvlm_data.training.errors import SynthVLMError

DESCRIPTIONS = {
    "pretrain": "LLaVA stage 1: train the projector on image-caption pairs (vision tower and LLM frozen).",
    "finetune": "LLaVA stage 2: train projector + LLM on instruction data (LLaVA-665K; *-synthmix.yaml mixes synthetic pairs in).",
}


@dataclass
class ScriptArguments:
    """The scripts' own arguments (the config's values are overrides, `config.override_parser`)."""

    config: str = field(metadata={"help": "a YAML file from train/configs/"})
    validate_only: bool = field(default=False, metadata={"help": "check the config (no download) and exit"})
    num_processes: int | None = field(
        default=None, metadata={"help": "with --validate-only: check the batch split for this many processes"})
    push_to_hub: str | None = field(default=None, metadata={"help": "publish the trained model to this repo id"})
    private: bool = field(default=False, metadata={"help": "with --push-to-hub: create a private repo"})
    hub_revision: str | None = field(default=None, metadata={"help": "with --push-to-hub: branch to push to"})
    push_dry_run: bool = field(default=False, metadata={"help": "with --push-to-hub: plan only"})
    verbose: bool = field(default=False, metadata={"help": "also show the libraries' progress bars, logging and "
                                                   "known warnings"})


def build_parser(stage: Stage):
    """transformers' HfArgumentParser over the script's arguments and every config value of `stage`."""
    return override_parser(
        stage, ScriptArguments,
        prog=f"train/{stage}.py",
        description=DESCRIPTIONS[stage],
        epilog="Every config value is an option (above); a dotted key reaches any other one, e.g. "
        "--finetune.data.1.probability 0.2 or --pretrain.training.sft_args.logging_nan_inf_filter false.",
    )


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
    ignored = requested_cpu_processes_ignored()
    if ignored:
        print(f"warning: accelerate launch --cpu started 1 process, not {ignored} (it needs mpirun for more, "
              "huggingface/accelerate#2741); for several CPU processes use: accelerate launch --config_file "
              "train/accelerate/cpu.yaml --num_processes N ...", file=sys.stderr, flush=True)
    try:
        parser = build_parser(stage)
        (args,), given, dotted = parse_overrides(parser, argv)
        data = apply_overrides(read_config_file(args.config), given, dotted, stage)
        cfg = config_from_dict(data, args.config)
        from synthvlm_data.output import quiet_libraries

        quiet_libraries(verbose=args.verbose)
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
