"""Closed-loop evaluation: a policy or a baseline drives the env over a whole path.

Every "actor" maps (observation, env) to a normalised action, so the learned policy and the
baselines run in the very same closed loop:
    rl            the deterministic policy (its LSTM state carried over the episode)
    no_da         xa = xb (no analysis)
    copy_obs      xa = y where observed, xb elsewhere
    enkf_replica  the EnKF analysis of the env's own forecast ensemble, sent through the same
                  float32 action path: the floor any imitator can reach against the stored xa
The stored EnKF itself ("enkf") is the reference run of paths.h5.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from rl.env import AssimilationEnv

Actor = Callable[[np.ndarray, AssimilationEnv], np.ndarray]


def policy_actor(model) -> Actor:
    """The deterministic policy; the recurrent state restarts with each call of run_episode."""
    memory = {"state": None, "start": True}

    def act(obs, env):
        action, memory["state"] = model.predict(
            obs, state=memory["state"], episode_start=np.array([memory["start"]]), deterministic=True)
        memory["start"] = False
        return action

    def reset():
        memory.update(state=None, start=True)

    act.reset = reset
    return act


def load_policy(cfg, run_dir: Path, which: str = "best", trust: bool = False):
    """best_model.zip (falls back to final_model.zip) or final_model.zip of a run folder; a zip
    whose sha256 is not the one the run recorded is refused unless trust (rl/runs.py)."""
    from rl.policy import algo_class
    from rl.runs import load_model
    path = Path(run_dir) / f"{which}_model.zip"
    if which == "best" and not path.exists():
        path = Path(run_dir) / "final_model.zip"
    return load_model(algo_class(cfg), path, run_dir, trust, device="cpu")


def no_da_actor(obs, env):
    return env.action_for(env.forecast_mean)


def copy_obs_actor(obs, env):
    xa = env.forecast_mean.copy()
    xa[env.system.obs_index] = env.current_obs
    return env.action_for(xa)


def enkf_replica_actor(obs, env):
    return env.action_for(env.online_analysis)


BASELINES: dict[str, Actor] = {"no_da": no_da_actor, "copy_obs": copy_obs_actor,
                               "enkf_replica": enkf_replica_actor}


def run_episode(env: AssimilationEnv, act: Actor, path: int) -> dict:
    """One whole path in closed loop. Per-cycle arrays are NaN after a halt."""
    if hasattr(act, "reset"):
        act.reset()
    obs, _ = env.reset(options={"path": path})
    K, n = env.n_cycles, env.n
    out = {"reward": np.full(K, np.nan), "rmse_vs_enkf": np.full(K, np.nan),
           "rmse_vs_online": np.full(K, np.nan), "rmse_vs_truth": np.full(K, np.nan),
           "enkf_rmse_vs_truth": np.full(K, np.nan), "analysis": np.full((K, n), np.nan),
           "forecast_mean": np.full((K, n), np.nan)}
    completed = 0
    for k in range(K):
        out["forecast_mean"][k] = env.forecast_mean
        obs, reward, terminated, truncated, info = env.step(act(obs, env))
        out["reward"][k] = reward
        for key in ("rmse_vs_enkf", "rmse_vs_online", "rmse_vs_truth", "enkf_rmse_vs_truth"):
            out[key][k] = info[key]
        if env.last_analysis is not None:
            out["analysis"][k] = env.last_analysis
        if terminated:
            break
        completed = k + 1
    out["cycles_completed"] = completed
    return out


def summarise(ep: dict) -> dict:
    """Cycle means over the completed part of an episode."""
    c = max(ep["cycles_completed"], 1)
    return {"cycles_completed": int(ep["cycles_completed"]),
            "mean_reward": float(np.nanmean(ep["reward"][:c])),
            "total_reward": float(np.nansum(ep["reward"])),
            "rmse_norm_vs_enkf": float(np.nanmean(ep["rmse_vs_enkf"][:c])),
            "rmse_norm_vs_online": float(np.nanmean(ep["rmse_vs_online"][:c])),
            "rmse_vs_truth": float(np.nanmean(ep["rmse_vs_truth"][:c]))}


def evaluate(env: AssimilationEnv, actors: dict[str, Actor], paths: list[int]) -> tuple[dict, dict]:
    """Run every actor on every path. Returns (metrics, episodes) keyed [path][actor]."""
    metrics, episodes = {}, {}
    for p in paths:
        metrics[p], episodes[p] = {}, {}
        for name, act in actors.items():
            ep = run_episode(env, act, p)
            episodes[p][name] = ep
            metrics[p][name] = summarise(ep)
        metrics[p]["enkf"] = {"rmse_vs_truth": float(np.mean(env.enkf_rmse_vs_truth(p)))}
    return metrics, episodes


def non_finite(metrics: dict, where: str = "") -> list[str]:
    """Dotted names of the metrics that are NaN or infinite."""
    bad = []
    for k, v in metrics.items():
        name = f"{where}{k}"
        if isinstance(v, dict):
            bad += non_finite(v, name + ".")
        elif isinstance(v, (int, float, np.number)) and not np.isfinite(v):
            bad.append(name)
    return bad


def write_eval(run_dir: Path, metrics: dict, episodes: dict, env: AssimilationEnv) -> tuple[Path, Path]:
    """eval.h5 and metrics.json in the run folder, each written whole (temporary file, rename);
    non-finite metrics are refused (DataError) and leave the earlier files as they were."""
    from enkf.io import DataError, atomic_h5, atomic_write_text
    bad = non_finite({str(p): m for p, m in metrics.items()})
    if bad:
        raise DataError(f"evaluation gave non-finite metrics ({', '.join(bad[:4])}"
                        f"{', ...' if len(bad) > 4 else ''}): {run_dir}/metrics.json and eval.h5 "
                        f"left as they were")
    metrics_path, h5_path = Path(run_dir) / "metrics.json", Path(run_dir) / "eval.h5"
    with atomic_h5(h5_path) as f:
        for p, per_actor in episodes.items():
            g = f.create_group(f"path_{p}")
            g.create_dataset("truth", data=env.data["truth"][p])
            g.create_dataset("enkf_analysis", data=env.data["analysis_mean"][p])
            g.create_dataset("enkf_rmse_vs_truth", data=env.enkf_rmse_vs_truth(p))
            for name, ep in per_actor.items():
                a = g.create_group(name)
                a.attrs["cycles_completed"] = ep["cycles_completed"]
                for k, v in ep.items():
                    if isinstance(v, np.ndarray):
                        a.create_dataset(k, data=v)
    atomic_write_text(metrics_path, json.dumps({str(p): m for p, m in metrics.items()}, indent=2))
    return metrics_path, h5_path


def fit_record(cfg, run_dir: Path, metrics: dict, path: int, command: str) -> dict:
    """The results/fit/<EXP>.json record (../shared/RESULTS_FORMAT.md) for one evaluated path,
    with the issue's acceptance checks evaluated on the measured numbers."""
    run_dir = Path(run_dir)
    m = metrics[path]
    timing = json.loads((run_dir / "timing.json").read_text()) if (run_dir / "timing.json").exists() else {}
    pre = run_dir / "pretrain.json"
    record = {
        "experiment": cfg.experiment, "command": command, "config_hash": cfg.hash(),
        "seed": cfg.train.seed, "run_dir": str(run_dir),
        "train_steps": timing.get("train_steps"), "train_wall_s": timing.get("train_wall_s"),
        "pretrain_epochs": cfg.pretrain.epochs,
        "pretrain_wall_s": json.loads(pre.read_text())["wall_s"] if pre.exists() else 0.0,
        "eval_path": path, "cycles": cfg.paths.n_cycles,
        "cycles_completed": m["rl"]["cycles_completed"],
    }
    keep = ("rmse_norm_vs_enkf", "rmse_vs_truth", "cycles_completed")
    for name in ("rl", "copy_obs", "no_da", "supervised", "enkf_replica"):
        if name in m:
            record[name] = {k: m[name][k] for k in keep}
    record["enkf"] = {"rmse_vs_truth": m["enkf"]["rmse_vs_truth"]}
    rl = m["rl"]
    checks = {
        "completes_path": rl["cycles_completed"] == cfg.paths.n_cycles,
        "below_copy_obs": rl["rmse_norm_vs_enkf"] < m["copy_obs"]["rmse_norm_vs_enkf"],
        "vs_truth_within_1.2x_enkf": rl["rmse_vs_truth"] <= 1.2 * m["enkf"]["rmse_vs_truth"],
        "train_steps_within_2M": (timing.get("train_steps") or 0) <= 2_000_000,
    }
    if "supervised" in m:
        checks["within_1.25x_supervised"] = rl["rmse_norm_vs_enkf"] <= 1.25 * m["supervised"]["rmse_norm_vs_enkf"]
    record["checks"] = checks
    return record
