"""Evaluate a checkpoint written by train/pretrain.py or train/finetune.py (same as `synthvlm eval`).

    python train/eval.py outputs/tiny-pretrain --suite world --n 100
    python train/eval.py outputs/llava-7b-finetune --suite lmms   # the LLaVA-1.5 suite (Hub access)
    accelerate launch --num_processes 8 train/eval.py outputs/llava-7b-finetune --suite lmms   # 8 GPUs, bf16
"""

import sys

from synthvlm_data.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["eval", *sys.argv[1:]]))
