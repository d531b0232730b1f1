"""Benchmark: peak memory of a VAE decode of one batch, at once vs sliced (`vae.enable_slicing()`).

    python bench/bench_vae_slicing.py [--latent 16 --n 8]

SDXL's VAE architecture (diffusers AutoencoderKL, 4 x 128/256/512/512 blocks, 83.7 M parameters)
with random weights (memory and time do not depend on the weights), float32 as SDXL decodes, on
the CPU with one thread. Each setting runs in its own process; the number is the growth of peak
RSS over the loaded model during the decode of --n latents of --latent x --latent (x 8 pixels).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

CHILD = """
import resource, sys, time, torch
from diffusers import AutoencoderKL
torch.set_num_threads(1)
lat, slicing, n = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
torch.manual_seed(0)
vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                    block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                    sample_size=1024).eval()
if slicing:
    vae.enable_slicing()
z = torch.randn(n, 4, lat, lat)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.time()
with torch.no_grad():
    vae.decode(z)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(f"{grown:.0f} {time.time() - t0:.1f}")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args()
    for slicing in (0, 1):
        out = subprocess.run([sys.executable, "-c", CHILD, str(args.latent), str(slicing), str(args.n)],
                             capture_output=True, text=True, check=True).stdout.split()
        print(f"{args.n} x {args.latent * 8} px, {'sliced' if slicing else 'at once'}: "
              f"+{out[0]} MiB peak RSS, {out[1]} s")


if __name__ == "__main__":
    main()
