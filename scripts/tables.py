"""Print the readme's result tables from the JSON under results/ (nothing is typed by hand).

    python scripts/tables.py [fit|data|ablations|bench|<study> ...]   (default: data fit ablations)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rl.ablate import markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "results"


def fit() -> str:
    rows = ["| experiment | policy | cycles completed | RMSE_norm vs stored EnKF xa | RMSE vs truth |",
            "|---|---|---|---|---|"]
    checks = []
    for f in sorted((RESULTS / "fit").glob("*.json")):
        r = json.loads(f.read_text())
        for name in ("rl", "supervised", "copy_obs", "no_da", "enkf_replica"):
            if name in r:
                m = r[name]
                rows.append(f"| {r['experiment']} | {name} | {m['cycles_completed']} / {r['cycles']} | "
                            f"{m['rmse_norm_vs_enkf']:.4f} | {m['rmse_vs_truth']:.4f} |")
        rows.append(f"| {r['experiment']} | enkf (stored) | {r['cycles']} / {r['cycles']} | 0 | "
                    f"{r['enkf']['rmse_vs_truth']:.4f} |")
        if "per_seed" in r:  # rl/report.py's record over seeds: test-set means, checks on the mean
            walls = [s["train_wall_s"] for s in r["per_seed"]]
            checks.append(f"- {r['experiment']} (mean over the {r['test']['n_paths']} test paths and seeds "
                          f"{', '.join(map(str, r['seeds']))}): PPO {r['train_steps']:,} steps in "
                          f"{sum(walls) / len(walls) / 60:.1f} min per seed; "
                          + ", ".join(f"{k} {'yes' if v['mean'] else 'NO'} ({v['seeds_passing']}/{v['of_seeds']} seeds)"
                                      for k, v in r["checks"].items()))
            continue
        checks.append(f"- {r['experiment']}: PPO {r['train_steps']:,} steps in {r['train_wall_s'] / 60:.0f} min, "
                      f"behaviour cloning {r['pretrain_epochs']} epochs in {r['pretrain_wall_s'] / 60:.0f} min; "
                      + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["checks"].items()))
    return "\n".join(rows + [""] + checks)


def data() -> str:
    rows = ["| experiment | data | paths x cycles | forecast RMSE | analysis RMSE | observation RMSE | precompute wall |",
            "|---|---|---|---|---|---|---|"]
    records = [json.loads(f.read_text()) for f in (RESULTS / "data").glob("*.json")]
    for r in sorted(records, key=lambda r: (r["experiment"], r.get("split", "train") != "train")):
        cell = lambda k: f"{r[k]['mean']:.3f} ± {r[k]['std_over_paths']:.3f}"
        rows.append(f"| {r['experiment']} | {r.get('split', 'train')} | {r['n_paths']} x {r['n_cycles']} | "
                    f"{cell('forecast_rmse')} | {cell('analysis_rmse')} | {cell('obs_rmse')} | {r['wall_s']:.0f} s |")
    return "\n".join(rows)


# the columns the readme shows per study (all of them are in the JSON)
COLUMNS = {
    "enkf_inflation": ["forecast_rmse", "analysis_rmse", "obs_rmse"],
    "enkf_variants": ["forecast_rmse", "analysis_rmse", "obs_rmse"],
    "published_l96": ["analysis_rmse", "analysis_rmse_median", "diverged_paths", "paths"],
    "published_l63": ["analysis_rmse", "analysis_rmse_median", "diverged_paths", "paths"],
    "bounds": ["forecast_mean_outside_1", "forecast_mean_outside_2", "forecast_mean_outside_3",
               "obs_outside_1", "obs_outside_3", "analysis_mean_outside_1", "innovation_outside_1",
               "spread_outside_1", "copy_obs_cycles_completed", "no_da_cycles_completed"],
    "features": ["supervised_rmse_norm_vs_enkf", "supervised_rmse_vs_truth", "clone_heldout_rmse",
                 "clone_wall_s"],
    "architecture": ["supervised_rmse_norm_vs_enkf", "supervised_rmse_vs_truth", "clone_heldout_rmse",
                     "clone_wall_s"],
    "agent_kind": ["supervised_rmse_norm_vs_enkf", "rl_rmse_norm_vs_enkf", "rl_rmse_vs_truth",
                   "clone_wall_s", "ppo_steps_per_s"],
    "ppo_settings": ["supervised_rmse_norm_vs_enkf", "rl_rmse_norm_vs_enkf", "rl_rmse_vs_truth",
                     "rl_cycles_completed"],
    "l63_exploration": ["log_std_init", "supervised_rmse_norm_vs_enkf", "rl_rmse_norm_vs_enkf",
                        "supervised_rmse_vs_truth", "rl_rmse_vs_truth", "rl_cycles_completed"],
}


def ablation(name: str) -> str:
    doc = json.loads((RESULTS / "ablations" / f"{name}.json").read_text())
    return "\n".join([f"*{doc['question']}* — `{doc['command']}`", "",
                      markdown_table(doc, COLUMNS.get(name))])


def ablations() -> str:
    return "\n\n".join(ablation(f.stem) for f in sorted((RESULTS / "ablations").glob("*.json")))


def bench() -> str:
    b = json.loads((RESULTS / "bench.json").read_text())
    k, rl = b["kernels"], b["rl"]
    rows = ["| measurement (`enkfrl bench`, one run, 2 cores) | ours | plain numpy / upstream | ratio |",
            "|---|---|---|---|"]
    for key, label in [("single", "L96 RK4, one trajectory, n=20 (steps/s)"),
                       ("ensemble", "L96 RK4, 20 members + truth, n=20 (ensemble steps/s: all 21 advance one step)")]:
        r = k[key]
        rows.append(f"| {label} | {r['numba_steps_per_s']:,.0f} | {r['numpy_steps_per_s']:,.0f} | "
                    f"{r['numba_steps_per_s'] / r['numpy_steps_per_s']:.0f}x |")
    r = k["enkf_sakov2008"]
    rows.append(f"| EnKF cycles on L96_sakov2008, N=40 (cycles/s) | {r['numba_cycles_per_s']:,.0f} | "
                f"{r['numpy_cycles_per_s']:,.0f} | {r['numba_cycles_per_s'] / r['numpy_cycles_per_s']:.1f}x |")
    r = k["spinup"]
    rows.append(f"| L96_1 spin-up, 1,000,000 steps (s) | {r['wall_s']:.2f} | {r['numpy_wall_s_extrapolated']:.0f} "
                f"(extrapolated) | {r['numpy_wall_s_extrapolated'] / r['wall_s']:.0f}x |")
    r = k["precompute"]
    rows.append(f"| L96_1 precompute, 100 paths x 1000 cycles, {r['target_workers']} processes (s) | "
                f"{r['wall_s_extrapolated']:.0f} (extrapolated from {r['paths']} paths) | | |")
    rows.append(f"| L96_1 closed-loop env.step, one process (steps/s) | {rl['env_steps_per_s']:,.0f} | | |")
    rows.append(f"| L96_1 PPO training, {rl['ppo']['agent']} agent, 2 envs (steps/s) | {rl['ppo']['steps_per_s']:,.0f} | | "
                f"{rl['ppo']['env_step_share']:.0%} of wall time in env.step |")
    for exp in ("L96_1", "smoke"):
        r = rl[f"recurrent_{exp}"]
        rows.append(f"| RecurrentPPO, LSTM 256, 4 envs, {exp} (steps/s) | {r['ours_steps_per_s']:,.0f} | "
                    f"{r['upstream_steps_per_s']:,.0f} | {r['ratio']:.1f}x |")
    return "\n".join(rows)


def ray_study() -> str:
    """The study run one trial at a time vs 2 at once on Ray (results/bench.json: ray_study)."""
    r = json.loads((RESULTS / "bench.json").read_text())["ray_study"]
    s, p = r["serial"], r["ray_2_concurrent"]
    load = lambda m: f"{m['load_avg_1_5_15_before'][0]:.1f} before, {m['load_avg_1_5_15_after'][0]:.1f} after"
    rows = ["| mode (`scripts/bench_ray_study.py`) | wall time | trials | sum of trial wall times | 1-min load average |",
            "|---|---|---|---|---|",
            f"| one trial at a time (`--max-concurrent 1`) | {s['wall_s']:.0f} s | {s['trials']} | "
            f"{s['trials_wall_s']:.0f} s | {load(s)} |",
            f"| 2 at once (`--max-concurrent 2`) | {p['wall_s']:.0f} s | {p['trials']} | "
            f"{p['trials_wall_s']:.0f} s | {load(p)} |"]
    text = (f"The `{r['question']}` study ({r['measure']}, {s['trials']} trials of {r['cpus_per_trial']} CPU) on "
            f"this {r['cores']}-core machine: {r['speedup']:.2f}x faster with 2 trials at once, "
            f"{'the same' if r['same_results'] else 'DIFFERENT'} results"
            + (" (other jobs shared the machine during both runs, see the load averages)." if r["machine_shared"] else "."))
    out = "\n".join(rows) + "\n\n" + text
    if "install" in r:
        i = r["install"]
        out += (f" Installing `ray[tune]=={i['ray_version']}` into an empty venv (no pip cache) took "
                f"{i['pip_install_wall_s']:.0f} s and {i['venv_mb']:.0f} MB; `import ray` takes "
                f"{i['import_s']:.1f} s and a local `ray.init` {i['init_s']:.1f} s.")
    return out


if __name__ == "__main__":
    parts = sys.argv[1:] or ["data", "fit", "ablations"]
    for p in parts:
        table = {"fit": fit, "data": data, "ablations": ablations, "bench": bench, "ray_study": ray_study}.get(p)
        print(table() if table else ablation(p))
        print()
