#!/usr/bin/env bash
# One command on a GPU machine without network (torch, transformers and accelerate installed):
# installs the wheels built by `python bench/gpu_wheels.py` (bench/wheels/, carried with the tree)
# into a private folder, then runs bench/gpu_rehearsal.py (about 12 minutes on one H100).
#   bash bench/gpu_rehearsal.sh [gpu_rehearsal.py options]     # OUT=dir for the JSON (default .)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/synthvlm-gpu-site}
WHEELS=${WHEELS:-bench/wheels}
OUT=${OUT:-.}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 \
  "$PY" bench/gpu_rehearsal.py --out "$OUT/gpu_rehearsal.json" "$@"
