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

Every (experiment, variant, seed) is one trial (rl/studies/sweep.py runs them on Ray Tune): `measure_run`
measures it and `trial_record` is what it writes, results/ablations/NAME/<E>__<variant>__seed<S>.json.
`study_table` assembles results/ablations/NAME.json from those files: per (experiment, variant) the
mean and std over seeds.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from enkf import datafiles
from enkf.config import hash_of
from enkf.io import DataError, provenance
from enkf.precompute import summary
from rl.config import AblationRun, Config, agents_per_path
from rl.training.curriculum import Curriculum, CurriculumCallback
from rl.envs.assimilation import AssimilationEnv
from rl.envs.batched import BatchedLoop
from rl.agents.actors import BASELINES, actor_factory
from rl.training.evaluate import run_paths, summarise
from rl.envs.normalisation import Normaliser, read_inputs
from rl.agents.policy import build_model
from rl.agents.clone import behaviour_clone
from rl.training.train import make_vec_env, resolve_device, set_exploration


# ---- data: the experiment's files, a study's shared files, or computed in the trial --------------
def reference_data(cfg: Config, data_root: Path, workers: int | None = None) -> tuple[dict, Normaliser]:
    """The variant's data and normaliser (see `located_data`)."""
    data, norm, _ = located_data(cfg, data_root, workers)
    return data, norm


def located_data(cfg: Config, data_root: Path, workers: int | None = None) -> tuple[dict, Normaliser, str]:
    """The variant's data from the first folder of `datafiles.data_dirs` that holds them, else computed in
    memory in at most `workers` processes (None: paths.workers); with where they came from."""
    for folder in datafiles.data_dirs(data_root, cfg):
        try:
            data, norm = read_inputs(cfg, folder)
            return data, norm, str(folder)
        except DataError:
            pass
    spin, data = datafiles.compute(cfg, workers)
    return data, Normaliser.from_climatology(spin["clim_min"], spin["clim_max"]), "computed in memory"


# ---- measures ----------------------------------------------------------------------------------
def measure_enkf_skill(cfg: Config, data: dict, norm: Normaliser) -> dict:
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


def measure_sensitivity(cfg: Config, data: dict, norm: Normaliser) -> dict:
    env = AssimilationEnv(cfg, data, norm, [0])
    out = {"n_cycles": cfg.paths.n_cycles}
    for name, dtype in {"float64": np.float64, "float32": np.float32}.items():
        firsts = np.array([_departure_cycles(env, data, p, dtype) for p in range(cfg.paths.n_paths)])
        out[f"{name}_cycles_to_1e-6"] = float(np.median(firsts[:, 0]))
        out[f"{name}_cycles_to_1e-2"] = float(np.median(firsts[:, 1]))
    return out


def measure_bounds(cfg: Config, data: dict, norm: Normaliser) -> dict:
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
    paths = list(range(min(cfg.paths.n_paths, 5)))
    loop = BatchedLoop(cfg, data, norm, len(paths))
    for actor in ("copy_obs", "no_da"):
        out[f"{actor}_cycles_completed"] = float(np.mean(
            [ep["cycles_completed"] for ep in run_paths(loop, BASELINES[actor], paths).values()]))
    return out


def _cloned_model(cfg: Config, data: dict, norm: Normaliser):
    """A fresh model (on train.device) with the behaviour-cloned policy, its exploration set as
    the run's (agent.log_std_init), and the cloning figures."""
    first, _ = cfg.paths.train_paths
    venv = make_vec_env(cfg, data, norm, [first])
    model = build_model(cfg, venv, None, resolve_device(cfg.train.device), cfg.train.seed)
    t0 = time.perf_counter()
    history = behaviour_clone(model, cfg, norm, data, log=lambda *a: None)
    exploration = set_exploration(model, cfg, norm, data, history if cfg.pretrain.epochs > 0 else None)
    return model, {"clone_wall_s": time.perf_counter() - t0,
                   "clone_heldout_rmse": (history["val_rmse"] or history["train_rmse"] or [np.nan])[-1],
                   "log_std_init": exploration["log_std_init"]}


def _closed_loop(cfg, data, norm, model) -> dict:
    p = cfg.paths.eval_path
    s = summarise(run_paths(BatchedLoop(cfg, data, norm, 1), actor_factory(cfg)(model), [p])[p], cfg.paths.burn_in)
    return {k: s[k] for k in ("cycles_completed", "rmse_norm_vs_enkf", "rmse_vs_truth")}


def measure_clone(cfg: Config, data: dict, norm: Normaliser) -> dict:
    model, info = _cloned_model(cfg, data, norm)
    return dict(info, **{f"supervised_{k}": v for k, v in _closed_loop(cfg, data, norm, model).items()})


def measure_finetune(cfg: Config, data: dict, norm: Normaliser) -> dict:
    model, info = _cloned_model(cfg, data, norm)  # pretrain.epochs 0: the untrained policy
    if cfg.pretrain.epochs > 0:
        info.update({f"supervised_{k}": v for k, v in _closed_loop(cfg, data, norm, model).items()})
    curriculum = Curriculum(*cfg.paths.train_paths, cfg.curriculum.episodes_k)
    t0 = time.perf_counter()
    model.learn(cfg.train.total_steps * agents_per_path(cfg), callback=CurriculumCallback(curriculum))
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


def measure_run(run: AblationRun, measure: str, data_root: Path, workers: int | None = 1) -> tuple[dict, str]:
    """One trial's measurement: the measure's values, and where its data came from."""
    data, norm, source = located_data(run.cfg, data_root, workers)
    return MEASURES[measure](run.cfg, data, norm), source


def trial_key(run: AblationRun) -> str:
    """The trial's name, also its record's file name: <experiment>__<variant>__seed<S>."""
    return f"{run.experiment}__{run.variant}__seed{run.seed}"


def record_path(records_dir: Path, name: str, run: AblationRun) -> Path:
    return Path(records_dir) / name / f"{trial_key(run)}.json"


def trial_record(name: str, meta: dict, run: AblationRun, result: dict, wall_s: float, command: str,
                 trial: dict) -> dict:
    """A finished trial's record (docs/design.md: results format): the varied setting, the seed, the
    measured values, how the trial ran, the provenance with the trial's resolved config."""
    return {"study": name, "question": meta["question"], "measure": meta["measure"],
            "experiment": run.experiment, "variant": run.variant, "seed": run.seed,
            "overrides": run.overrides, "config_hash": run.cfg.hash(), "wall_s": wall_s,
            "result": result, "trial": trial,
            "provenance": provenance(run.cfg.to_dict(), run.cfg.hash(), command, wall_s)}


def finished_record(path: Path, run: AblationRun, measure: str) -> dict | None:
    """The record at path if it is this run's (same resolved config, same measure), else None."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    same = rec.get("measure") == measure and rec.get("provenance", {}).get("config_hash") == run.cfg.hash()
    return rec if same else None


def study_table(name: str, meta: dict, study: dict, runs: list[AblationRun], records_dir: Path,
                command: str, wall_s: float) -> dict:
    """results/ablations/NAME.json from the trial records: summary over seeds, every record (its
    config replaced by its hash), provenance with the study's block of config.yaml. DataError if
    a run has no finished record."""
    records = []
    for run in runs:
        rec = finished_record(record_path(records_dir, name, run), run, meta["measure"])
        if rec is None:
            raise DataError(f"{record_path(records_dir, name, run)}: no finished record of this "
                            f"trial: run `enkfrl ablate --question {name}`")
        records.append(dict(rec, provenance={k: v for k, v in rec["provenance"].items() if k != "config"}))
    hashes = [r["config_hash"] for r in records]
    return {"question": meta["question"], "measure": meta["measure"], "command": command,
            "summary": summarise_records(records), "records": records,
            "provenance": dict(provenance(study, hash_of(hashes), command, wall_s),
                               trials_wall_s=sum(r["wall_s"] for r in records))}


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
