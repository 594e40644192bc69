"""Ablation studies: `enkfrl ablate --question NAME` runs config.yaml's ablations.NAME.

A study applies one measure to every (experiment, variant, seed); variants are config
overrides, so every run is an ordinary validated Config. Measures:

    enkf_skill   reference EnKF from the variant's own spin-up: forecast / analysis / observation
                 RMSE vs truth after burn-in, mean over paths; the median analysis RMSE and the
                 paths whose analysis is worse than the observations (diverged)
    sensitivity  the oracle closed loop (stored xa fed back exactly, through a float64
                 normalise round trip, through float32): cycles until the forecast leaves the
                 stored one by 1e-6 and 1e-2 (relative), median over paths
    bounds       how often normalised xb, y, xa, innovation and spread leave [-1,1], [-2,2],
                 [-3,3]; cycles copy-obs and no-DA complete under the variant's halt bound
    clone        behaviour cloning only: the supervised policy in closed loop on the eval path
    finetune     clone, then PPO for train.total_steps: both policies on the eval path

Each run is recorded; the summary is mean and std over seeds. Output:
results/ablations/NAME.json.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch as th

from stable_baselines3.common.vec_env import DummyVecEnv

from enkf.config import AblationRun, Config
from enkf.io import DataError, atomic_write_json, provenance
from enkf.precompute import precompute, read_paths, summary
from enkf.spinup import read_spinup, run_spinup
from rl.curriculum import Curriculum, CurriculumCallback
from rl.env import AssimilationEnv
from rl.evaluate import BASELINES, policy_actor, run_episode, summarise
from rl.normalisation import Normaliser
from rl.policy import build_model
from rl.pretrain import behaviour_clone

_DATA_CACHE: dict[str, tuple[dict, Normaliser]] = {}
_CLONE_CACHE: dict[str, dict] = {}


def reference_data(cfg: Config, data_root: Path) -> tuple[dict, Normaliser]:
    """The experiment's data files when they match the variant, else computed in memory."""
    key = cfg.data_hash()
    if key not in _DATA_CACHE:
        exp_dir = Path(data_root) / cfg.experiment
        try:
            spin = read_spinup(cfg, exp_dir / "spinup.h5")
            data = read_paths(cfg, exp_dir / "paths.h5")
        except DataError:
            spin = run_spinup(cfg)
            data = precompute(cfg, spin["starts"], progress=False)
        _DATA_CACHE.clear()  # one experiment's data at a time is plenty of memory
        _DATA_CACHE[key] = data, Normaliser.from_climatology(spin["clim_min"], spin["clim_max"])
    return _DATA_CACHE[key]


# ---- measures ----------------------------------------------------------------------------------
def measure_enkf_skill(cfg: Config, data_root: Path) -> dict:
    data, _ = reference_data(cfg, data_root)
    s = summary(data, cfg.paths.burn_in)
    per_path = data["analysis_rmse"][:, cfg.paths.burn_in:].mean(axis=1)
    obs_per_path = data["obs_rmse"][:, cfg.paths.burn_in:].mean(axis=1)
    return {"forecast_rmse": s["forecast_rmse"][0], "analysis_rmse": s["analysis_rmse"][0],
            "obs_rmse": s["obs_rmse"][0], "analysis_rmse_median": float(np.median(per_path)),
            "diverged_paths": int(np.sum(per_path > obs_per_path)), "paths": len(per_path)}


def _departure_cycles(env, data, path: int, dtype) -> tuple[int, int]:
    """Oracle run, the action for the stored xa emitted in dtype: first cycles where the forecast
    mean leaves the stored one by 1e-6 and by 1e-2 (relative to its largest value); n_cycles if never."""
    env.reset(options={"path": path})
    K = env.n_cycles
    first = {1e-6: K, 1e-2: K}
    for k in range(K):
        ref = data["forecast_mean"][path, k]
        dev = np.max(np.abs(env.forecast_mean - ref)) / np.max(np.abs(ref))
        for tol in first:
            if first[tol] == K and not dev <= tol:
                first[tol] = k
        if first[1e-2] < K:
            break
        _, _, terminated, truncated, _ = env.step(env.action_for(data["analysis_mean"][path, k], dtype))
        if terminated or truncated:
            break
    return first[1e-6], first[1e-2]


def measure_sensitivity(cfg: Config, data_root: Path) -> dict:
    data, norm = reference_data(cfg, data_root)
    env = AssimilationEnv(cfg, data, norm, [0])
    out = {"n_cycles": cfg.paths.n_cycles}
    for name, dtype in {"float64": np.float64, "float32": np.float32}.items():
        firsts = np.array([_departure_cycles(env, data, p, dtype) for p in range(cfg.paths.n_paths)])
        out[f"{name}_cycles_to_1e-6"] = float(np.median(firsts[:, 0]))
        out[f"{name}_cycles_to_1e-2"] = float(np.median(firsts[:, 1]))
    return out


def measure_bounds(cfg: Config, data_root: Path) -> dict:
    data, norm = reference_data(cfg, data_root)
    idx = np.array(cfg.obs_index)
    values = {
        "forecast_mean": norm.norm(data["forecast_mean"]),
        "obs": norm.norm(data["obs"], idx),
        "analysis_mean": norm.norm(data["analysis_mean"]),
        "innovation": norm.diff_norm(data["obs"] - data["forecast_mean"][..., idx], idx),
        "spread": norm.diff_norm(data["forecast_spread"]),
    }
    out = {}
    for name, z in values.items():
        for b in (1, 2, 3):
            out[f"{name}_outside_{b}"] = float(np.mean(np.abs(z) > b))
    env = AssimilationEnv(cfg, data, norm, [0])
    paths = range(min(cfg.paths.n_paths, 5))
    for actor in ("copy_obs", "no_da"):
        out[f"{actor}_cycles_completed"] = float(np.mean(
            [run_episode(env, BASELINES[actor], p)["cycles_completed"] for p in paths]))
    return out


def _clone_key(cfg: Config) -> str:
    """What the cloned policy mean depends on (not the PPO settings, nor the exploration std)."""
    d = cfg.to_dict()
    d["agent"] = {k: v for k, v in d["agent"].items() if k != "log_std_init"}
    keys = ("seed", "model", "obs", "filter", "spinup", "paths", "env", "agent", "pretrain")
    return json.dumps({k: d[k] for k in keys}, sort_keys=True)


def _cloned_model(cfg: Config, data: dict, norm: Normaliser):
    """A fresh model with the behaviour-cloned policy (cached per cloning-relevant settings)."""
    first, _ = cfg.paths.train_paths
    venv = DummyVecEnv([lambda: AssimilationEnv(cfg, data, norm, [first])
                        for _ in range(cfg.train.n_envs)])
    model = build_model(cfg, venv, None, "cpu", cfg.seed)
    key = _clone_key(cfg)
    if key not in _CLONE_CACHE:
        t0 = time.perf_counter()
        history = behaviour_clone(model, cfg, norm, data, log=lambda *a: None)
        _CLONE_CACHE[key] = {"state": {k: v.clone() for k, v in model.policy.state_dict().items()},
                             "clone_wall_s": time.perf_counter() - t0,
                             "clone_heldout_rmse": (history["val_rmse"] or history["train_rmse"] or [np.nan])[-1]}
    cached = _CLONE_CACHE[key]
    model.policy.load_state_dict(cached["state"])
    if hasattr(model.policy, "log_std"):  # the exploration std is the variant's, not the cache's
        model.policy.log_std.data.fill_(cfg.agent.log_std_init)
    return model, {k: v for k, v in cached.items() if k != "state"}


def _closed_loop(cfg, data, norm, model) -> dict:
    env = AssimilationEnv(cfg, data, norm, [cfg.paths.eval_path])
    s = summarise(run_episode(env, policy_actor(model), cfg.paths.eval_path))
    return {k: s[k] for k in ("cycles_completed", "rmse_norm_vs_enkf", "rmse_vs_truth")}


def measure_clone(cfg: Config, data_root: Path) -> dict:
    th.set_num_threads(cfg.train.torch_threads)
    data, norm = reference_data(cfg, data_root)
    model, info = _cloned_model(cfg, data, norm)
    return dict(info, **{f"supervised_{k}": v for k, v in _closed_loop(cfg, data, norm, model).items()})


def measure_finetune(cfg: Config, data_root: Path) -> dict:
    th.set_num_threads(cfg.train.torch_threads)
    data, norm = reference_data(cfg, data_root)
    model, info = _cloned_model(cfg, data, norm)  # pretrain.epochs 0: the untrained policy
    if cfg.pretrain.epochs > 0:
        info.update({f"supervised_{k}": v for k, v in _closed_loop(cfg, data, norm, model).items()})
    curriculum = Curriculum(*cfg.paths.train_paths, cfg.curriculum.episodes_k)
    t0 = time.perf_counter()
    model.learn(cfg.train.total_steps, callback=CurriculumCallback(curriculum))
    wall = time.perf_counter() - t0
    info.update({f"rl_{k}": v for k, v in _closed_loop(cfg, data, norm, model).items()})
    info.update(ppo_steps=cfg.train.total_steps, ppo_wall_s=wall, ppo_steps_per_s=cfg.train.total_steps / wall,
                curriculum_paths=curriculum.n_active)
    return info


MEASURES = {"enkf_skill": measure_enkf_skill, "sensitivity": measure_sensitivity,
            "bounds": measure_bounds, "clone": measure_clone, "finetune": measure_finetune}


# ---- the study -------------------------------------------------------------------------------------
def summarise_records(records: list[dict]) -> list[dict]:
    """Mean and std over seeds of every numeric result, per (experiment, variant)."""
    groups = defaultdict(list)
    for r in records:
        groups[(r["experiment"], r["variant"])].append(r)
    out = []
    for (exp, variant), rs in groups.items():
        row = {"experiment": exp, "variant": variant, "seeds": [r["seed"] for r in rs]}
        for k in rs[0]["result"]:
            vals = np.array([r["result"][k] for r in rs], dtype=float)
            row[k] = {"mean": float(vals.mean()), "std": float(vals.std())}
        out.append(row)
    return out


def run_ablation(name: str, meta: dict, runs: list[AblationRun], data_root: Path, out_dir: Path,
                 command: str, echo=print) -> Path:
    measure = MEASURES[meta["measure"]]
    records = []
    start = time.perf_counter()
    for i, run in enumerate(runs):
        t0 = time.perf_counter()
        result = measure(run.cfg, data_root)
        wall = time.perf_counter() - t0
        records.append({"experiment": run.experiment, "variant": run.variant, "seed": run.seed,
                        "overrides": run.overrides, "config_hash": run.cfg.hash(),
                        "wall_s": wall, "result": result,
                        "provenance": provenance(run.cfg.to_dict(), run.cfg.hash(), command, wall)})
        echo(f"[{i + 1}/{len(runs)}] {run.experiment} {run.variant} seed {run.seed}: "
             + ", ".join(f"{k} {v:.4g}" for k, v in result.items()))
    out = Path(out_dir) / f"{name}.json"
    run_hashes = [r["config_hash"] for r in records]  # each record carries its resolved config
    study = {"question": name, "run_config_hashes": run_hashes}
    doc = {"question": meta["question"], "measure": meta["measure"], "command": command,
           "summary": summarise_records(records), "records": records,
           "provenance": provenance(study, _hash(run_hashes), command, time.perf_counter() - start)}
    atomic_write_json(out, doc)
    echo(markdown_table(doc))
    return out


def _hash(obj) -> str:
    import hashlib
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def markdown_table(doc: dict, columns: list[str] | None = None) -> str:
    """The summary as a markdown table: mean ± std over seeds ('—' where a run has no such value)."""
    rows = doc["summary"]
    keys = columns or list(dict.fromkeys(k for r in rows for k in r if k not in ("experiment", "variant", "seeds")))
    lines = ["| experiment | variant | " + " | ".join(keys) + " |",
             "|" + "---|" * (len(keys) + 2)]
    for r in rows:
        cells = []
        for k in keys:
            if k not in r:
                cells.append("—")
                continue
            m, s = r[k]["mean"], r[k]["std"]
            cells.append(f"{m:.4g} ± {s:.2g}" if len(r["seeds"]) > 1 else f"{m:.4g}")
        lines.append(f"| {r['experiment']} | {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
