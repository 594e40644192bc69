#!/usr/bin/env bash
# Train experiments x training seeds, at most JOBS runs at once, each run then evaluated on the
# eval path and the test set (and plotted). The data (training and test split) are made first where
# missing or stale (`enkfrl ensure-data`). Prints SUCCESS or FAILED per run; exits != 0 if any failed.
#
#   scripts/train_concurrent.sh [--seeds "0 1 2"] [--study Q --variant V] [--jobs N] [EXP ...]
#
# Defaults: L96_1 L96_2 L96_3, the seeds of config.yaml's train.seeds, the final defaults (no study),
# JOBS = 3. Each run's output goes to logs/<E>_<label>_training.log. The fit records over seeds
# are written afterwards by scripts/fit_records.sh.
# PYTHON (default .venv/bin/python) and CONFIG (default config.yaml) may be set in the environment.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-config.yaml}
SEEDS="" STUDY="" VARIANT="" JOBS=3 EXPS=()
while [ $# -gt 0 ]; do
    case $1 in
        --seeds) SEEDS=$2; shift 2 ;;
        --study) STUDY=$2; shift 2 ;;
        --variant) VARIANT=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        *) EXPS+=("$1"); shift ;;
    esac
done
[ ${#EXPS[@]} -gt 0 ] || EXPS=(L96_1 L96_2 L96_3)
if [ -z "$SEEDS" ]; then
    SEEDS=$($PYTHON -c "import sys; from rl.config import load_config; print(*load_config(sys.argv[1], sys.argv[2]).train.seeds)" "$CONFIG" "${EXPS[0]}") || exit 2
fi
STUDY_ARGS=() LABEL=final
if [ -n "$STUDY" ]; then STUDY_ARGS=(--study "$STUDY" --variant "$VARIANT"); LABEL="$STUDY-$VARIANT"; fi
# the runs share the cores: no library may start a thread pool of its own size
# (torch's own thread count is train.torch_threads in config.yaml)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1
mkdir -p logs

for exp in "${EXPS[@]}"; do  # data first, one experiment at a time (never two writers of a file)
    $PYTHON -m cli.main ensure-data --exp "$exp" --config "$CONFIG" || exit 1
done

run_one() {
    local exp=$1 seed=$2 out
    {
        out=$($PYTHON -m cli.main train --exp "$exp" --config "$CONFIG" --seed "$seed" "${STUDY_ARGS[@]}" | tee /dev/stderr | tail -n 1) || return 1
        run=${out#run folder: }
        $PYTHON -m cli.main evaluate --exp "$exp" --config "$CONFIG" --run "$run" || return 1
        $PYTHON -m cli.main plot --exp "$exp" --config "$CONFIG" --stage all --run "$run" || return 1
    } > "logs/${exp}_${LABEL}_s${seed}_training.log" 2>&1
}

declare -A PIDS
failed=0
wait_slot() {  # block until fewer than JOBS runs are going
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 5; done
}
for seed in $SEEDS; do
    for exp in "${EXPS[@]}"; do
        wait_slot
        run_one "$exp" "$seed" &
        PIDS["$exp s$seed"]=$!
        echo "started $exp $LABEL seed $seed (pid $!), log: logs/${exp}_${LABEL}_s${seed}_training.log"
    done
done
for key in "${!PIDS[@]}"; do
    if wait "${PIDS[$key]}"; then echo "SUCCESS $key"; else echo "FAILED  $key"; failed=1; fi
done
exit $failed
