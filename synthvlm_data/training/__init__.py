"""LLaVA-style training on synthetic image-caption data (stage 1 alignment, stage 2 instruction tuning).

The entry points are `train/pretrain.py` and `train/finetune.py`; this package is what they run:

- `config`      YAML schema (both stages in one file), `--key value` overrides, no-download validation
- `assembly`    separate parts -> a standard `LlavaForConditionalGeneration` + `LlavaProcessor`
- `data`        dataset rows -> TRL prompt-completion (stage 1) / messages (stage 2), mixing
- `freezing`    which parameters each stage trains
- `run`         one stage end to end with TRL's SFTTrainer under accelerate
- `trackers`, `publish`   accelerate trackers, `--push-to-hub` (the model card: `presentation.model_card`)
"""

from synthvlm_data.training.config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config"]
