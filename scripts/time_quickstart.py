"""The quick start's wall time: `make run EXP=<E>` on a fresh clone of this repository's HEAD (no
data, no compiled kernels: what a newcomer waits for after `make setup`)
-> results/quickstart/run_<E>.json: the wall time and each stage's (generate, precompute, train,
evaluate, plot, from the times make starts them), the exit code, the load average before and after
(other jobs on the machine slow the run), and the provenance with E's config.

    python scripts/time_quickstart.py [EXP]      (default L96_1: `make run`; smoke: `make run EXP=smoke`)

The pipeline runs with this interpreter (make PYTHON=...), so no venv is built: `make setup` is
timed apart by scripts/time_fresh_install.sh. Nothing is written when the run fails.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("exp", nargs="?", default="L96_1", help="the experiment (default L96_1)")
    args = ap.parse_args(argv)
    from enkf.io import atomic_write_json, provenance
    from rl.config import load_config
    cfg = load_config(ROOT / "config.yaml", args.exp)
    commit = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True).strip()
    dirty = bool(subprocess.check_output(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, text=True))
    command = "make run" if args.exp == "L96_1" else f"make run EXP={args.exp}"
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        subprocess.check_call(["git", "clone", "-q", str(ROOT), str(repo)])
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        starts = []  # (stage, seconds from the start) as make echoes each `python -m cli.main <stage>` line
        with open(Path(tmp) / "run.log", "w") as log:
            proc = subprocess.Popen(["make", "run", f"EXP={args.exp}", f"PYTHON={sys.executable}"], cwd=repo,
                                    env=dict(os.environ, PYTHONPATH=str(repo)), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                log.write(line)
                if line.startswith(f"{sys.executable} -m cli.main "):
                    starts.append((line.split()[3], time.perf_counter() - t0))
            rc = proc.wait()
        wall = time.perf_counter() - t0
        stages = {name: round(end - begin, 1) for (name, begin), (_, end) in zip(starts, starts[1:] + [("", wall)])}
        load_after = os.getloadavg()
        tail = (Path(tmp) / "run.log").read_text().strip().splitlines()[-5:]
    print("\n".join(tail))
    if rc != 0:
        print(f"`{command}` failed with exit code {rc}: nothing written", file=sys.stderr)
        return 1
    record = {"command": command, "experiment": args.exp, "wall_s": wall, "stage_wall_s": stages, "rc": rc,
              "commit_tested": commit,
              "load_avg_before": list(load_before), "load_avg_after": list(load_after),
              "provenance": provenance(cfg.to_dict(), cfg.hash(), f"python scripts/time_quickstart.py {args.exp}", wall)}
    if dirty:
        record["note"] = "the checkout had uncommitted changes to tracked files: the clone ran HEAD without them"
    out = ROOT / "results" / "quickstart" / f"run_{args.exp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record)
    print(f"{command}: {wall:.0f} s -> {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
