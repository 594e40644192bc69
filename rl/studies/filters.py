"""Classical filters of an experiment's ensemble on its test split: `enkfrl filters --exp E`.

Every setting of config.yaml's filters grid for E (method x inflation stage x inflation, and
loc_radius for the LETKF) is one Ray Tune trial: the experiment's filter with those four keys
replaced runs on the test split's truth, observations and initial ensembles (enkf/skill.py). A
finished trial writes logs/filters/<E>/<setting>.json at once; a rerun skips every trial whose
record holds the same DA settings (the RL sections do not change a filter). The table of all settings, the best and the stored filter
(the test split's own reference runs, paths.h5) goes to logs/filters/<E>.json, or with --record to
results/filters/<E>.json (the results format of docs/design.md: "Classical anchors").

The best setting: the lowest mean RMSE vs truth over the paths among the settings with no diverged
path (a diverged path: its analysis worse than the observations, or the ensemble blew up); if every
setting diverges somewhere, the lowest mean among those that stayed finite.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enkf import datafiles
from enkf.config import DAConfig, hash_of
from enkf.io import DataError, atomic_write_json, provenance
from rl.config import FilterSetting, filter_grid, load_config, load_filter_study, load_sweep

RESULTS_DIR = Path("results/filters")
LOGS_DIR = Path("logs/filters")


def _mean_std(values: np.ndarray) -> dict:
    """mean and std over paths; null when a path has no finite value."""
    if not np.all(np.isfinite(values)):
        return {"mean": None, "std": None}
    return {"mean": float(values.mean()), "std": float(values.std())}


def da_settings(cfg) -> dict:
    """The DA sections of a config (enkf/config.py's DAConfig: seed, model, obs, filter, spinup,
    paths, test): all a filter's skill on the test split depends on."""
    d = cfg.to_dict()
    return {f.name: d[f.name] for f in dataclasses.fields(DAConfig)}


def setting_hash(setting: FilterSetting) -> str:
    return hash_of(da_settings(setting.cfg))


def study_config(config_path: Path, experiment: str) -> dict:
    """What the table depends on: the experiment's DA settings and its filters grid."""
    return {"experiment": da_settings(load_config(config_path, experiment)),
            "grid": filter_grid(config_path, experiment)}


# ---- one trial --------------------------------------------------------------------------------
def measure(setting: FilterSetting, data: dict) -> dict:
    """The setting's filter on the test split data: RMSE vs truth per path and summarised."""
    from enkf.config import test_split
    from enkf.skill import filter_skill
    from enkf.system import System
    scfg = test_split(setting.cfg)
    out = filter_skill(System.from_config(scfg), data, scfg.paths.burn_in, setting.cfg.train.block_columns)
    return {**setting.summary(), "rmse_vs_truth": _mean_std(out["rmse_vs_truth"]),
            "diverged_paths": int(out["diverged"].sum()), "blown_up_paths": int((~out["finite"]).sum()),
            "per_path": [None if not math.isfinite(v) else float(v) for v in out["rmse_vs_truth"]]}


@dataclass(frozen=True)
class FiltersJob:
    cfg: object
    """The experiment's config: the test split's data were made with it."""
    settings: list[FilterSetting]
    data_dir: Path
    records_dir: Path
    cpus: int
    command: str


def record_path(records_dir: Path, setting: FilterSetting) -> Path:
    return Path(records_dir) / f"{setting.name}.json"


def finished_record(path: Path, setting: FilterSetting) -> dict | None:
    """The trial record at path if it ran this setting's resolved config, else None."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("config_hash") == setting_hash(setting) else None


def read_test_data(cfg, data_dir: Path) -> dict:
    """The test split's arrays (data/<E>/test_paths.h5), refused when stale for cfg."""
    _, _, data = datafiles.read(cfg, data_dir, "test")
    return data


def filters_trial(config: dict, job: FiltersJob) -> None:
    """One Tune trial: measure one setting, write its record at once."""
    from ray import tune
    from rl.studies.sweep import limit_threads
    setting = job.settings[config["index"]]
    limit_threads(job.cpus)
    t0 = time.perf_counter()
    result = measure(setting, read_test_data(job.cfg, job.data_dir))
    wall = time.perf_counter() - t0
    atomic_write_json(record_path(job.records_dir, setting),
                      {**result, "config_hash": setting_hash(setting), "wall_s": wall, "command": job.command})
    tune.report({"wall_s": wall})


# ---- the study ----------------------------------------------------------------------------------
def run_filters(config_path: Path, experiment: str, data_root: Path, command: str, record: bool = False,
                address: str | None = None, max_concurrent: int | None = None, num_cpus: int | None = None,
                echo=print) -> Path:
    """Every setting of the experiment's filters grid without a finished trial record, on Ray;
    then the table. Returns its path (results/filters/<E>.json with record, else logs/filters/)."""
    from rl.studies.sweep import _check_resources, connect, run_trials
    t0 = time.perf_counter()
    cfg = load_config(config_path, experiment)
    data_dir = datafiles.experiment_dir(data_root, cfg)
    stored = read_test_data(cfg, data_dir)  # fails at once, in one line, when the test split is missing
    settings = load_filter_study(config_path, experiment)
    records_dir = (LOGS_DIR / experiment).resolve()
    pending = [s for s in settings if finished_record(record_path(records_dir, s), s) is None]
    echo(f"filters {experiment}: {len(settings)} settings on the test split ({cfg.test.n_paths} paths x "
         f"{cfg.paths.n_cycles} cycles, burn-in {cfg.paths.burn_in}); {len(settings) - len(pending)} recorded, "
         f"{len(pending)} to run")
    if pending:
        sweep = load_sweep(config_path)
        resources = connect(address, sweep.cpus_per_trial, num_cpus)
        _check_resources(resources, sweep.cpus_per_trial, 0)
        limit = sweep.max_concurrent if max_concurrent is None else max_concurrent
        job = FiltersJob(cfg, pending, data_dir.resolve(), records_dir, sweep.cpus_per_trial, command)

        def done(i):
            rec = json.loads(record_path(records_dir, pending[i]).read_text())
            m = rec["rmse_vs_truth"]["mean"]
            return (f"{pending[i].name} ({rec['wall_s']:.1f} s): RMSE vs truth "
                    f"{'blew up' if m is None else f'{m:.4f}'}, diverged paths {rec['diverged_paths']}")

        from ray import tune
        failed = run_trials(tune.with_parameters(filters_trial, job=job), [s.name for s in pending],
                            sweep, limit, (Path(sweep.trials_dir) / "filters" / experiment).resolve(), echo, done)
        if failed:
            raise DataError(f"{len(failed)} of {len(pending)} trials failed (rerun the same command to run "
                            f"only the unfinished ones): " + "; ".join(failed))
    table = filters_table(config_path, experiment, settings, records_dir, stored, command, time.perf_counter() - t0)
    out = atomic_write_json(((RESULTS_DIR if record else LOGS_DIR) / f"{experiment}.json").resolve(), table)
    echo(markdown_table(table))
    return out


def filters_table(config_path: Path, experiment: str, settings: list[FilterSetting], records_dir: Path,
                  stored: dict, command: str, wall_s: float) -> dict:
    """results/filters/<E>.json from the trial records (docs/design.md: results format)."""
    cfg = load_config(config_path, experiment)
    rows = []
    for s in settings:
        rec = finished_record(record_path(records_dir, s), s)
        if rec is None:
            raise DataError(f"{record_path(records_dir, s)}: no finished record of this setting: "
                            f"run `enkfrl filters --exp {experiment}`")
        rows.append({k: rec[k] for k in ("method", "inflation", "inflation_stage", "loc_radius", "rmse_vs_truth",
                                         "diverged_paths", "blown_up_paths", "wall_s")})
    burn_in = cfg.paths.burn_in
    stored_per_path = stored["analysis_rmse"][:, burn_in:].mean(axis=1)
    obs_per_path = stored["obs_rmse"][:, burn_in:].mean(axis=1)
    f = cfg.filter
    study = study_config(config_path, experiment)
    return {
        "experiment": experiment, "headline_on": "test",
        "test": {"n_paths": cfg.test.n_paths, "spinup_seed": cfg.test.seed},
        "n_ens": f.n_ens, "n_cycles": cfg.paths.n_cycles, "burn_in": burn_in,
        "filters": rows, "best": best_of(rows),
        "stored": {"method": f.method, "inflation": f.inflation, "inflation_stage": f.inflation_stage,
                   "loc_radius": f.loc_radius, "rmse_vs_truth": _mean_std(stored_per_path),
                   "diverged_paths": int(np.sum(stored_per_path > obs_per_path))},
        "obs_rmse": _mean_std(obs_per_path),
        "provenance": dict(provenance(study, hash_of(study), command, wall_s),
                           trials_wall_s=sum(r["wall_s"] for r in rows)),
    }


def best_of(rows: list[dict]) -> dict:
    finite = [r for r in rows if r["rmse_vs_truth"]["mean"] is not None]
    if not finite:
        raise DataError("every filter setting blew up: no best setting")
    clean = [r for r in finite if r["diverged_paths"] == 0] or finite
    best = min(clean, key=lambda r: r["rmse_vs_truth"]["mean"])
    return {k: best[k] for k in ("method", "inflation", "inflation_stage", "loc_radius", "rmse_vs_truth",
                                 "diverged_paths")}


def markdown_table(table: dict) -> str:
    """The table, one row per setting, best first."""
    def fmt(r):
        m = r["rmse_vs_truth"]
        rmse = "blew up" if m["mean"] is None else f"{m['mean']:.4f} ± {m['std']:.4f}"
        loc = "" if r.get("loc_radius") is None else f"{r['loc_radius']:g}"
        return f"| {r['method']} | {r['inflation_stage']} | {r['inflation']:g} | {loc} | {rmse} | {r['diverged_paths']} |"
    rows = sorted(table["filters"], key=lambda r: (r["rmse_vs_truth"]["mean"] is None, r["rmse_vs_truth"]["mean"] or 0))
    s = table["stored"]
    lines = [f"{table['experiment']}: classical filters on the test split ({table['test']['n_paths']} paths, "
             f"N = {table['n_ens']}), analysis RMSE vs truth after {table['burn_in']} cycles",
             "| method | inflation stage | inflation | loc_radius | RMSE vs truth | diverged paths |",
             "|---|---|---|---|---|---|"] + [fmt(r) for r in rows]
    lines.append(f"stored ({s['method']}, {s['inflation_stage']} {s['inflation']:g}): "
                 f"{s['rmse_vs_truth']['mean']:.4f} ± {s['rmse_vs_truth']['std']:.4f}")
    return "\n".join(lines)
