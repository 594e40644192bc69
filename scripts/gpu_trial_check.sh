#!/usr/bin/env bash
# Does a Ray trial with sweep.gpus_per_trial 0.5 train on CUDA? Runs one trial (the clone measure:
# behaviour cloning of a smoke policy with train.device cuda) through `enkfrl ablate` on a local Ray,
# then prints what the trial recorded: the device it asked for, the GPU Ray gave it, the CUDA
# memory torch allocated in it. Needs a GPU and a CUDA build of torch.
#   Usage: scripts/gpu_trial_check.sh      (PYTHON defaults to .venv/bin/python)
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
tmp=$(mktemp -d)
"$PYTHON" - "$tmp" <<'PY'
import sys, yaml
tmp = sys.argv[1]
raw = yaml.safe_load(open("config.yaml"))
raw["sweep"].update(gpus_per_trial=0.5, records_dir=f"{tmp}/records", trials_dir=f"{tmp}/trials")
raw["ablations"] = {"gpu_check": {
    "question": "Does a trial with gpus_per_trial 0.5 train on CUDA?", "measure": "clone",
    "experiments": ["smoke"], "seeds": [0], "overrides": {"train": {"device": "cuda"}},
    "variants": {"cuda": {}}}}
yaml.safe_dump(raw, open(f"{tmp}/config.yaml", "w"), sort_keys=False)
PY
PYTHONPATH="$PWD" RAY_ADDRESS= "$PYTHON" -m cli.main ablate --question gpu_check --config "$tmp/config.yaml"
"$PYTHON" - "$tmp/records/gpu_check/smoke__cuda__seed0.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))["trial"]
print(f"trial: device {t.get('device')}, gpus {t['gpus']}, CUDA_VISIBLE_DEVICES {t['cuda_visible_devices']}, "
      f"GPU {t.get('cuda_device_name')}, CUDA memory torch allocated {t.get('cuda_max_memory_allocated_bytes')} bytes")
ok = t.get("device") == "cuda" and (t.get("cuda_max_memory_allocated_bytes") or 0) > 0
print("GPU CHECK " + ("PASSED: the trial trained on CUDA" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY
