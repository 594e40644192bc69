"""Closed-loop evaluation: an actor (rl.agents.actors: the policy or a baseline) drives the env
over a whole path. The stored EnKF itself ("enkf") is the reference run of paths.h5.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from enkf.io import atomic_h5, atomic_write_json
from rl.agents.actors import BASELINES, Actor, actor_factory
from rl.envs.batched import BatchedLoop


def load_policy(cfg, run_dir: Path, which: str = "best", trust: bool = False):
    """best_model.zip (falls back to final_model.zip) or final_model.zip of a run folder; a zip
    whose sha256 is not the one the run recorded is refused unless trust (rl/training/runs.py)."""
    from rl.agents.policy import algo_class
    from rl.training.runs import load_model
    path = Path(run_dir) / f"{which}_model.zip"
    if which == "best" and not path.exists():
        path = Path(run_dir) / "final_model.zip"
    return load_model(algo_class(cfg), path, run_dir, trust, device="cpu")


def run_paths(loop: BatchedLoop, act: Actor, paths: list[int]) -> dict[int, dict]:
    """Every path of `paths` in closed loop at once, slot q on paths[q] (the loop has len(paths)
    slots). Returns {path: episode}; per-cycle arrays are NaN after the path's halt."""
    P, K, n = len(paths), loop.n_cycles, loop.n
    if hasattr(act, "reset"):
        act.reset()
    loop.reset(np.arange(P), paths)
    ep = {"reward": np.full((P, K), np.nan), "rmse_vs_enkf": np.full((P, K), np.nan),
          "rmse_vs_online": np.full((P, K), np.nan), "rmse_vs_truth": np.full((P, K), np.nan),
          "enkf_rmse_vs_truth": np.full((P, K), np.nan), "analysis": np.full((P, K, n), np.nan),
          "forecast_mean": np.full((P, K, n), np.nan)}
    completed = np.zeros(P, dtype=int)
    alive = np.ones(P, bool)
    for k in range(K):
        ep["forecast_mean"][alive, k] = loop.forecast_mean[alive]
        res = loop.step(act(loop.observations(), loop), active=alive)
        for key in ("reward", "rmse_vs_enkf", "rmse_vs_online", "rmse_vs_truth", "enkf_rmse_vs_truth", "analysis"):
            ep[key][alive, k] = getattr(res, key)[alive]
        completed[alive & ~res.terminated] = k + 1
        alive &= ~res.terminated
        if not alive.any():
            break
    return {p: dict({key: v[q] for key, v in ep.items()}, cycles_completed=int(completed[q]))
            for q, p in enumerate(paths)}


def summarise(ep: dict, burn_in: int = 0) -> dict:
    """Cycle means over the completed part of an episode after `burn_in` cycles (over all
    completed cycles when it halted before the end of the burn-in); the total reward counts all."""
    c = max(ep["cycles_completed"], 1)
    b = burn_in if c > burn_in else 0
    return {"cycles_completed": int(ep["cycles_completed"]),
            "mean_reward": float(np.nanmean(ep["reward"][b:c])),
            "total_reward": float(np.nansum(ep["reward"])),
            "rmse_norm_vs_enkf": float(np.nanmean(ep["rmse_vs_enkf"][b:c])),
            "rmse_norm_vs_online": float(np.nanmean(ep["rmse_vs_online"][b:c])),
            "rmse_vs_truth": float(np.nanmean(ep["rmse_vs_truth"][b:c]))}


def evaluate(loop: BatchedLoop, actors: dict[str, Actor], paths: list[int],
             burn_in: int = 0) -> tuple[dict, dict]:
    """Run every actor on all `paths` at once (loop: len(paths) slots). Returns (metrics,
    episodes) keyed [path][actor]; metrics are cycle means after burn_in (the stored EnKF's too)."""
    per_actor = {name: run_paths(loop, act, paths) for name, act in actors.items()}
    metrics, episodes = {}, {}
    for p in paths:
        episodes[p] = {name: per_actor[name][p] for name in actors}
        metrics[p] = {name: summarise(ep, burn_in) for name, ep in episodes[p].items()}
        metrics[p]["enkf"] = {"rmse_vs_truth": float(np.mean(loop.enkf_rmse_vs_truth(p)[burn_in:]))}
    return metrics, episodes


METRICS = ("rmse_norm_vs_enkf", "rmse_vs_truth", "cycles_completed")


def over_paths(per_path: dict) -> dict:
    """{path: {actor: summary}} -> {actor: {metric: {mean, std, min, max}}} over the paths
    (cycles_completed: the worst path)."""
    out = {}
    actors = list(next(iter(per_path.values())))
    for name in actors:
        out[name] = {}
        for key in METRICS:
            values = np.array([m[name][key] for m in per_path.values() if key in m[name]], float)
            if not len(values):
                continue
            if key == "cycles_completed":
                out[name][key] = int(values.min())
            else:
                out[name][key] = {"mean": float(values.mean()), "std": float(values.std()),
                                  "min": float(values.min()), "max": float(values.max())}
    return out


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


def write_eval(run_dir: Path, metrics: dict, episodes: dict, env: BatchedLoop,
               test: dict | None = None) -> tuple[Path, Path]:
    """metrics.json and eval.h5 in the run folder, each written whole or not at all.

    metrics.json: {"<eval path>": {actor: summary}, "burn_in": b, and with a test set
    "test": {"n_paths", "spinup_seed", "paths": {"<p>": {actor: summary}}, "over_paths": ...}}.
    eval.h5: per path a group path_<p> (test paths: test_path_<p>) with the truth, the stored
    EnKF and every actor's per-cycle arrays. test = {"metrics", "episodes", "env", "seed"}.
    Non-finite metrics are refused (DataError) and leave the earlier files as they were."""
    from enkf.io import DataError
    metrics_path, h5_path = Path(run_dir) / "metrics.json", Path(run_dir) / "eval.h5"
    doc = {str(p): m for p, m in metrics.items()}
    doc["burn_in"] = env.burn_in
    groups = [("path", episodes, env)]
    if test is not None:
        doc["test"] = {"n_paths": len(test["metrics"]), "spinup_seed": test["seed"],
                       "paths": {str(p): m for p, m in test["metrics"].items()},
                       "over_paths": over_paths(test["metrics"])}
        groups.append(("test_path", test["episodes"], test["env"]))
    bad = non_finite(doc)
    if bad:
        raise DataError(f"evaluation gave non-finite metrics ({', '.join(bad[:4])}"
                        f"{', ...' if len(bad) > 4 else ''}): {run_dir}/metrics.json and eval.h5 "
                        f"left as they were")
    with atomic_h5(h5_path) as f:
        for prefix, eps, e in groups:
            for p, per_actor in eps.items():
                g = f.create_group(f"{prefix}_{p}")
                g.create_dataset("truth", data=e.data["truth"][p])
                g.create_dataset("enkf_analysis", data=e.data["analysis_mean"][p])
                g.create_dataset("enkf_rmse_vs_truth", data=e.enkf_rmse_vs_truth(p))
                for name, ep in per_actor.items():
                    a = g.create_group(name)
                    a.attrs["cycles_completed"] = ep["cycles_completed"]
                    for k, v in ep.items():
                        if isinstance(v, np.ndarray):
                            a.create_dataset(k, data=v)
    atomic_write_json(metrics_path, doc)
    return metrics_path, h5_path


def evaluate_run(run_dir: Path, cfg, data: dict, normaliser, test: tuple | None,
                 paths: list[int] | None = None, which: str = "final", trust: bool = False):
    """What `enkfrl evaluate` does: the run's policy (and its cloned start, when it has one) and
    the baselines in closed loop on `paths` of the training data (default: the eval path) and on
    every path of the test split test = (test config, its arrays), cycle means after
    paths.burn_in, with the training normaliser -> metrics.json, eval.h5.
    Returns (metrics, test result or None, the files written)."""
    paths = paths or [cfg.paths.eval_path]
    make_actor = actor_factory(cfg)
    actors = {"rl": make_actor(load_policy(cfg, run_dir, which, trust))}
    if (Path(run_dir) / "pretrained_model.zip").exists():
        actors["supervised"] = make_actor(load_policy(cfg, run_dir, "pretrained", trust))
    actors.update(BASELINES)
    env = BatchedLoop(cfg, data, normaliser, len(paths))
    metrics, episodes = evaluate(env, actors, paths, cfg.paths.burn_in)
    test_result = None
    if test is not None:
        test_cfg, test_data = test
        # the test split's own draws (its seed), the training normaliser: the agent's units
        test_paths = list(range(test_cfg.paths.n_paths))
        test_env = BatchedLoop(test_cfg, test_data, normaliser, len(test_paths))
        test_metrics, test_episodes = evaluate(test_env, actors, test_paths, cfg.paths.burn_in)
        test_result = {"metrics": test_metrics, "episodes": test_episodes, "env": test_env,
                       "seed": test_cfg.seed}
    files = write_eval(run_dir, metrics, episodes, env, test_result)
    return metrics, test_result, files
