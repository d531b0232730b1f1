"""Experiment trackers through accelerate's tracker classes (tensorboard by default, wandb optional).

Why a callback instead of `Trainer(report_to=...)`: the config names accelerate trackers, and the
same `accelerate.tracking` classes serve every launcher; each logs on the main process only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import TrainerCallback

from synthvlm_data.training.errors import TrainConfigError

# tracker name -> the module it needs
_REQUIRES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
             "aim": "aim", "clearml": "clearml", "trackio": "trackio"}


def check_trackers(names: list[str]) -> None:
    for name in names:
        module = _REQUIRES[name]
        if importlib.util.find_spec(module) is None:
            raise TrainConfigError(
                f"tracker '{name}' needs the '{module}' package: pip install {module.replace('_', '-')} "
                f"(or set trackers: [tensorboard])"
            )


def _scalars(logs: dict) -> dict:
    return {k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class AccelerateTrackers(TrainerCallback):
    """Forward Trainer logs to accelerate trackers (`accelerate.tracking.LOGGER_TYPE_TO_CLASS`)."""

    def __init__(self, names: list[str], project: str, run_name: str, logging_dir: Path, config: dict):
        check_trackers(names)
        self.names, self.project, self.run_name = names, project, run_name
        self.logging_dir, self.config = Path(logging_dir), config
        self.trackers: list = []

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or self.trackers:
            return
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        for name in self.names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            if cls.requires_logging_directory:
                tracker = cls(self.run_name, logging_dir=str(self.logging_dir))
            elif name == "wandb":
                tracker = cls(self.project, name=self.run_name)
            else:
                tracker = cls(self.project)
            tracker.start()
            tracker.store_init_configuration(self.config)
            self.trackers.append(tracker)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            for tracker in self.trackers:
                tracker.log(_scalars(logs), step=state.global_step)

    def close(self) -> None:
        """Called by the runner after the final evaluation (on_train_end would come before it)."""
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def flat_config(data: dict, prefix: str = "") -> dict:
    """A nested config as flat scalar hyperparameters (tensorboard's hparams accept no lists/dicts)."""
    out: dict = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, name + "."))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value if value is not None else "none"
        else:
            out[name] = str(value)
    return out
