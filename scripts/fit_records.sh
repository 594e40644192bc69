#!/usr/bin/env bash
# Fit records over training seeds from the evaluated run folders under logs/ (the newest run per
# seed with a test-set evaluation, selected by run.json: `enkfrl runs`), then the learning-curve figures:
#   results/fit/<E>.json                    the final defaults (config.yaml as it is), every seed
#   results/fit_pointwise/<E>_clone.json    the same runs: pointwise PPO started from the clone
#   results/fit_pointwise/<E>_scratch.json  `pointwise` study, variant scratch (no cloning)
#   results/fit_pointwise/<E>_scratch_1epoch.json   variant scratch_1epoch (no cloning, the faster PPO settings)
#   results/fit_pointwise/<E>_scratch_1epoch_avg.json   variant scratch_1epoch_avg (as that, the final policy the mean of 5 checkpoints)
#   results/fit_pointwise/<E>_scratch_1epoch_b1024.json   variant scratch_1epoch_b1024 (as that, minibatches of 1024)
#   results/fit_pointwise/<E>_scratch_1epoch_b1024_avg.json   variant scratch_1epoch_b1024_avg (as that, the final policy the mean of 5 checkpoints)
#   results/fit_pointwise/<E>_scratch_1epoch_lr6e4_avg.json   variant scratch_1epoch_lr6e4_avg (scratch_1epoch_avg, learning rate 6e-4)
#   results/fit_pointwise/<E>_scratch_1epoch_b1024_linear.json   variant scratch_1epoch_b1024_linear (as that, lr annealed to 0)
#   results/fit_pointwise/<E>_scratch_1epoch_b1024_avg_linear.json   variant scratch_1epoch_b1024_avg_linear (both)
#   results/fit_pointwise/<E>_scratch_linear.json   variant scratch_linear (scratch, lr annealed to 0)
#   results/fit_pointwise/<E>_scratch_p32_bf16.json   variant scratch_p32_bf16 (scratch as 32 paths x 16 cycles, LSTM bfloat16)
#   results/fit_pointwise/<E>_truth_scratch.json   variant truth_scratch (reward vs the truth)
#   results/fit_pointwise/<E>_local_global.json    variant local_global (the local agent, one reward per cycle)
#   docs/<E>_pointwise_curves.png           eval-path learning curves of those records
# Usage: scripts/fit_records.sh [EXP ...]   (default: L96_1 L96_2 L96_3 L63). Settings without
# evaluated runs are skipped with a note. A study variant's record grows: its seeds without a run
# folder here are kept (`enkfrl report --add-to`; a seed run again replaces its entry), and a record
# whose config is no longer the variant's is refused (delete it to start over).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
EXPS=("$@")
[ ${#EXPS[@]} -gt 0 ] || EXPS=(L96_1 L96_2 L96_3 L63)

runs_of() {  # the newest evaluated run per seed, by run.json: final runs, or a study's variant
    $PYTHON -m cli.main runs --exp "$1" "${@:2}" --evaluated --newest-per-seed --csv
}

# the pointwise study's variants with a record, in curve order, each "variant:curve label" (no label: no curve)
VARIANTS=(
    "scratch:pointwise, from scratch"
    "scratch_1epoch:pointwise, from scratch, 1 epoch"
    "scratch_1epoch_avg:pointwise, from scratch, 1 epoch, mean of the last 5 checkpoints"
    "scratch_1epoch_b1024:pointwise, from scratch, 1 epoch of 1024"
    "scratch_1epoch_b1024_avg:pointwise, from scratch, 1 epoch of 1024, mean of the last 5 checkpoints"
    "scratch_1epoch_lr6e4_avg:pointwise, from scratch, 1 epoch, lr 6e-4, mean of the last 5 checkpoints"
    "scratch_1epoch_b1024_linear:pointwise, from scratch, 1 epoch of 1024, lr to 0"
    "scratch_1epoch_b1024_avg_linear:pointwise, from scratch, 1 epoch of 1024, lr to 0, mean of the last 5 checkpoints"
    "scratch_linear:pointwise, from scratch, lr to 0"
    "scratch_p32_bf16:pointwise, from scratch, 32 paths x 16 cycles, LSTM bfloat16"
    "scratch_p32:"
    "scratch_bf16:"
    "truth_scratch:"
    "scratch_mlp:"
    "local_global:local agent, one reward per cycle"
)
mkdir -p results/fit results/fit_pointwise
for exp in "${EXPS[@]}"; do
    clone=$(runs_of "$exp" --final)
    if [ -n "$clone" ]; then
        $PYTHON -m cli.main report --runs "$clone" --init clone --out "results/fit/$exp.json"
        kind=$($PYTHON -c "import json,sys; print(json.load(open(sys.argv[1]))['agent'])" "results/fit/$exp.json")
        [ "$kind" = pointwise ] && cp "results/fit/$exp.json" "results/fit_pointwise/${exp}_clone.json"
    else
        echo "note: no evaluated final runs of $exp"
    fi
    curves=()
    [ -f "results/fit_pointwise/${exp}_clone.json" ] && curves+=(--record "pointwise, from the clone=results/fit_pointwise/${exp}_clone.json")
    for entry in "${VARIANTS[@]}"; do
        variant=${entry%%:*} label=${entry#*:}
        out="results/fit_pointwise/${exp}_$variant.json"
        runs=$(runs_of "$exp" --study pointwise --variant "$variant")
        if [ -n "$runs" ]; then
            init=scratch; [ "$variant" = local_global ] && init=clone
            sup=(); [ $init = scratch ] && [ -n "$clone" ] && sup=(--supervised-from "$clone")
            add=(); [ -f "$out" ] && add=(--add-to "$out")  # keeps the record's seeds that have no run folder here
            $PYTHON -m cli.main report --runs "$runs" --init $init "${sup[@]}" "${add[@]}" --out "$out"
        fi
        [ -n "$label" ] && [ -f "$out" ] && curves+=(--record "$label=$out")  # a record drawn with or without its runs here
    done
    if [ ${#curves[@]} -gt 0 ]; then
        $PYTHON -m cli.main curves "${curves[@]}" --title "$exp: PPO on the eval path" --out "docs/${exp}_pointwise_curves.png"
    fi
done
