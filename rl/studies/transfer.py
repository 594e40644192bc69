"""One policy for every ring: a pointwise agent trained on one Lorenz-96 experiment, evaluated
unchanged on another (`enkfrl transfer`).

The pointwise policy is one network applied at every grid point to the point's stencil window, so
it runs on a ring of any size. The target experiment gives the physics and the data (model, obs,
filter, test split: its DA sections); the run gives everything the agent is (env features, action
mode, env.ensemble_filter, agent, its normaliser, its final weights, loaded from safetensors). The
test split of the target is run in closed loop with the agent and the baselines, as `enkfrl
evaluate` runs a run's own test set; the target's own classical filters (results/filters/<E>.json)
stand beside it when they exist.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from enkf.config import DAConfig
from enkf.io import DataError
from rl.agents.actors import BASELINES, actor_factory
from rl.config import Config
from rl.envs.batched import BatchedLoop
from rl.training.evaluate import evaluate, over_paths


def transferred_config(run_cfg: Config, target: Config) -> Config:
    """The run's agent on the target's physics: the DA sections (and the experiment's name) of
    target, every RL section of the run."""
    if run_cfg.agent.kind != "pointwise":
        raise DataError(f"transfer needs a pointwise agent (one network at every grid point); the run's is "
                        f"{run_cfg.agent.kind!r}, whose network is sized to its own ring")
    cfg = dataclasses.replace(run_cfg, experiment=target.experiment,
                              **{f.name: getattr(target, f.name) for f in dataclasses.fields(DAConfig)
                                 if f.name != "experiment"})
    cfg.validate("test")
    return cfg


def transfer_config(source: dict, targets: dict[str, Config]) -> dict:
    """What a transfer record depends on besides the runs' own folders: the source setting (run.json's
    experiment, study, variant) and each target experiment's config hash."""
    return {"source": source, "targets": {t: cfg.hash() for t, cfg in targets.items()}}


def transfer_run(run_dir: Path, target: Config, test: tuple, normaliser, trust: bool = False,
                 baselines: bool = True) -> dict:
    """The run's final policy on the target's test split test = (its config, its arrays): per path
    and over paths, every actor's cycle means after the target's burn-in. baselines False: the
    policy alone (the baselines of runs of one setting are the same; transfer_record takes them
    from the runs that have them)."""
    from rl.training.runs import load_policy
    from rl.config import load_run_config
    run_cfg = load_run_config(Path(run_dir) / "config.yaml")
    cfg = transferred_config(run_cfg, target)
    policy, model = load_policy(run_cfg, run_dir, "final", trust)
    actors = {"rl": actor_factory(cfg)(policy), **(BASELINES if baselines else {})}
    test_cfg, test_data = test
    test_cfg = transferred_config(run_cfg, test_cfg)
    paths = list(range(test_cfg.paths.n_paths))
    loop = BatchedLoop(test_cfg, test_data, normaliser, len(paths))
    metrics, _ = evaluate(loop, actors, paths, target.paths.burn_in)
    return {"run_dir": str(run_dir), "seed": run_cfg.train.seed, "trained_on": run_cfg.experiment,
            "model": model, "n": target.model.n, "over_paths": over_paths(metrics),
            "per_path_rl": [metrics[p]["rl"]["rmse_vs_truth"] for p in paths]}


def transfer_record(results: dict[str, list[dict]], filters_dir: Path, provenance: dict) -> dict:
    """{target experiment: [transfer_run of every seed]} -> the record: per target the RL vs truth
    (mean over seeds of the test-set mean), the stored filter, copy-obs, the env's own filter
    (enkf_replica) and the target's best classical filter where its record exists."""
    out = {"targets": {}, "provenance": provenance}
    for target, runs in results.items():
        def mean_of(actor, key="rmse_vs_truth"):
            vals = [r["over_paths"][actor][key]["mean"] for r in runs if actor in r["over_paths"]]
            return {"mean": float(np.mean(vals)), "std": float(np.std(vals))} if vals else None
        entry = {"n": runs[0]["n"], "seeds": [r["seed"] for r in runs], "trained_on": runs[0]["trained_on"],
                 "rl": mean_of("rl"), "rl_rmse_norm_vs_enkf": mean_of("rl", "rmse_norm_vs_enkf"),
                 "copy_obs": mean_of("copy_obs"), "env_filter": mean_of("enkf_replica"),
                 "stored_filter": mean_of("enkf"),
                 "cycles_completed": int(min(r["over_paths"]["rl"]["cycles_completed"] for r in runs)),
                 "per_seed": [{k: r[k] for k in ("seed", "run_dir", "model", "per_path_rl")} |
                              {"rl": r["over_paths"]["rl"]["rmse_vs_truth"]["mean"]} for r in runs]}
        f = Path(filters_dir) / f"{target}.json"
        if f.exists():
            best = json.loads(f.read_text())["best"]
            entry["best_filter"] = best
            entry["ratio_to_best_filter"] = entry["rl"]["mean"] / best["rmse_vs_truth"]["mean"]
        entry["ratio_to_stored_filter"] = entry["rl"]["mean"] / entry["stored_filter"]["mean"]
        out["targets"][target] = entry
    return out


def markdown_table(record: dict) -> str:
    """One row per target ring."""
    src = record["source"]
    setting = "" if src["study"] is None else f" ({src['study']}/{src['variant']})"
    lines = [f"The {src['experiment']} pointwise agent{setting}, unchanged, on other rings: test set, RMSE vs truth",
             "| experiment | n | seeds | RL | copy obs | stored filter | env's filter | best filter | RL ÷ best | RL ÷ stored |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for target, e in record["targets"].items():
        best = e.get("best_filter")
        lines.append(
            f"| {target} | {e['n']} | {len(e['seeds'])} | {e['rl']['mean']:.4f} | {e['copy_obs']['mean']:.4f} | "
            f"{e['stored_filter']['mean']:.4f} | {e['env_filter']['mean']:.4f} | "
            f"{'not measured' if best is None else format(best['rmse_vs_truth']['mean'], '.4f')} | "
            f"{'' if best is None else format(e['ratio_to_best_filter'], '.2f')} | {e['ratio_to_stored_filter']:.2f} |")
    return "\n".join(lines)
