#!/usr/bin/env bash
# One command on a GPU machine without network (torch, transformers and accelerate installed):
# unpacks the wheels built by `python bench/gpu_wheels.py` (bench/wheels/, carried with the tree)
# into a private folder put on PYTHONPATH (no pip, nothing installed system-wide), then runs
# bench/gpu_rehearsal.py: about 12 minutes on one H100.
#   bash bench/gpu_rehearsal.sh [gpu_rehearsal.py options]     # OUT=dir for the JSON (default .)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/synthvlm-gpu-site}
WHEELS=${WHEELS:-bench/wheels}
OUT=${OUT:-.}
"$PY" - "$WHEELS" "$SITE" <<'PYEOF'
import pathlib, sys, zipfile
wheels, site = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
site.mkdir(parents=True, exist_ok=True)
found = sorted(wheels.glob("*.whl"))
for wheel in found:
    zipfile.ZipFile(wheel).extractall(site)
print(f"{len(found)} wheels from {wheels} unpacked into {site}")
PYEOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 \
  "$PY" bench/gpu_rehearsal.py --out "$OUT/gpu_rehearsal.json" "$@"
