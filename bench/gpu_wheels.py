"""Build the wheels `bench/gpu_rehearsal.sh` installs on a GPU machine without network, and check
that they fit the 64 MiB the machine's transfer allows.

The GPU machine has torch, transformers and accelerate (and what they require); this adds diffusers
with requests and importlib-metadata, open_clip (with ftfy, wcwidth; it also needs the machine's
torchvision, else the benchmark falls back to transformers' CLIP of the same shape), trl, pydantic
(the package's config schema), pillow (diffusers imports PIL; pydantic-core and pillow are binary wheels: build with the
same Python minor version as the GPU machine's), cloudpickle and this package, each
`pip wheel --no-deps`. pyarrow (40 MB) is left out: without it the benchmark drives the pipelines
with a copy of the generate stage's call instead of importing the stage.

    python bench/gpu_wheels.py [--out bench/wheels] [--limit-mib 64]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["diffusers", "requests", "urllib3", "certifi", "charset-normalizer", "importlib-metadata", "zipp",
            "open_clip_torch", "ftfy", "wcwidth", "trl", "pydantic", "pydantic-core", "annotated-types",
            "typing-inspection", "pillow", "cloudpickle"]


def installed_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "wheels")
    p.add_argument("--limit-mib", type=float, default=64.0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # the versions tested here, so the GPU run uses the same code
    specs = [f"{n}=={installed_version(n)}" if installed_version(n) else n for n in PACKAGES]
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(args.out), *specs, str(ROOT)]
    subprocess.run(cmd, check=True)
    wheels = sorted(args.out.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) / 1024**2
    for w in wheels:
        print(f"{w.stat().st_size / 1024**2:7.2f} MiB  {w.name}")
    print(f"{total:7.2f} MiB  total ({len(wheels)} wheels; limit {args.limit_mib:g} MiB)")
    if total > args.limit_mib:
        print(f"error: the wheels in {args.out} take {total:.1f} MiB, over {args.limit_mib:g} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
