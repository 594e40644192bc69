#!/usr/bin/env bash
# What CI does, timed, on a fresh clone of this repository's HEAD in a temporary folder: make setup
# (a new .venv from requirements.lock), make test, scripts/fill_readme.py --check
#   -> results/fresh_install.json (seconds of each step, exit codes, with provenance)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
tmp=$(mktemp -d)
git clone -q "$ROOT" "$tmp/repo" || exit 1
cd "$tmp/repo"
t0=$(date +%s.%N); make setup > "$tmp/setup.log" 2>&1; setup_rc=$?; t1=$(date +%s.%N)
make test > "$tmp/test.log" 2>&1; test_rc=$?; t2=$(date +%s.%N)
.venv/bin/python scripts/fill_readme.py --check > "$tmp/check.log" 2>&1; check_rc=$?; t3=$(date +%s.%N)
tail -n 3 "$tmp/test.log"; cat "$tmp/check.log"
cd "$ROOT"
"$tmp/repo/.venv/bin/python" - "$t0" "$t1" "$t2" "$t3" "$setup_rc" "$test_rc" "$check_rc" "$(git rev-parse HEAD)" <<'PY'
import sys
sys.path.insert(0, ".")
from enkf.config import hash_of
from enkf.io import atomic_write_json, provenance
t0, t1, t2, t3 = map(float, sys.argv[1:5])
setup_rc, test_rc, check_rc = map(int, sys.argv[5:8])
record = {"commit_tested": sys.argv[8], "setup_s": t1 - t0, "test_s": t2 - t1, "check_s": t3 - t2,
          "total_s": t3 - t0, "setup_rc": setup_rc, "test_rc": test_rc, "check_rc": check_rc}
record["provenance"] = provenance({}, hash_of({}), "scripts/time_fresh_install.sh", t3 - t0)
atomic_write_json("results/fresh_install.json", record)
print(record)
PY
rm -rf "$tmp"
