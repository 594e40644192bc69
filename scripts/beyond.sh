#!/usr/bin/env bash
# The beyond-imitation studies (config.yaml: ablations.beyond_<E>): every (variant, seed) of each
# study trained from scratch, evaluated on the test set and plotted (scripts/train_concurrent.sh),
# JOBS runs at once across studies, then one record per study: `enkfrl beyond --study S --record`
# -> results/beyond/<E>.json and docs/<E>_beyond_curves.png. Needs results/filters/<E>.json
# (`enkfrl filters --exp E --record`). Finished runs are not redone: a variant and seed with an
# evaluated run under logs/<E>/ is skipped.
#
#   scripts/beyond.sh [--jobs N] [STUDY ...]      (default: beyond_L96_1 beyond_L96_40, JOBS = 2)
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
CONFIG=${CONFIG:-config.yaml}
JOBS=2 STUDIES=()
while [ $# -gt 0 ]; do
    case $1 in
        --jobs) JOBS=$2; shift 2 ;;
        *) STUDIES+=("$1"); shift ;;
    esac
done
[ ${#STUDIES[@]} -gt 0 ] || STUDIES=(beyond_L96_1 beyond_L96_40)
export PYTHON CONFIG

# one line per run still to do: "study variant experiment seed", variants interleaved across studies
queue=$($PYTHON - "$CONFIG" "${STUDIES[@]}" <<'PY'
import sys
from itertools import zip_longest
from pathlib import Path
from rl.config import load_ablation
from rl.training.runs import select_runs
per_study = []
for study in sys.argv[2:]:
    _, runs = load_ablation(sys.argv[1], study)
    done = {(r.variant, i["seed"]) for r in runs
            for _, i in select_runs(Path("logs"), r.experiment, study, r.variant, evaluated=True)}
    todo = [r for r in runs if (r.variant, r.seed) not in done]
    per_study.append([f"{study} {r.variant} {r.experiment} {r.seed}" for r in todo])
for row in zip_longest(*per_study):
    print("\n".join(x for x in row if x))
PY
) || exit 2
echo "$queue" | grep . | xargs -P "$JOBS" -L 1 bash -c \
    'scripts/train_concurrent.sh --study "$0" --variant "$1" --seeds "$3" --jobs 1 "$2"'
failed=$?
for study in "${STUDIES[@]}"; do
    $PYTHON -m cli.main beyond --study "$study" --config "$CONFIG" --record || failed=1
done
exit $failed
