"""Fit records: the evaluated runs of one experiment and setting (one run folder per training
seed) -> one results JSON in the shape of the results format of docs/design.md.

Per seed: the eval path (path 0 of the training data) and the mean over the independent test
paths (a spin-up of its own), cycle means after paths.burn_in, from the run's metrics.json
(`enkfrl evaluate`). The headline figures (top-level actor entries) are the test-set means,
averaged over the seeds; every acceptance check is evaluated on that mean and counted per seed.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from rl.config import Config, from_dict, with_added_settings
from enkf.config import NO_RESULT_EFFECT, read_settings, stale_keys
from enkf.io import DataError

ACTORS = ("rl", "supervised", "copy_obs", "no_da", "enkf_replica")


def _read_json(path: Path) -> dict:
    """A JSON mapping, or a one-line DataError naming the file."""
    if not Path(path).is_file():
        raise DataError(f"{path} not found")
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not readable JSON ({e})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path} is not a JSON mapping")
    return doc


def read_fit_record(path: Path) -> dict:
    """A fit record (results/fit*/...json) with what the learning-curve figure reads, or a
    one-line DataError."""
    rec = _read_json(path)
    seeds = rec.get("per_seed")
    if not isinstance(seeds, list) or not all(isinstance(s, dict) for s in seeds) \
            or not isinstance(rec.get("eval_path"), dict):
        raise DataError(f"{path} is not a fit record (needs per_seed, a list of seeds, and eval_path): "
                        f"write it with `enkfrl report`")
    for s in seeds:
        curve = s.get("eval_curve", [])
        if not (isinstance(curve, list) and all(isinstance(c, list) and len(c) == 3 for c in curve)):
            raise DataError(f"{path}: per_seed eval_curve must be a list of [path-steps, RMSE_norm, RMSE] rows")
    return rec


def run_description(run_dir: Path) -> dict:
    """run.json of an evaluated run (rl/training/runs.py): what the run is."""
    from rl.training.runs import read_run_info
    if not Path(run_dir).is_dir():
        raise DataError(f"{run_dir} is not a run folder")
    info = read_run_info(run_dir)
    if info is None:
        raise DataError(f"{run_dir} has no run.json (made before run folders described themselves): "
                        f"`enkfrl train --resume {run_dir}` writes it")
    return info


def select_runs(run_dirs: list[Path]) -> dict:
    """The study, variant and experiment the runs share, by their run.json; runs of different
    settings, or two runs of one seed, are refused."""
    infos = [run_description(d) for d in run_dirs]
    for key in ("experiment", "study", "variant", "agent"):
        values = sorted({str(i[key]) for i in infos})
        if len(values) > 1:
            raise DataError(f"--runs mixes runs of different settings ({key}: {', '.join(values)}): "
                            f"a fit record is over the seeds of one setting")
    seeds = [i["seed"] for i in infos]
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise DataError(f"--runs lists seed {', '.join(map(str, twice))} more than once: one run per seed")
    return {k: infos[0][k] for k in ("experiment", "study", "variant")}


def eval_curve(run_dir: Path) -> list[list[float]]:
    """[[path-steps, RMSE_norm vs stored xa, RMSE vs truth], ...] of the evaluations during
    training on the eval path (TensorBoard's CSV twin, every segment of a resumed run)."""
    import csv
    points = {}
    for f in sorted(Path(run_dir).glob("tb/progress*.csv")):
        for row in csv.DictReader(f.open()):
            if row.get("eval/rmse_vs_enkf"):
                x = row.get("eval/path_steps") or row["time/total_timesteps"]
                points[int(float(x))] = [float(row["eval/rmse_vs_enkf"]), float(row["eval/rmse_vs_truth"])]
    return [[x, *points[x]] for x in sorted(points)]


def run_summary(run_dir: Path) -> dict:
    """One evaluated run folder: its config, training figures and metrics (eval path + test)."""
    from rl.config import load_run_config
    run_dir = Path(run_dir)
    run_description(run_dir)
    cfg = load_run_config(run_dir / "config.yaml")
    metrics = _read_json(run_dir / "metrics.json")
    model = (metrics.get("models") or {}).get("rl")
    if not isinstance(model, dict) or "which" not in model:
        raise DataError(f"{run_dir}/metrics.json does not name the model it evaluated (made before "
                        f"records named their inputs): rerun `enkfrl evaluate --run {run_dir}`")
    if model["which"] != "final":
        raise DataError(f"{run_dir}/metrics.json evaluates the {model['which']} model (chosen on the "
                        f"eval path itself): a fit record needs the final one, `enkfrl evaluate --run {run_dir}`")
    if "test" not in metrics:
        raise DataError(f"{run_dir}/metrics.json has no test set: run `enkfrl evaluate --run {run_dir}` "
                        f"after `enkfrl ensure-data --exp {cfg.experiment}` (the test split)")
    timing = _read_json(run_dir / "timing.json")
    curriculum = _read_json(run_dir / "curriculum_final.json")
    eval_path = str(cfg.paths.eval_path)
    if eval_path not in metrics:
        raise DataError(f"{run_dir}/metrics.json has no evaluation of the eval path {eval_path}: "
                        f"rerun `enkfrl evaluate --run {run_dir}`")
    test_means = {a: {k: (v if k == "cycles_completed" else v["mean"]) for k, v in m.items()}
                  for a, m in metrics["test"]["over_paths"].items()}
    try:
        command = (run_dir / "command.txt").read_text().strip()
    except OSError:
        raise DataError(f"{run_dir}/command.txt not found: the run folder is incomplete") from None
    return {"cfg": cfg, "seed": cfg.train.seed, "run_dir": str(run_dir), "command": command,
            "train_steps": timing["train_steps"], "train_wall_s": timing["train_wall_s"],
            "path_steps_per_s": timing.get("path_steps_per_s"),
            "active_paths_at_end": curriculum["n_active"],
            "eval_path": metrics[eval_path], "test": test_means,
            "test_paths": metrics["test"]["paths"], "test_n_paths": metrics["test"]["n_paths"],
            "test_seed": metrics["test"]["spinup_seed"], "eval_curve": eval_curve(run_dir),
            "models": metrics["models"], "data": metrics.get("data", {})}


def _actor_entry(m: dict) -> dict:
    out = {k: m[k] for k in ("rmse_norm_vs_enkf", "rmse_vs_truth", "cycles_completed") if k in m}
    return out


def _mean_over(values: list[float]) -> dict:
    a = np.array(values, float)
    return {"mean": float(a.mean()), "std": float(a.std())}


def _evaluated_command(r: dict) -> str:
    return f"{r['command']} && enkfrl evaluate --run {r['run_dir']}"


def earlier_seeds(record: dict, setting: dict, cfg: Config, test_paths: list[str], test_seed: int,
                  replacing: dict[int, dict]) -> list[dict]:
    """The seeds of an earlier record of the same setting, as the run summaries fit_record reads,
    without those in `replacing` (seed -> the summary of the new run that takes its place): a record
    grows by seeds without the folders of its earlier runs, which stay named in its per_seed entries
    and its command. The record must be of the same experiment, study and variant, made with the
    same config but for train.seed (keys added to the schema since read as the value earlier runs
    had: rl.config.ADDED_SETTINGS; compared as the config hash compares them, without sections
    the runs do not read and without threads and device), on the same test paths; anything else is refused in one line.
    Each seed's test-path values come from its per_seed entry (per_path_rl). A record made before
    the entries kept them has only the mean over its seeds per test path (test.per_path_rl): each
    kept seed then stands for the mean of the kept seeds there, which is that mean less the replaced
    seeds' values when the replacing runs are the ones the record was made from (reporting the same
    runs again changes nothing); a seed replaced by another run is refused, its values being unknown."""
    for key in ("experiment", "study", "variant"):
        if record.get(key) != setting[key]:
            raise DataError(f"the earlier record is of {key} {record.get(key)}, the runs of {setting[key]}: "
                            f"a record is over the seeds of one setting")
    try:
        theirs = with_added_settings(json.loads(json.dumps(record["provenance"]["config"])))
        per_seed, test = record["per_seed"], record["test"]
        per_path = test["per_path_rl"]
        commands = record["provenance"]["command"].split(" ; ")
    except (KeyError, TypeError):
        raise DataError("the earlier record is not a fit record written by `enkfrl report`") from None
    # what the runs read, as the config hash sees it: without sections a run does not read (a PPO
    # run's offpolicy:, which a record made before that section existed lacks) and without the
    # keys that say how, not what, a run computes (threads, device)
    theirs, ours = read_settings(theirs), read_settings(cfg.to_dict())
    for c in (theirs, ours):
        c["train"].pop("seed", None)
    keys = stale_keys(theirs, ours, ignored=NO_RESULT_EFFECT)
    if keys:
        raise DataError(f"the earlier record's runs were made with another config ({', '.join(keys[:5])} differ): "
                        f"write a new record from runs of this config")
    if (test["n_paths"], test["spinup_seed"]) != (len(test_paths), test_seed):
        raise DataError(f"the earlier record was measured on another test set ({test['n_paths']} paths, spin-up "
                        f"seed {test['spinup_seed']}) than the runs ({len(test_paths)} paths, seed {test_seed})")
    entries = [e for e in per_seed if e["seed"] not in replacing]
    if not entries:
        return []
    if all("per_path_rl" in e for e in entries):
        values = {e["seed"]: e["per_path_rl"] for e in entries}
    else:  # the mean over the record's seeds per test path, less the replaced seeds' values
        gone = [e for e in per_seed if e["seed"] in replacing]
        for e in gone:
            if e["run_dir"] != replacing[e["seed"]]["run_dir"]:
                raise DataError(f"seed {e['seed']} of the earlier record was made by another run ({e['run_dir']}) "
                                f"and the record keeps no test-path values per seed: make the record from all "
                                f"its seeds' runs")
        kept_mean = {k: [(len(per_seed) * per_path[k][i]
                          - sum(replacing[e["seed"]]["test_paths"][p]["rl"][k] for e in gone)) / len(entries)
                         for i, p in enumerate(test_paths)] for k in per_path}
        values = {e["seed"]: kept_mean for e in entries}
    kept = []
    for entry in entries:
        evaluated = f" && enkfrl evaluate --run {entry['run_dir']}"
        made = [c for c in commands if c.endswith(evaluated)]
        if not made:
            raise DataError(f"the earlier record's command does not name how seed {entry['seed']} was made")
        seed_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=entry["seed"]))
        own = values[entry["seed"]]
        kept.append(dict(entry, cfg=seed_cfg, command=made[0][:-len(evaluated)],
                         test=json.loads(json.dumps(entry["test"])),
                         test_n_paths=test["n_paths"], test_seed=test["spinup_seed"],
                         test_paths={p: {"rl": {k: own[k][i] for k in own}} for i, p in enumerate(test_paths)}))
    return kept


def fit_record(run_dirs: list[Path], init: str, command: str, wall_s: float,
               supervised_runs: list[Path] | None = None, earlier: dict | None = None) -> dict:
    """The record of one setting (study and variant from the runs' run.json) over its seeds.
    `supervised_runs`: clone runs whose cloned policy is the supervised reference when these runs
    have none (PPO from scratch). `earlier`: a record of the same setting whose other seeds the
    new record keeps (earlier_seeds), with its supervised reference unless supervised_runs names one."""
    from enkf.io import provenance
    setting = select_runs(run_dirs)
    study, variant = setting["study"], setting["variant"]
    runs = sorted((run_summary(d) for d in run_dirs), key=lambda r: r["seed"])
    test_paths = sorted(runs[0]["test_paths"], key=int)
    kept = earlier_seeds(earlier, setting, runs[0]["cfg"], test_paths, runs[0]["test_seed"],
                         {r["seed"]: r for r in runs}) if earlier else []
    sup_source = None
    if "supervised" not in runs[0]["test"]:
        reference = None
        if supervised_runs:
            select_runs(supervised_runs)
            sup = [run_summary(d) for d in supervised_runs]
            sup_source = [s["run_dir"] for s in sup]
            reference = {"rmse_norm_vs_enkf": float(np.mean([s["test"]["supervised"]["rmse_norm_vs_enkf"] for s in sup])),
                         "rmse_vs_truth": float(np.mean([s["test"]["supervised"]["rmse_vs_truth"] for s in sup]))}
        elif kept and "supervised" in earlier:
            reference = {k: earlier["supervised"][k] for k in ("rmse_norm_vs_enkf", "rmse_vs_truth")}
            sup_source = earlier["supervised"].get("from_runs")
        if reference:
            for r in runs + kept:
                r["test"]["supervised"] = dict(reference)
    runs = sorted(runs + kept, key=lambda r: r["seed"])
    # how every number was made: each run's training and evaluation, then this report
    command = " ; ".join([_evaluated_command(r) for r in runs] + [command])
    cfg: Config = runs[0]["cfg"]
    seeds = [r["seed"] for r in runs]
    actors = [a for a in ACTORS if all(a in r["test"] for r in runs)]

    def mean_test(actor, key):
        return float(np.mean([r["test"][actor][key] for r in runs]))

    record = {
        "experiment": cfg.experiment, "agent": cfg.agent.kind, "point_net": cfg.agent.point_net,
        "init": init, "study": study, "variant": variant, "reward_target": cfg.reward.target,
        "headline_on": "test", "seeds": seeds, "cycles": cfg.paths.n_cycles, "burn_in": cfg.paths.burn_in,
        "train_steps": int(max(r["train_steps"] for r in runs)),
        "path_steps_per_s": float(np.mean([r["path_steps_per_s"] or np.nan for r in runs])),
        "active_paths_at_end": [r["active_paths_at_end"] for r in runs],
        "of_training_paths": cfg.paths.train_paths[1] - cfg.paths.train_paths[0] + 1,
        "cycles_completed": int(min(min(r["test"]["rl"]["cycles_completed"], r["eval_path"]["rl"]["cycles_completed"])
                                    for r in runs)),
    }
    for a in actors:
        record[a] = {"rmse_norm_vs_enkf": mean_test(a, "rmse_norm_vs_enkf"),
                     "rmse_vs_truth": mean_test(a, "rmse_vs_truth")}
        if "cycles_completed" in runs[0]["test"][a]:
            record[a]["cycles_completed"] = int(min(r["test"][a]["cycles_completed"] for r in runs))
    record["enkf"] = {"rmse_vs_truth": mean_test("enkf", "rmse_vs_truth")}
    if sup_source:
        record["supervised"]["from_runs"] = sup_source
    record["eval_path"] = {"path": cfg.paths.eval_path}
    for a in actors + ["enkf"]:
        if all(a in r["eval_path"] for r in runs):
            keys = [k for k in ("rmse_norm_vs_enkf", "rmse_vs_truth") if k in runs[0]["eval_path"][a]]
            record["eval_path"][a] = {k: float(np.mean([r["eval_path"][a][k] for r in runs])) for k in keys}
    record["test"] = {"n_paths": runs[0]["test_n_paths"], "spinup_seed": runs[0]["test_seed"]}
    for a in actors + ["enkf"]:
        record["test"][a] = {k: _mean_over([r["test"][a][k] for r in runs])
                             for k in ("rmse_norm_vs_enkf", "rmse_vs_truth") if k in runs[0]["test"][a]}
    record["test"]["per_path_rl"] = {
        k: [float(np.mean([r["test_paths"][p]["rl"][k] for r in runs])) for p in test_paths]
        for k in ("rmse_norm_vs_enkf", "rmse_vs_truth")}
    record["per_seed"] = [{"seed": r["seed"], "run_dir": r["run_dir"], "train_steps": r["train_steps"],
                           "train_wall_s": r["train_wall_s"], "path_steps_per_s": r["path_steps_per_s"],
                           "active_paths_at_end": r["active_paths_at_end"],
                           "test": {a: _actor_entry(r["test"][a]) for a in actors + ["enkf"]},
                           "per_path_rl": {k: [r["test_paths"][p]["rl"][k] for p in test_paths]
                                           for k in ("rmse_norm_vs_enkf", "rmse_vs_truth")},
                           "eval_path": {a: _actor_entry(r["eval_path"][a]) for a in actors + ["enkf"]
                                         if a in r["eval_path"]},
                           "eval_curve": r["eval_curve"], "models": r["models"], "data": r["data"]}
                          for r in runs]
    record["checks"] = checks(record, runs, cfg, init)
    if init == "clone" and "supervised" in actors:
        gains = [1 - r["test"]["rl"]["rmse_norm_vs_enkf"] / r["test"]["supervised"]["rmse_norm_vs_enkf"]
                 for r in runs]
        record["improvement_over_clone"] = {"per_seed": gains, **_mean_over(gains)}
    record["provenance"] = provenance(cfg.to_dict(), cfg.hash(), command, wall_s)
    return record


def rollout_path_steps(cfg: Config) -> int:
    """Path-steps between two updates, the step of a run's stop: a PPO rollout is n_steps cycles of
    every path the vectorised env steps (train.paths_per_env paths for the pointwise agent,
    train.n_envs envs of one path otherwise); SAC/TD3 update every offpolicy.train_freq cycles."""
    paths = cfg.train.paths_per_env if cfg.agent.kind == "pointwise" else cfg.train.n_envs
    return (cfg.ppo.n_steps if cfg.train.algo == "ppo" else cfg.offpolicy.train_freq) * paths


def checks(record: dict, runs: list[dict], cfg: Config, init: str) -> dict:
    """Every acceptance check on the mean over seeds, and how many seeds pass it alone."""
    n_cycles = cfg.paths.n_cycles

    def rule(name, ok_fn):
        per_seed = [bool(ok_fn(r["test"], r)) for r in runs]
        mean_view = {a: record[a] for a in ACTORS + ("enkf",) if a in record}
        return name, {"mean": bool(ok_fn(mean_view, None)), "seeds_passing": sum(per_seed),
                      "of_seeds": len(per_seed)}

    def completes(t, r):
        if r is None:
            return record["cycles_completed"] == n_cycles
        return t["rl"]["cycles_completed"] == n_cycles and r["eval_path"]["rl"]["cycles_completed"] == n_cycles

    rules = [
        rule("completes_every_path", completes),
        rule("below_copy_obs", lambda t, r: t["rl"]["rmse_norm_vs_enkf"] < t["copy_obs"]["rmse_norm_vs_enkf"]),
        rule("vs_truth_within_1.2x_enkf", lambda t, r: t["rl"]["rmse_vs_truth"] <= 1.2 * t["enkf"]["rmse_vs_truth"]),
        rule("vs_truth_within_1.1x_enkf", lambda t, r: t["rl"]["rmse_vs_truth"] <= 1.1 * t["enkf"]["rmse_vs_truth"]),
        # a budget of 2M path-steps: SB3 ends the rollout that crosses it, so a run passes when it
        # stopped inside that rollout (fewer than one rollout's path-steps past 2M)
        rule("train_steps_within_2M", lambda t, r: (r or record)["train_steps"] < 2_000_000 + rollout_path_steps(cfg)),
    ]
    if all("supervised" in r["test"] for r in runs):
        rules += [
            rule("within_1.25x_supervised",
                 lambda t, r: t["rl"]["rmse_norm_vs_enkf"] <= 1.25 * t["supervised"]["rmse_norm_vs_enkf"]),
            rule("within_1.1x_supervised",
                 lambda t, r: t["rl"]["rmse_norm_vs_enkf"] <= 1.1 * t["supervised"]["rmse_norm_vs_enkf"]),
        ]
        if init == "clone":
            rules.append(rule("below_clone",
                              lambda t, r: t["rl"]["rmse_norm_vs_enkf"] < t["supervised"]["rmse_norm_vs_enkf"]))
    return dict(rules)


def recheck(record: dict, current: Config) -> dict:
    """The record with its checks computed again from what it keeps (its per-seed test and eval-path
    entries, train steps and resolved config), after a check's rule changed: no number is measured
    again; provenance names the commit of the rules (checks_from_commit). A key that says how a run
    executes, not what it computes (NO_RESULT_EFFECT), absent from a record older than the key, is
    read from `current` (the experiment's config now)."""
    from enkf.io import git_state
    theirs = json.loads(json.dumps(record["provenance"]["config"]))
    now = current.to_dict()
    for key in NO_RESULT_EFFECT:
        section, _, name = key.partition(".")
        theirs[section].setdefault(name, now[section][name])
    cfg = from_dict(with_added_settings(theirs))
    out = dict(record, checks=checks(record, record["per_seed"], cfg, record["init"]))
    if "enkf_inflation_sweep" in record:  # a truth-reward record (compare_with_tuned_enkf)
        out["checks"].update(enkf_checks(record))
    if out["checks"] != record["checks"]:
        out["provenance"] = dict(record["provenance"], checks_from_commit=git_state()[0])
    return out


def enkf_inflation_sweep(test_cfg: Config, starts, inflations: list[float], burn_in: int) -> list[dict]:
    """The EnKF of the same ensemble size on the same test paths (same truth, observations and
    perturbation draws: only filter.inflation differs), analysis RMSE vs truth after burn_in,
    mean over the test paths, for each inflation."""
    import dataclasses
    from enkf.precompute import precompute
    out = []
    for infl in inflations:
        cfg = dataclasses.replace(test_cfg, filter=dataclasses.replace(test_cfg.filter, inflation=float(infl)))
        data = precompute(cfg, starts, progress=False)
        per_path = data["analysis_rmse"][:, burn_in:].mean(axis=1)
        out.append({"inflation": float(infl), "rmse_vs_truth": float(per_path.mean()),
                    "rmse_vs_truth_std_over_paths": float(per_path.std())})
    return out


def add_enkf_comparison(record: dict, sweep: list[dict], stored_inflation: float) -> dict:
    """The truth-reward study's answer: RL vs truth against the stored EnKF and the best
    inflation's EnKF on the same test paths (mean over seeds of the test-set mean)."""
    best = min(sweep, key=lambda r: r["rmse_vs_truth"])
    record["enkf_inflation_sweep"] = {"stored_inflation": stored_inflation, "rows": sweep, "best": best}
    record["checks"].update(enkf_checks(record))
    return record


def enkf_checks(record: dict) -> dict:
    """A truth-reward record's checks against the stored EnKF and its best-inflation EnKF."""
    rl, best = record["rl"]["rmse_vs_truth"], record["enkf_inflation_sweep"]["best"]
    seeds = record["per_seed"]
    return {
        "beats_stored_enkf_vs_truth": {
            "mean": rl < record["enkf"]["rmse_vs_truth"],
            "seeds_passing": sum(s["test"]["rl"]["rmse_vs_truth"] < s["test"]["enkf"]["rmse_vs_truth"] for s in seeds),
            "of_seeds": len(seeds)},
        "beats_best_inflation_enkf_vs_truth": {
            "mean": rl < best["rmse_vs_truth"],
            "seeds_passing": sum(s["test"]["rl"]["rmse_vs_truth"] < best["rmse_vs_truth"] for s in seeds),
            "of_seeds": len(seeds)}}


def compare_with_tuned_enkf(record: dict, cfg: Config, test_cfg: Config, starts, config_path) -> dict:
    """A truth-reward record against the EnKF with every inflation of the config's enkf_inflation
    study (and the stored one) on the same test paths."""
    from rl.config import load_ablation
    _, enkf_runs = load_ablation(config_path, "enkf_inflation")
    inflations = sorted({r.cfg.filter.inflation for r in enkf_runs} | {cfg.filter.inflation})
    sweep = enkf_inflation_sweep(test_cfg, starts, inflations, cfg.paths.burn_in)
    return add_enkf_comparison(record, sweep, cfg.filter.inflation)
