#!/usr/bin/env bash
# On a lent GPU machine (bare image with torch, numba, h5py; SB3 and gymnasium carried as wheels
# in .whl/): the test-set data of L96_1..3, the CUDA vs CPU check of the pointwise agent
# (scripts/gpu_check.py), and the final runs of one more training seed on train.device auto (CUDA),
# each evaluated; the run folders (without checkpoints and eval.h5) are packed into $OUT.
#   scripts/device_run.sh SEED [EXP ...]
set -u
SEED=$1; shift
EXPS=("$@"); [ ${#EXPS[@]} -gt 0 ] || EXPS=(L96_1 L96_2 L96_3)
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for E in "${EXPS[@]}"; do
    ( for s in train test; do python3 -m cli.main generate --exp "$E" --split $s && python3 -m cli.main precompute --exp "$E" --split $s; done ) > "$OUT/data_$E.log" 2>&1 &
done
wait
python3 scripts/gpu_check.py "$OUT/gpu_check.json" "${EXPS[0]}" > "$OUT/gpu_check.log" 2>&1 &
for E in "${EXPS[@]}"; do
    ( timeout "${RUN_LIMIT_S:-480}" python3 -m cli.main train --exp "$E" --seed "$SEED" \
      && python3 -m cli.main evaluate --exp "$E" --run "$(ls -d logs/$E/s$SEED-* | tail -1)" ) > "$OUT/train_$E.log" 2>&1 &
done
wait
for E in "${EXPS[@]}"; do
    run=$(ls -d logs/$E/s$SEED-* 2>/dev/null | tail -1) || continue
    [ -n "$run" ] && tar czf "$OUT/run_${E}_s$SEED.tgz" --exclude checkpoints --exclude eval.h5 --exclude 'events.out.*' -C "logs/$E" "$(basename "$run")"
done
ls -la "$OUT"
