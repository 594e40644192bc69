"""One ablation study run twice on Ray, one trial at a time and then with 2 at once, side by side;
writes the key `ray_study` of results/bench.json (the other keys are left as they are).

    python scripts/bench_ray_study.py --question enkf_variants [--config config.yaml]

Each mode is a fresh `enkfrl ablate` process (Ray start-up included) writing into its own empty
records folder, so neither skips a trial; the two tables must hold the same numbers. The machine's
load average before and after each mode is recorded (another job on the machine slows both).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from enkf.config import load_sweep  # noqa: E402
from enkf.io import atomic_write_json, provenance  # noqa: E402


def run_mode(question: str, config: Path, concurrent: int, records: Path) -> dict:
    cmd = [sys.executable, "-m", "cli.main", "ablate", "--question", question, "--config", str(config),
           "--max-concurrent", str(concurrent), "--out-dir", str(records)]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, RAY_ADDRESS=""), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"{shlex.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    table = json.loads((records / f"{question}.json").read_text())
    return {"command": shlex.join(["enkfrl"] + cmd[3:]), "max_concurrent": concurrent, "wall_s": wall,
            "trials": len(table["records"]), "trials_wall_s": sum(r["wall_s"] for r in table["records"]),
            "load_avg_1_5_15_before": list(load_before), "load_avg_1_5_15_after": list(os.getloadavg()),
            "table": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--question", required=True)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    args = ap.parse_args()
    config = Path(args.config).resolve()
    sweep = load_sweep(config)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        serial = run_mode(args.question, config, 1, Path(tmp) / "serial")
        print(f"serial: {serial['wall_s']:.0f} s", flush=True)
        ray2 = run_mode(args.question, config, 2, Path(tmp) / "ray2")
        print(f"2 at once: {ray2['wall_s']:.0f} s", flush=True)
    same = ([r["result"] for r in serial["table"]["records"]] == [r["result"] for r in ray2["table"]["records"]]
            and serial["table"]["summary"] == ray2["table"]["summary"])
    if not same:
        sys.exit("the two modes gave different results")
    study = serial["table"]["provenance"]["config"]
    record = {
        "question": args.question, "measure": serial["table"]["measure"], "cores": os.cpu_count(),
        "cpus_per_trial": sweep.cpus_per_trial, "same_results": same,
        "serial": {k: v for k, v in serial.items() if k != "table"},
        "ray_2_concurrent": {k: v for k, v in ray2.items() if k != "table"},
        "speedup": serial["wall_s"] / ray2["wall_s"],
        # a 1-minute load average above the cores' trial count: other jobs shared the machine
        "machine_shared": max(serial["load_avg_1_5_15_before"][0], ray2["load_avg_1_5_15_before"][0]) > 1.0,
        "provenance": provenance(study, serial["table"]["provenance"]["config_hash"],
                                 shlex.join(["python", "scripts/bench_ray_study.py"] + sys.argv[1:]),
                                 time.perf_counter() - t0),
    }
    bench = ROOT / "results" / "bench.json"
    doc = json.loads(bench.read_text()) if bench.exists() else {}
    doc["ray_study"] = record
    atomic_write_json(bench, doc)
    print(f"{args.question}: serial {serial['wall_s']:.0f} s, 2 at once {ray2['wall_s']:.0f} s, "
          f"speed-up {record['speedup']:.2f}x, same results; wrote {bench} (ray_study)")


if __name__ == "__main__":
    main()
