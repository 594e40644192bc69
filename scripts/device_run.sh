#!/usr/bin/env bash
# The GPU measurements in one go, on a machine with an NVIDIA GPU (and no internet: a bare image
# with torch, numba and h5py; the other packages of requirements.lock carried as wheels in .whl/):
# L96_1's data, then scripts/gpu_check.py (the batched loop and pointwise PPO on all CPU cores vs
# CUDA, and a 2M-path-step from-scratch run on CUDA). Its JSON and logs go to $OUT (default out/).
#   scripts/device_run.sh [EXP]
set -u
EXP=${1:-L96_1}
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m cli.main generate --exp "$EXP" > "$OUT/data_$EXP.log" 2>&1 \
    && python3 -m cli.main precompute --exp "$EXP" >> "$OUT/data_$EXP.log" 2>&1 || exit 1
PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py "$OUT/gpu_batched.json" "$EXP" 2>&1 | tee "$OUT/gpu_check.log"
