"""The batched closed loop and pointwise PPO on a GPU machine: CPU (all its cores) vs CUDA, in one
process, plus the wall time of a 2M-path-step from-scratch run. Run it on a machine with an NVIDIA
GPU after `enkfrl generate/precompute --exp L96_1`:

    python scripts/gpu_check.py OUT.json [EXP]

CUDA here means train.device cuda: the forecast of every member of every path in one kernel launch
(enkf/cuda.py) and the policy on the GPU; the analyses stay on the CPU. Rows (path-steps/s):
  env only, batched loop at P = 4, 32, 99: numba on all cores vs the CUDA forecast
  pointwise PPO with the scratch variant's settings (config.yaml, study pointwise): CPU vs CUDA
  `enkfrl train --study pointwise --variant scratch` (2M path-steps) on CUDA: wall time
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import torch as th

from enkf.io import atomic_write_json, installed_versions, provenance
from rl.config import load_ablation, load_config
from rl.envs.normalisation import read_inputs
from rl.studies.bench import batched_loop_speed, pointwise_speed


def on(cfg, device: str):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))


def main() -> None:
    out, exp = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "L96_1")
    cfg = load_config("config.yaml", exp)
    scratch = next(r.cfg for r in load_ablation("config.yaml", "pointwise")[1]
                   if r.experiment == exp and r.variant == "scratch" and r.seed == cfg.train.seed)
    data, norm = read_inputs(cfg, Path("data") / exp)
    cores = os.cpu_count()
    numba.set_num_threads(cores)
    th.set_num_threads(cfg.train.torch_threads)
    cuda = th.cuda.is_available()
    t0 = time.perf_counter()
    result = {"experiment": exp, "cores": cores, "gpu": th.cuda.get_device_name(0) if cuda else None}
    for device in ("cpu", "cuda"):
        if device == "cuda" and not cuda:
            result[device] = "no CUDA device"
            continue
        r = {f"batched_env_only_P{P}": batched_loop_speed(on(cfg, device), data, norm, P, 3) for P in (4, 32, 99)}
        pointwise_speed(on(scratch, device), data, norm, rollouts=1, env_seconds=0.5, device=device)  # warm-up
        r["batched"] = pointwise_speed(on(scratch, device), data, norm, rollouts=6, env_seconds=3, device=device)
        result[device] = r
        print(device, json.dumps(r), flush=True)
    if cuda:
        t1 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "cli.main", "train", "--exp", exp, "--study", "pointwise",
                              "--variant", "scratch", "--seed", str(cfg.train.seed)], capture_output=True, text=True)
        result["scratch_run"] = {"path_steps": scratch.train.total_steps, "wall_s": time.perf_counter() - t1,
                                 "returncode": run.returncode, "tail": run.stdout[-400:] + run.stderr[-400:]}
        result["cuda_over_cpu"] = (result["cuda"]["batched"]["ppo_path_steps_per_s"]
                                   / result["cpu"]["batched"]["ppo_path_steps_per_s"])
    result["versions"] = installed_versions()
    result["provenance"] = provenance(cfg.to_dict(), cfg.hash(), "python scripts/gpu_check.py " + " ".join(sys.argv[1:]),
                                      time.perf_counter() - t0)
    atomic_write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k in ("gpu", "cuda_over_cpu", "scratch_run")}))


if __name__ == "__main__":
    main()
