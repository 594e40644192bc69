#!/usr/bin/env bash
# Train the three L96 experiments in parallel, one process each, with the final defaults of
# config.yaml. Each run tees its output to logs/<E>_training.log; data are generated and
# precomputed first where missing. Prints SUCCESS or FAILED per experiment; exits != 0 if any
# failed.   Usage: scripts/train_concurrent.sh [EXP ...]   (default: L96_1 L96_2 L96_3)
# PYTHON (default .venv/bin/python) and CONFIG (default config.yaml) may be set in the environment.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-config.yaml}
EXPS=("$@")
[ ${#EXPS[@]} -gt 0 ] || EXPS=(L96_1 L96_2 L96_3)
# three runs share the cores: no library may start a thread pool of its own size
# (torch's own thread count is train.torch_threads in config.yaml)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
mkdir -p logs

run_one() {
    local exp=$1
    {
        [ -f "data/$exp/spinup.h5" ] || $PYTHON -m cli.main generate --exp "$exp" --config "$CONFIG" || return 1
        [ -f "data/$exp/paths.h5" ] || $PYTHON -m cli.main precompute --exp "$exp" --config "$CONFIG" || return 1
        $PYTHON -m cli.main train --exp "$exp" --config "$CONFIG" || return 1
        $PYTHON -m cli.main evaluate --exp "$exp" --config "$CONFIG" --results-dir results/fit || return 1
        $PYTHON -m cli.main plot --exp "$exp" --config "$CONFIG" --stage all || return 1
    } 2>&1 | tee "logs/${exp}_training.log"
    return "${PIPESTATUS[0]}"
}

declare -A PIDS
for exp in "${EXPS[@]}"; do
    run_one "$exp" > /dev/null &
    PIDS[$exp]=$!
    echo "started $exp (pid ${PIDS[$exp]}), log: logs/${exp}_training.log"
done

failed=0
for exp in "${EXPS[@]}"; do
    if wait "${PIDS[$exp]}"; then
        echo "SUCCESS $exp"
    else
        echo "FAILED  $exp (see logs/${exp}_training.log)"
        failed=1
    fi
done
exit $failed
