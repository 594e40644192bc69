"""Beyond imitation: RL analyses measured against the best classical filter of the same ensemble.

A `beyond_<E>` study (config.yaml, `measure: train`) trains the pointwise agent without imitating
the stored EnKF, one variant per question:

    truth_stored       reward vs the truth, inside the stored filter's ensemble
    truth_tuned        the same inside the tuned ensemble (env.ensemble_filter: the best global filter)
    next_obs           no truth anywhere in training: the next forecast's fit to the next observations
    correlation_tuned  truth_tuned with the ensemble's local correlations as a feature
    ceiling            the same network regressed on the truth from the same features (pretrain.target
                       truth): its cloned ("supervised") policy is the features' information ceiling;
                       PPO with the truth reward then fine-tunes it
    ceiling_tuned      the same inside the tuned ensemble (along the tuned filter's own runs)
    sac_tuned          truth_tuned's env and reward learnt by SB3's off-policy SAC (train.algo sac,
    td3_tuned          offpolicy:) or TD3 instead of PPO: the same budget, seed and network

`enkfrl beyond --study S` reads the newest evaluated run of every (variant, seed) under logs/<E>/
(rl/training/runs.py: run.json) and the experiment's classical filters (results/filters/<E>.json,
`enkfrl filters --record`), and writes one record, logs/beyond/<E>.json (--record:
results/beyond/<E>.json): per variant the test-set RMSE vs truth of the RL analysis (mean over
seeds of the test-set mean; per seed with its run, model and data), and the headline ratios

    RL vs truth / best classical filter of the same ensemble   (goal <= 1.0, milestone <= 1.2)
    RL vs truth / the stored EnKF                              (milestone <= 0.8)

over the RL variants (the ceiling's cloned policy is not RL and is reported beside them). Beside
the figure of every variant's learning curve, the learners' figure puts PPO (truth_tuned), SAC and
TD3 on one axis of path-steps (rl/studies/plots.py plot_learner_curves).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from enkf.io import DataError, provenance
from enkf.config import hash_of, result_hash
from rl.config import load_ablation
from rl.studies.report import fit_record
from rl.training.runs import select_runs

VARIANT_ORDER = ("truth_stored", "truth_tuned", "next_obs", "correlation_tuned", "ceiling", "ceiling_tuned",
                 "sac_tuned", "td3_tuned")
LEARNER_VARIANTS = ("truth_tuned", "sac_tuned", "td3_tuned")
"""One env and reward (the truth, inside the tuned ensemble), learnt by PPO, SAC and TD3."""
NOT_RL = ("ceiling", "ceiling_tuned")
"""Variants whose headline number is a supervised map, not an RL analysis."""


def read_filters(path: Path, experiment: str) -> dict:
    """The experiment's classical filters record (results/filters/<E>.json)."""
    try:
        rec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found: run `enkfrl filters --exp {experiment} --record` first") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e})") from None
    for key in ("best", "stored", "filters"):
        if key not in rec:
            raise DataError(f"{path}: no {key!r} (not a filters record)")
    if rec.get("experiment") != experiment:
        raise DataError(f"{path} is the record of {rec.get('experiment')!r}, not {experiment!r}")
    return rec


def best_global(filters: dict) -> dict:
    """The best setting without localisation (EnKF or ETKF): what the tuned ensemble runs."""
    rows = [r for r in filters["filters"] if r["method"] != "letkf" and r["rmse_vs_truth"]["mean"] is not None
            and r["diverged_paths"] == 0]
    if not rows:
        raise DataError(f"{filters['experiment']}: no global filter setting without diverged paths")
    best = min(rows, key=lambda r: r["rmse_vs_truth"]["mean"])
    return {k: best[k] for k in ("method", "inflation", "inflation_stage", "loc_radius", "rmse_vs_truth")}


def study_config(study: str, variant_configs: dict[str, dict]) -> dict:
    """What a beyond record depends on: the study and the config hash (less the keys that do not
    change results) of each variant's resolved run config, its lowest seed's (as the fit record keeps
    it; the whole config is in each fit record's provenance)."""
    return {"study": study, "variants": {v: result_hash(c) for v, c in variant_configs.items()}}


def variant_entry(fit: dict) -> dict:
    """The few numbers of a variant's fit record the table shows."""
    cfg = fit["provenance"]["config"]
    out = {"algo": cfg["train"].get("algo", "ppo"), "reward_target": fit["reward_target"], "ensemble_filter": cfg["env"]["ensemble_filter"],
           "features": cfg["env"]["features"], "pretrain": cfg["pretrain"], "seeds": fit["seeds"],
           "train_steps": fit["train_steps"], "path_steps_per_s": fit["path_steps_per_s"],
           "active_paths_at_end": fit["active_paths_at_end"], "of_training_paths": fit["of_training_paths"],
           "cycles_completed": fit["cycles_completed"],
           "rl": fit["test"]["rl"]["rmse_vs_truth"],
           "per_seed_rl": [s["test"]["rl"]["rmse_vs_truth"] for s in fit["per_seed"]]}
    if "supervised" in fit["test"]:
        out["supervised"] = fit["test"]["supervised"]["rmse_vs_truth"]
    return out


def beyond_record(study: str, config_path: Path, log_root: Path, filters_path: Path, command: str) -> dict:
    """results/beyond/<E>.json from the evaluated runs of every variant of `study` (one experiment)."""
    meta, runs = load_ablation(config_path, study)
    if meta["measure"] != "train":
        raise DataError(f"--study {study}: measure {meta['measure']} is not a training study")
    experiments = sorted({r.experiment for r in runs})
    if len(experiments) != 1:
        raise DataError(f"--study {study}: a beyond study has one experiment, got {experiments}")
    experiment = experiments[0]
    variants = list(dict.fromkeys(r.variant for r in runs))
    filters = read_filters(filters_path, experiment)
    best, glob, stored = filters["best"], best_global(filters), filters["stored"]
    entries, fits, missing = {}, {}, []
    for v in variants:
        found = select_runs(log_root, experiment, study, v, evaluated=True, newest_per_seed=True)
        if not found:
            missing.append(v)
            continue
        fit = fit_record([d for d, _ in found], "scratch", command, 0.0)
        fits[v], entries[v] = fit, variant_entry(fit)
        for k, ref in (("ratio_to_best_filter", best), ("ratio_to_stored_filter", stored)):
            entries[v][k] = entries[v]["rl"]["mean"] / ref["rmse_vs_truth"]["mean"]
        if "supervised" in entries[v]:
            entries[v]["supervised_ratio_to_best_filter"] = (entries[v]["supervised"]["mean"]
                                                             / best["rmse_vs_truth"]["mean"])
    if not entries:
        raise DataError(f"--study {study}: no evaluated runs of any variant under {log_root / experiment}: "
                        f"train them (`enkfrl train --exp {experiment} --study {study} --variant V`) and evaluate")
    rl_variants = [v for v in entries if v not in NOT_RL]
    headline = None
    if rl_variants:
        top = min(rl_variants, key=lambda v: entries[v]["rl"]["mean"])
        r_best, r_stored = entries[top]["ratio_to_best_filter"], entries[top]["ratio_to_stored_filter"]
        headline = {"best_rl_variant": top, "rl_vs_truth": entries[top]["rl"],
                    "ratio_to_best_filter": r_best, "ratio_to_stored_filter": r_stored,
                    "goal_at_most_1.0_best_filter": r_best <= 1.0, "milestone_at_most_1.2_best_filter": r_best <= 1.2,
                    "milestone_at_most_0.8_stored_filter": r_stored <= 0.8}
        if "next_obs" in entries:
            headline["no_truth_below_stored_filter"] = entries["next_obs"]["ratio_to_stored_filter"] < 1.0
    any_fit = next(iter(fits.values()))
    cfg_study = study_config(study, {v: fits[v]["provenance"]["config"] for v in fits})
    return {
        "experiment": experiment, "study": study, "question": meta["question"], "headline_on": "test",
        "test": any_fit["test"] and {"n_paths": any_fit["test"]["n_paths"], "spinup_seed": any_fit["test"]["spinup_seed"]},
        "burn_in": any_fit["burn_in"], "cycles": any_fit["cycles"],
        "filters": {"best": best, "best_global": glob, "stored": stored, "from": str(filters_path),
                    "filters_config_hash": filters["provenance"]["config_hash"]},
        "variants": {v: entries[v] for v in VARIANT_ORDER + tuple(variants) if v in entries},
        "not_run": missing,
        "headline": headline,
        "fit_records": fits,
        "provenance": provenance(cfg_study, hash_of(cfg_study), command, 0.0),
    }


def markdown_table(record: dict) -> str:
    """One row per variant: RL (and the ceiling's supervised map) vs truth and the two ratios."""
    f = record["filters"]

    def filt(r):
        loc = "" if r.get("loc_radius") is None else f", radius {r['loc_radius']:g}"
        return f"{r['method'].upper()} {r['inflation_stage']} {r['inflation']:g}{loc}"
    lines = [f"{record['experiment']}, test set ({record['test']['n_paths']} paths), RMSE vs truth after "
             f"{record['burn_in']} cycles; best filter {filt(f['best'])} {f['best']['rmse_vs_truth']['mean']:.4f}, "
             f"stored {filt(f['stored'])} {f['stored']['rmse_vs_truth']['mean']:.4f}",
             "| variant | reward | ensemble | path-steps | seeds | RL vs truth (± over seeds) | ÷ best filter | ÷ stored filter |",
             "|---|---|---|---|---|---|---|---|"]
    def pm(m, seeds):  # the mean over seeds, and their spread where there are several
        return f"{m['mean']:.4f}" + (f" ± {m['std']:.4f}" if len(seeds) > 1 else "")
    for v, e in record["variants"].items():
        ens = "stored" if e["ensemble_filter"] is None else f"tuned {filt(e['ensemble_filter'])}"
        lines.append(f"| {v} | {e['reward_target']} | {ens} | {e['train_steps']:,} | {len(e['seeds'])} | "
                     f"{pm(e['rl'], e['seeds'])} | {e['ratio_to_best_filter']:.2f} | "
                     f"{e['ratio_to_stored_filter']:.2f} |")
        if "supervised" in e:
            lines.append(f"| {v}: the cloned map alone | (regression on the truth) | {ens} | 0 | {len(e['seeds'])} | "
                         f"{pm(e['supervised'], e['seeds'])} | "
                         f"{e['supervised_ratio_to_best_filter']:.2f} | "
                         f"{e['supervised']['mean'] / f['stored']['rmse_vs_truth']['mean']:.2f} |")
    return "\n".join(lines)
