"""One ablation study run twice on Ray, one trial at a time and then with 2 at once, side by side;
writes the key `ray_study` of results/bench.json (the other keys are left as they are).

    python scripts/bench_ray_study.py --question sensitivity [--config config.yaml]
    python scripts/bench_ray_study.py --install     (only ray_study.install: the cost of Ray itself)

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

from rl.config import load_sweep  # noqa: E402
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
    shown = [os.path.relpath(c, ROOT) if c == str(config) else c.replace(str(records.parent), "<tmp>") for c in cmd[3:]]
    return {"command": shlex.join(["enkfrl"] + shown), "max_concurrent": concurrent, "wall_s": wall,
            "trials": len(table["records"]), "trials_wall_s": sum(r["wall_s"] for r in table["records"]),
            "load_avg_1_5_15_before": list(load_before), "load_avg_1_5_15_after": list(os.getloadavg()),
            "table": table}


def measure_install() -> dict:
    """pip install of the pinned ray[tune] into an empty venv without pip's cache; its size; the
    time of `import ray` and of a local ray.init in this interpreter."""
    import re
    pin = re.search(r'"(ray\[tune\]==[^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
        t0 = time.perf_counter()
        subprocess.run([f"{tmp}/bin/pip", "install", "-q", "--no-cache-dir", pin], check=True)
        wall = time.perf_counter() - t0
        size = int(subprocess.run(["du", "-sm", tmp], capture_output=True, text=True).stdout.split()[0])
    probe = ("import time; t0 = time.perf_counter(); import ray; t1 = time.perf_counter(); "
             "ray.init(num_cpus=2, include_dashboard=False); t2 = time.perf_counter(); ray.shutdown(); "
             "print(t1 - t0, t2 - t1, ray.__version__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=dict(os.environ, RAY_ADDRESS=""))
    import_s, init_s, version = out.stdout.split()[-3:]
    return {"pin": pin, "ray_version": version, "pip_install_wall_s": wall, "venv_mb": size,
            "import_s": float(import_s), "init_s": float(init_s), "load_avg_1_5_15_after": list(os.getloadavg()),
            "provenance": provenance({"pin": pin}, pin, "python scripts/bench_ray_study.py --install", wall)}


def write_key(update: dict) -> Path:
    """Merge update into results/bench.json's ray_study (every other key stays as it is)."""
    bench = ROOT / "results" / "bench.json"
    doc = json.loads(bench.read_text()) if bench.exists() else {}
    doc["ray_study"] = dict(doc.get("ray_study", {}), **update)
    return atomic_write_json(bench, doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--question")
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--install", action="store_true", help="Measure the install and start-up of Ray only.")
    args = ap.parse_args()
    if args.install:
        install = measure_install()
        print(f"ray install {install['pip_install_wall_s']:.0f} s, {install['venv_mb']} MB; import "
              f"{install['import_s']:.1f} s, init {install['init_s']:.1f} s; wrote {write_key({'install': install})}")
        return
    if not args.question:
        ap.error("--question or --install")
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
    bench = write_key(record)
    print(f"{args.question}: serial {serial['wall_s']:.0f} s, 2 at once {ray2['wall_s']:.0f} s, "
          f"speed-up {record['speedup']:.2f}x, same results; wrote {bench} (ray_study)")


if __name__ == "__main__":
    main()
