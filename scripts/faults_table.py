"""The faults table, results/faults.json: what a user sees for every fault tests/test_faults.py tries.

Runs tests/test_faults.py with ENKFRL_FAULTS_DIR set to a fresh folder (each test writes its line
there: no state is shared between tests), then writes the lines in the table's order with the
provenance block. Nothing is written when a test fails.

    python scripts/faults_table.py [--out results/faults.json] [-- PYTEST ARGS]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enkf.io import atomic_write_json, provenance  # noqa: E402
from rl.config import load_config  # noqa: E402

COMMAND = "python scripts/faults_table.py"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results/faults.json")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="faults-") as folder:
        env = dict(os.environ, ENKFRL_FAULTS_DIR=folder,
                   PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        rc = subprocess.call([sys.executable, "-m", "pytest", "tests/test_faults.py", "-q", *args.pytest_args],
                             cwd=ROOT, env=env)
        if rc != 0:
            print(f"tests/test_faults.py failed (exit {rc}): {args.out} left as it was", file=sys.stderr)
            return 1
        cases = sorted((json.loads(f.read_text()) for f in Path(folder).glob("*.json")),
                       key=lambda c: (c["order"], c["case"]))
    for c in cases:
        del c["order"]
    cfg = load_config(ROOT / "config.yaml", "smoke")
    atomic_write_json(args.out, {"cases": cases, "provenance": provenance(
        cfg.to_dict(), cfg.hash(), COMMAND, time.perf_counter() - t0)})
    print(f"wrote {args.out} ({len(cases)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
