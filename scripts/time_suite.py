"""The test suite's time on a fresh clone of this repository's HEAD, in both orders CI may meet:
file order (-p no:randomly) and a shuffled order (pytest-randomly with a seed), one after the
other on this machine -> results/test_suite.json: per order the wall time, the CPU time of the
suite's processes (user + sys of pytest and what it waited for: on a machine shared with other
work the wall time grows, the CPU time much less), the exit code and the outcome counts.

    python scripts/time_suite.py [--seed N] [--only file_order|shuffled]

Run it with the interpreter that has requirements.lock installed (the suite runs with it).
"""
from __future__ import annotations

import argparse
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(repo: Path, args: list[str], log: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", *args],
                             cwd=repo, env=dict(os.environ, PYTHONPATH=str(repo)), stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last = (log.read_text().strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", last)}
    return {"command": "python -m pytest tests " + " ".join(args), "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "rc": rc, **counts, "summary": last}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="pytest-randomly's seed (default: a random one)")
    ap.add_argument("--only", choices=["file_order", "shuffled"], default=None)
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2 ** 31)
    commit = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    dirty = bool(subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, text=True))
    t_start = time.perf_counter()
    record = {"commit_tested": commit, "cores": os.cpu_count(),
              "load_average_at_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        subprocess.check_call(["git", "clone", "-q", str(ROOT), str(repo)])
        orders = {"file_order": ["-p", "no:randomly"], "shuffled": [f"--randomly-seed={seed}"]}
        for name, extra in orders.items():
            if args.only in (None, name):
                record[name] = run(repo, extra, Path(tmp) / f"{name}.log")
                if name == "shuffled":
                    record[name]["seed"] = seed
                print(name, record[name], flush=True)
    record["load_average_at_end"] = os.getloadavg()[0]
    sys.path.insert(0, str(ROOT))
    from enkf.config import hash_of
    from enkf.io import atomic_write_json, provenance
    command = "python scripts/time_suite.py" + (f" --seed {seed}" if args.seed is not None else "")
    record["provenance"] = provenance({}, hash_of({}), command, time.perf_counter() - t_start)
    if dirty:
        record["note"] = "the checkout had uncommitted changes to tracked files: the clone tested HEAD without them"
    atomic_write_json(ROOT / "results/test_suite.json", record)
    print(f"wrote results/test_suite.json")
    return 0 if all(record[n]["rc"] == 0 for n in orders if n in record) else 1


if __name__ == "__main__":
    sys.exit(main())
