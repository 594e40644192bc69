"""The result tables of the generated documents, from the JSON under results/ (nothing is typed by
hand). Each section's table is one function; a section whose records may not exist yet renders
NOT_MEASURED while they are absent.

    python scripts/tables.py [fit|data|ablations|bench|<study> ...]   (default: data fit ablations)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rl.studies.ablate import markdown_table
from rl.studies.bench import SCRATCH_VARIANTS  # the from-scratch variants: benched, then fitted

RESULTS = Path(__file__).resolve().parents[1] / "results"
NOT_MEASURED = "not measured"


ACTOR_ROWS = (("rl", "RL (final policy)"), ("supervised", "supervised (its cloned start)"),
              ("copy_obs", "copy obs"), ("no_da", "no DA"), ("enkf_replica", "EnKF replica"))


def _pm(entry: dict, digits: int) -> str:
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def fit_table(records: list[dict]) -> str:
    """Per record: every actor on the test set (mean ± std over seeds of the test-path means) and on
    the eval path (mean over seeds), then the checks with how many seeds pass them alone."""
    rows = ["| experiment | policy | test set: RMSE_norm vs stored EnKF xa | test set: RMSE vs truth | "
            "path 0: RMSE_norm | path 0: RMSE vs truth |", "|---|---|---|---|---|---|"]
    notes = []
    for r in records:
        t, e = r["test"], r["eval_path"]
        for name, label in ACTOR_ROWS:
            if name in t and "rmse_norm_vs_enkf" in t[name]:
                rows.append(f"| {r['experiment']} | {label} | {_pm(t[name]['rmse_norm_vs_enkf'], 4)} | "
                            f"{_pm(t[name]['rmse_vs_truth'], 4)} | {e[name]['rmse_norm_vs_enkf']:.4f} | "
                            f"{e[name]['rmse_vs_truth']:.4f} |")
        rows.append(f"| {r['experiment']} | EnKF (stored) | 0 | {_pm(t['enkf']['rmse_vs_truth'], 4)} | 0 | "
                    f"{e['enkf']['rmse_vs_truth']:.4f} |")
        seeds = len(r["seeds"])
        speed = f"{r['path_steps_per_s']:.0f} path-steps/s" if r.get("path_steps_per_s") == r.get("path_steps_per_s") else ""
        notes.append(f"- {r['experiment']} ({r['agent']} agent, {r['init']}, seeds {r['seeds']}, "
                     f"{r['train_steps']:,} PPO path-steps each, {speed}; paths active at the end "
                     f"{r['active_paths_at_end']} of {r['of_training_paths']}; worst cycles completed "
                     f"{r['cycles_completed']} / {r['cycles']}): "
                     + ", ".join(f"{k} {'yes' if c['mean'] else 'NO'} ({c['seeds_passing']}/{seeds} seeds)"
                                 for k, c in r["checks"].items()))
    return "\n".join(rows + [""] + notes)


def _records(folder: str, names: list[str] | None = None) -> list[dict]:
    files = sorted((RESULTS / folder).glob("*.json"))
    if names is not None:
        files = [RESULTS / folder / f"{n}.json" for n in names if (RESULTS / folder / f"{n}.json").is_file()]
    return [json.loads(f.read_text()) for f in files]


def fit() -> str:
    """results/fit/<E>.json: the final defaults, over training seeds."""
    return fit_table(_records("fit"))


def headline() -> str:
    """One row per results/fit/<E>.json: the final defaults on the test set, mean ± std over seeds."""
    rows = ["| experiment | agent | RL: RMSE_norm vs EnKF xa | its clone (supervised) | copy obs | "
            "RL: RMSE vs truth | EnKF: RMSE vs truth | seeds |", "|---|---|---|---|---|---|---|---|"]
    for r in _records("fit"):
        t = r["test"]
        rows.append(f"| {r['experiment']} | {r['agent']} | {_pm(t['rl']['rmse_norm_vs_enkf'], 4)} | "
                    f"{_pm(t['supervised']['rmse_norm_vs_enkf'], 4)} | {_pm(t['copy_obs']['rmse_norm_vs_enkf'], 4)} | "
                    f"{_pm(t['rl']['rmse_vs_truth'], 4)} | {_pm(t['enkf']['rmse_vs_truth'], 4)} | {len(r['seeds'])} |")
    return "\n".join(rows) if len(rows) > 2 else NOT_MEASURED


FIT_SCRATCH_VARIANTS = SCRATCH_VARIANTS + ("scratch_1epoch_b1024_linear", "scratch_linear", "scratch_bf16")
"""The from-scratch variants of the pointwise study with a fit row: the bench's (their speeds),
those that only anneal the learning rate (the same speed per path-step as their constant twin) and
scratch_bf16, which with the bench's scratch_p32 takes one of scratch_p32_bf16's changes each (its
L96_3 gap)."""


def fit_pointwise() -> str:
    """Scratch vs cloned pointwise PPO per experiment and from-scratch variant: the test-set figures side by side."""
    rows = ["| experiment | from scratch: RL (variant) | cloned start (supervised) | from the clone: RL | change vs its clone | "
            "copy obs | RL vs truth (scratch / clone) | EnKF vs truth | paths active at the end (scratch / clone) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for exp in ("L96_1", "L96_2", "L96_3"):
        cl = (_records("fit_pointwise", [f"{exp}_clone"]) or [None])[0]
        scs = [(v, r[0]) for v in FIT_SCRATCH_VARIANTS if (r := _records("fit_pointwise", [f"{exp}_{v}"]))] or [(None, None)]
        if not (cl or scs[0][1]):
            continue
        t = lambda r, a, k: _pm(r["test"][a][k], 4) if r and a in r["test"] else "—"  # noqa: E731
        change = (f"{-100 * cl['improvement_over_clone']['mean']:+.1f}% ± {100 * cl['improvement_over_clone']['std']:.1f}% "
                  f"({len(cl['seeds'])} seeds)") if cl and "improvement_over_clone" in cl else "—"
        for variant, sc in scs:
            ref = cl or sc
            label = f"{len(sc['seeds'])} seed, {variant}" if sc else "0 seed"
            rows.append(f"| {exp} | {t(sc, 'rl', 'rmse_norm_vs_enkf')} ({label}) | "
                        f"{t(cl, 'supervised', 'rmse_norm_vs_enkf')} | {t(cl, 'rl', 'rmse_norm_vs_enkf')} | {change} | "
                        f"{t(ref, 'copy_obs', 'rmse_norm_vs_enkf')} | {t(sc, 'rl', 'rmse_vs_truth')} / {t(cl, 'rl', 'rmse_vs_truth')} | "
                        f"{t(ref, 'enkf', 'rmse_vs_truth')} | {sc['active_paths_at_end'] if sc else '—'} / "
                        f"{cl['active_paths_at_end'] if cl else '—'} |")
    notes = []
    for r in _records("fit_pointwise", [f"{e}_{v}" for e in ("L96_1", "L96_2", "L96_3") for v in FIT_SCRATCH_VARIANTS]):
        notes.append(f"- {r['experiment']} {r.get('variant', 'scratch')}, {r['train_steps']:,} path-steps: "
                     + ", ".join(f"{k} {'yes' if c['mean'] else 'NO'}" for k, c in r["checks"].items()))
    return "\n".join(rows + [""] + notes)


LATE_EVALUATIONS = 5
"""How many of a run's last eval-path evaluations show how far its policy still moves at the end."""


def late_movement(curve: list, k: int = LATE_EVALUATIONS) -> float:
    """max ÷ min − 1 of the eval-path RMSE_norm over a run's last k evaluations (eval_curve rows
    [path-steps, RMSE_norm, RMSE vs truth]): the eval path, its draws and the deterministic policy's
    actions leave only the policy's weights to change between evaluations, so this is how far the
    policy still moves at the end of training."""
    values = [row[1] for row in curve[-k:]]
    if len(values) < k:
        raise ValueError(f"an eval curve of {len(values)} evaluations has no last {k}")
    return max(values) / min(values) - 1


def fit_spread() -> str:
    """Per experiment and from-scratch variant: the test-set RMSE_norm ÷ the cloned policy's
    (the clone record's supervised) on the mean over seeds and per seed, beside how far each seed's
    policy still moved over its last LATE_EVALUATIONS evaluations (late_movement)."""
    rows = [f"| experiment | variant | seeds | test set ÷ cloned policy: mean | per seed | eval path, last "
            f"{LATE_EVALUATIONS} evaluations: max ÷ min − 1, per seed | those evaluations from (path-steps) |",
            "|---|---|---|---|---|---|---|"]
    for exp in ("L96_1", "L96_2", "L96_3"):
        cl = _records("fit_pointwise", [f"{exp}_clone"])
        if not cl:
            continue
        cloned = cl[0]["supervised"]["rmse_norm_vs_enkf"]
        for variant in FIT_SCRATCH_VARIANTS:
            for r in _records("fit_pointwise", [f"{exp}_{variant}"]):
                per_seed = [s["test"]["rl"]["rmse_norm_vs_enkf"] / cloned for s in r["per_seed"]]
                moves = [late_movement(s["eval_curve"]) for s in r["per_seed"]]
                first = min(s["eval_curve"][-LATE_EVALUATIONS][0] for s in r["per_seed"])
                rows.append(f"| {exp} | {variant} | {len(per_seed)} | "
                            f"{r['rl']['rmse_norm_vs_enkf'] / cloned:.3f} | "
                            f"{', '.join(f'{x:.3f}' for x in per_seed)} | "
                            f"{', '.join(f'{m:.1%}' for m in moves)} | {first:,} |")
    return "\n".join(rows) if len(rows) > 2 else NOT_MEASURED


def truth_study() -> str:
    """reward.target truth: RL vs truth against the stored EnKF and the best inflation's EnKF."""
    rows = ["| experiment | RL rewarded against the truth | RL rewarded against the stored xa (scratch) | "
            "stored EnKF (inflation) | best EnKF of those tried (inflation) | EnKF inflations tried |",
            "|---|---|---|---|---|---|"]
    for r in _records("fit_pointwise"):
        if r.get("reward_target") != "truth":
            continue
        sw = r["enkf_inflation_sweep"]
        sc = _records("fit_pointwise", [f"{r['experiment']}_scratch"])
        scratch = _pm(sc[0]["test"]["rl"]["rmse_vs_truth"], 4) if sc else "—"
        rows.append(f"| {r['experiment']} | {_pm(r['test']['rl']['rmse_vs_truth'], 4)} ({len(r['seeds'])} seed, "
                    f"{r['train_steps']:,} path-steps) | {scratch} | {r['enkf']['rmse_vs_truth']:.4f} ({sw['stored_inflation']:g}) | "
                    f"{sw['best']['rmse_vs_truth']:.4f} ({sw['best']['inflation']:g}) | "
                    + ", ".join(f"{x['inflation']:g}: {x['rmse_vs_truth']:.4f}" for x in sw["rows"]) + " |")
    return "\n".join(rows)


def _beyond_records() -> list[dict]:
    """results/beyond/<E>.json (one per experiment; the transfer records apart)."""
    return [json.loads(f.read_text()) for f in sorted((RESULTS / "beyond").glob("*.json"))
            if not f.name.startswith("transfer_")]


def beyond() -> str:
    """results/beyond/*.json: per experiment every variant against the stored and the best classical
    filter of the same ensemble, its learning curves, then the transfer records."""
    from rl.studies import beyond as study, transfer
    records = _beyond_records()
    transfers = [json.loads(f.read_text()) for f in sorted((RESULTS / "beyond").glob("transfer_*.json"))]
    if not records and not transfers:
        return NOT_MEASURED
    parts = []
    for r in records:
        parts += [study.markdown_table(r), "",
                  f"![{r['experiment']}: RMSE vs truth during training]({r['experiment']}_beyond_curves.png)", ""]
        if (RESULTS.parent / "docs" / f"{r['experiment']}_beyond_learners.png").is_file():
            parts += [f"![{r['experiment']}: PPO, SAC and TD3 on one env and reward]({r['experiment']}_beyond_learners.png)", ""]
        if r["not_run"]:
            parts += [f"Not run: {', '.join(r['not_run'])}.", ""]
    for t in transfers:
        parts += [transfer.markdown_table(t), ""]
    return "\n".join(parts).rstrip()


def beyond_headline() -> str:
    """One row per experiment of results/beyond/: the best RL variant vs the stored and the best
    classical filter, and the features' information ceiling (the truth-regressed network)."""
    records = _beyond_records()
    if not records:
        return NOT_MEASURED
    rows = ["| experiment | stored filter | best classical filter | best RL analysis | RL ÷ best filter | "
            "RL ÷ stored | ceiling (supervised on the truth) ÷ best filter |", "|---|---|---|---|---|---|---|"]
    for r in records:
        f, h = r["filters"], r["headline"]
        ceil = [v["supervised_ratio_to_best_filter"] for v in r["variants"].values() if "supervised_ratio_to_best_filter" in v]
        rows.append(f"| {r['experiment']} | {f['stored']['rmse_vs_truth']['mean']:.3f} | "
                    f"{f['best']['rmse_vs_truth']['mean']:.3f} ({f['best']['method'].upper()}) | "
                    f"{h['rl_vs_truth']['mean']:.3f} ({h['best_rl_variant']}) | {h['ratio_to_best_filter']:.2f} | "
                    f"{h['ratio_to_stored_filter']:.2f} | {f'{min(ceil):.2f}' if ceil else 'not run'} |")
    return "\n".join(rows)


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


def question(name: str, recorded: str) -> str:
    """The study's question as config.yaml asks it today (the record keeps the words of its run)."""
    from rl.config import load_ablation
    try:
        return load_ablation(RESULTS.parent / "config.yaml", name)[0]["question"]
    except (OSError, ValueError):
        return recorded


def ablation(name: str) -> str:
    doc = json.loads((RESULTS / "ablations" / f"{name}.json").read_text())
    return "\n".join([f"*{question(name, doc['question'])}* — `{doc['command']}`", "",
                      markdown_table(doc, COLUMNS.get(name))])


def ablations() -> str:
    return "\n\n".join(ablation(f.stem) for f in sorted((RESULTS / "ablations").glob("*.json")))


def bench() -> str:
    if not (RESULTS / "bench.json").is_file():
        return NOT_MEASURED
    b = json.loads((RESULTS / "bench.json").read_text())
    k, rl = b["kernels"], b["rl"]
    cpu = f", {rl['cpu_model']}" if "cpu_model" in rl else ""
    rows = [f"| measurement (`enkfrl bench`, one run, 2 cores{cpu}) | ours | plain numpy / upstream | ratio |",
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
    e = rl["batched_env_only"]
    c = e["cores"]
    rows.append(f"| L96_1 physics limit: the batched forecast kernel alone, 99 paths (path-steps/s) | "
                f"{e['kernel_limit_1_core']:,.0f} on 1 core, {e['kernel_limit_all_cores']:,.0f} on {c} | | |")
    rows.append(f"| L96_1 closed loop, env only, a per-path loop of 4 AssimilationEnvs, 1 core (path-steps/s) | "
                f"{e['per_path_loop_P4']:,.0f} | | |")
    for P in (4, 32, 99):
        rows.append(f"| L96_1 closed loop, env only, batched loop, P = {P} (path-steps/s) | "
                    f"{e[f'batched_P{P}_threads{c}']:,.0f} on {c} cores | {e[f'batched_P{P}_threads1']:,.0f} on 1 core | "
                    f"{e[f'batched_P{P}_threads{c}'] / e['per_path_loop_P4']:.1f}x the per-path loop |")
    measured = [(rl["batched"], "the default settings")] + [
        (rl[f"batched_{v}_all_cores"], f"the {v} variant's settings") for v in SCRATCH_VARIANTS if f"batched_{v}_all_cores" in rl]
    for r, what in measured:
        reps = r.get("repeats_ppo_path_steps_per_s")
        spread = f" (median of {len(reps)} interleaved repeats: {', '.join(f'{v:,.0f}' for v in reps)})" if reps else ""
        rows.append(f"| L96_1 pointwise PPO, LSTM per point, {what} ({r['paths_per_env']} paths x n_steps {r['n_steps']}, "
                    f"batch {r['batch_size']}, {r['n_epochs']} epoch(s), LSTM {r['lstm_dtype']}, {r['torch_threads']} torch / "
                    f"{r['env_threads']} env threads) (path-steps/s) | "
                    f"{r['ppo_path_steps_per_s']:,.0f}{spread} | | {r['ratio_to_env_only']:.0%} of its env-only "
                    f"{r['env_only_path_steps_per_s']:,.0f}; wall time: env.step {r['share_env_step']:.0%}, "
                    f"policy forward while collecting {r['share_policy_forward_in_rollouts']:.0%}, "
                    f"PPO updates {r['share_ppo_updates']:.0%}"
                    + (f"; its LSTM kernels alone {r['lstm_kernels_path_steps_per_s']:,.0f}: at most "
                       f"{r['ratio_bound_lstm_kernels']:.0%} of env-only" if "lstm_kernels_path_steps_per_s" in r else "")
                    + " |")
    rows.append(f"| L96_1 PPO training, {rl['ppo_local']['agent']} agent, 2 envs (path-steps/s) | {rl['ppo_local']['steps_per_s']:,.0f} | | "
                f"{rl['ppo_local']['env_step_share']:.0%} of wall time in env.step |")
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


def gpu_check() -> str:
    """results/gpu_check.json: the pointwise agent's PPO on CUDA vs CPU on a GPU machine."""
    r = json.loads((RESULTS / "gpu_check.json").read_text())
    rows = [f"| {r['experiment']} pointwise PPO on {r['gpu']} machine ({r['provenance']['cores']} cores) | path-steps/s | "
            "env-only limit | wall time: env / forward / updates |", "|---|---|---|---|"]
    for dev in ("cpu", "cuda"):
        d = r[dev]
        rows.append(f"| train.device {dev} | {d['ppo_path_steps_per_s']:,.0f} | {d['env_only_path_steps_per_s']:,.0f} | "
                    f"{d['share_env_step']:.0%} / {d['share_policy_forward_in_rollouts']:.0%} / {d['share_ppo_updates']:.0%} |")
    rows.append(f"\nCUDA / CPU: {r['cuda_over_cpu']:.2f}x (torch {r['versions']['torch']}, Python {r['versions']['python']} there).")
    return "\n".join(rows)


def _filter_cell(r: dict) -> str:
    loc = "" if r.get("loc_radius") is None else f", radius {r['loc_radius']:g}"
    return (f"{_pm(r['rmse_vs_truth'], 3)} ({r['inflation_stage']} {r['inflation']:g}{loc}"
            f"{', ' + str(r['diverged_paths']) + ' diverged' if r.get('diverged_paths') else ''})")


def classical_filters() -> str:
    """results/filters/<E>.json: per experiment the stored filter and the best setting of each
    method on the test split (RMSE vs truth of the analysis mean, mean ± std over test paths)."""
    if not _records("filters"):
        return NOT_MEASURED
    rows = ["| experiment | N | stored filter | best EnKF | best ETKF | best LETKF | best ÷ stored |",
            "|---|---|---|---|---|---|---|"]
    for r in _records("filters"):
        best = {}
        for f in r["filters"]:
            if f["rmse_vs_truth"]["mean"] is None:
                continue
            key = (f["diverged_paths"] > 0, f["rmse_vs_truth"]["mean"])
            if f["method"] not in best or key < best[f["method"]][0]:
                best[f["method"]] = (key, f)
        s = r["stored"]
        cells = [_filter_cell(best[m][1]) if m in best else "–" for m in ("enkf", "etkf", "letkf")]
        ratio = r["best"]["rmse_vs_truth"]["mean"] / s["rmse_vs_truth"]["mean"]
        rows.append(f"| {r['experiment']} | {r['n_ens']} | {s['method']}: {_filter_cell(s)} | "
                    + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    parts = sys.argv[1:] or ["data", "fit", "ablations"]
    for p in parts:
        table = {"fit": fit, "data": data, "ablations": ablations, "bench": bench, "ray_study": ray_study}.get(p)
        print(table() if table else ablation(p))
        print()
