"""What a command prints: its own progress display, its summary and errors, not the libraries'.

Unless `--verbose`, every entry point calls `quiet_libraries()` first. It silences:

- library progress bars: transformers' "Loading weights", huggingface_hub's downloads, datasets'
  map/generate bars, diffusers' "Loading pipeline components" (they would nest inside the stage
  bars, and survive `--quiet`);
- library logging below errors (transformers, diffusers, datasets), which covers diffusers'
  "modules ... should be kept in float32: []" and accelerate's "values were not passed" block;
- known, harmless warnings, each matched by its message (`KNOWN_WARNINGS`): nothing else is hidden.

Environment variables are set with `setdefault` (a user's own setting wins) before the libraries
are imported, so child processes (accelerate ranks, Ray workers) inherit them; libraries already
imported are told directly.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (message regex, category): warnings users cannot act on. The torch.jit deprecation comes from
# libraries' import-time decorators (timm, open_clip), not from this package's code.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"`?torch\.jit\.(script|script_method|trace)`? is (deprecated|not supported)", FutureWarning),
)
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",      # huggingface_hub, and transformers' "Loading weights"
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "ACCELERATE_LOG_LEVEL": "error",
}
_LOGGERS = ("accelerate", "accelerate.commands.launch", "torch.distributed.elastic")


def quiet_libraries(verbose: bool = False) -> None:
    """Silence library progress bars, logging below errors and `KNOWN_WARNINGS` (nothing when `verbose`)."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for pattern, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # DeepSpeed (the `train` extra, imported by accelerate and transformers) sets its logger's level
    # when it is imported; a filter on the logger object stays: "Setting accelerator to CPU" is not shown.
    deepspeed = logging.getLogger("DeepSpeed")
    if _errors_only not in deepspeed.filters:
        deepspeed.addFilter(_errors_only)
    silence_imported()


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def silence_imported() -> None:
    """Tell the libraries already imported (their environment variables are read at import)."""
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") != "1":
        return  # verbose, or the user asked for bars
    if "transformers" in sys.modules:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    if "diffusers" in sys.modules:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
