"""LLaVA stage 1 (feature alignment) on image-caption pairs: a synthvlm dataset (images or, with
model.latents, VAE latents) or a LLaVA JSON file + image folder (LCS-558K).

    accelerate launch train/pretrain.py --config train/configs/tiny.yaml
    accelerate launch --config_file train/accelerate/zero2.yaml train/pretrain.py --config train/configs/7b.yaml

The vision tower and the LLM are frozen; the mlp2x_gelu projector is trained with TRL's SFTTrainer
on prompt-completion rows (brief-caption instruction + image -> caption; loss on the caption).
Flags such as --output_dir, --max_steps, --dataset override the config file.
"""

from synthvlm_data.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main("pretrain"))
