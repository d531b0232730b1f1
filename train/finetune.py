"""LLaVA stage 2 (visual instruction tuning): projector + LLM on instruction data (the paper: LLaVA-665K).

    accelerate launch train/finetune.py --config train/configs/tiny.yaml
    accelerate launch --config_file train/accelerate/zero3.yaml train/finetune.py --config train/configs/7b.yaml

Starts from the stage-1 output (finetune.init_from, default pretrain's output_dir); several sources
(`*-synthmix.yaml`: 665K + synthetic pairs) are mixed with `interleave_datasets` using the
probabilities in the config; loss on assistant turns.
"""

from synthvlm_data.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main("finetune"))
