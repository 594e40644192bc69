"""The pointwise agent's PPO on CUDA vs CPU, same config and run length, in one process (issue 10's
device check; run it on a machine with a GPU):   python scripts/gpu_check.py OUT.json [EXP]

Data: data/<EXP>/ (generate and precompute it first). Prints and writes path-steps/s per device.
"""
from __future__ import annotations

import json
import sys
import time

import torch as th

from rl.config import load_config
from enkf.io import atomic_write_json, installed_versions, provenance
from rl.envs.normalisation import read_inputs
from rl.studies.bench import pointwise_speed
from pathlib import Path


def main() -> None:
    out, exp = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "L96_1")
    cfg = load_config("config.yaml", exp)
    data, norm = read_inputs(cfg, Path("data") / exp)
    th.set_num_threads(cfg.train.torch_threads)
    t0 = time.perf_counter()
    result = {"experiment": exp, "gpu": th.cuda.get_device_name(0) if th.cuda.is_available() else None}
    for device in ("cpu", "cuda"):
        if device == "cuda" and not th.cuda.is_available():
            result[device] = "no CUDA device"
            continue
        pointwise_speed(cfg, data, norm, rollouts=1, env_seconds=0.5, device=device)  # warm-up
        result[device] = pointwise_speed(cfg, data, norm, rollouts=6, env_seconds=3, device=device)
        print(device, json.dumps(result[device]))
    if isinstance(result.get("cuda"), dict):
        result["cuda_over_cpu"] = result["cuda"]["ppo_path_steps_per_s"] / result["cpu"]["ppo_path_steps_per_s"]
    result["versions"] = installed_versions()
    result["provenance"] = provenance(cfg.to_dict(), cfg.hash(), "python scripts/gpu_check.py " + " ".join(sys.argv[1:]),
                                      time.perf_counter() - t0)
    atomic_write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k in ("gpu", "cuda_over_cpu")}))


if __name__ == "__main__":
    main()
