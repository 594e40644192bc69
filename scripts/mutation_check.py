"""Targeted mutation check: does the test suite notice when the code is broken?

Each mutant replaces one exact snippet of one source file (an operator flipped, a constant
changed, a line dropped), runs the test files that cover that code (a timeout each), and restores
the file. A mutant is *killed* when the tests fail, *survived* when they pass, *timeout* when they
run past the limit (counted as killed by most tools; listed apart here).

    python scripts/mutation_check.py                    # group "core": enkf/filters.py,
                                                        # rl/envs/assimilation.py, rl/envs/pointwise.py,
                                                        # rl/studies/report.py -> logs/mutation.json
    python scripts/mutation_check.py --group tests      # the mutations the strengthened tests catch
    python scripts/mutation_check.py --only report_     # mutants whose name starts so (a,b: either)
    python scripts/mutation_check.py --record           # -> results/mutation.json (with provenance)
    python scripts/mutation_check.py --jobs 3           # 3 mutants at once, each in its own copy
    python scripts/mutation_check.py --max-per-file 4   # the first 4 mutants of each file only

Every snippet must occur exactly once in its file (checked before anything runs): a snippet the
code no longer has is reported as "stale" and skipped, so the list is kept up to date by running it.
Files are restored in a `finally` (also on Ctrl-C or SIGTERM, which end the running tests too), and a
copy of every mutated file is kept under logs/mutation_backup/ until its mutant is done. With
--jobs 1 (the default) the check edits the checkout it lies in: run it where nothing else runs
tests meanwhile (a fresh `git clone` of the commit to check is the safe place). With --jobs N it
copies the checkout's files (tracked and untracked, not ignored) to logs/mutation_work/<group>/1..N and
mutates only the copies. --max-per-file cuts a long run short: it says (and records) how many
mutants of each file it left out.
"""
from __future__ import annotations

import argparse
import contextlib
import queue
import threading
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    select: str = ""  # pytest -k expression (empty: the whole files)


def M(name, file, old, new, tests, select=""):
    return Mutant(name, file, old, new, tuple(tests), select)


FILTERS = "enkf/filters.py"
ENV = "rl/envs/assimilation.py"
POINT = "rl/envs/pointwise.py"
BATCH = "rl/envs/batched.py"
REPORT = "rl/studies/report.py"
T_FILTERS = ["tests/test_filters.py", "tests/test_system.py"]
S_FILTERS = "not old_format"  # test_system's read_paths test needs smoke data made with the mutated code and tests no filter
T_ENV = ["tests/test_env.py"]
T_POINT = ["tests/test_pointwise.py"]
T_REPORT = ["tests/test_report.py"]

CORE = [
    # ---- enkf/filters.py ---------------------------------------------------------------------
    M("filters_mean_divisor", FILTERS, "    return x / N\n", "    return x / (N - 1)\n", T_FILTERS, S_FILTERS),
    M("filters_spread_ddof", FILTERS, "(A * A).sum(axis=0) / (N - 1))", "(A * A).sum(axis=0) / N)", T_FILTERS, S_FILTERS),
    M("filters_inflate_mean", FILTERS, "return x + factor * (E - x)", "return factor * E", T_FILTERS, S_FILTERS),
    M("filters_inflate_factor", FILTERS, "return x + factor * (E - x)", "return x + factor * factor * (E - x)",
      T_FILTERS, S_FILTERS),
    M("filters_enkf_sqrt_r", FILTERS, "D = np.sqrt(r) * perturbations", "D = r * perturbations", T_FILTERS, S_FILTERS),
    M("filters_enkf_centre_scale", FILTERS, "* np.sqrt(N / (N - 1))", "* np.sqrt((N - 1) / N)", T_FILTERS, S_FILTERS),
    M("filters_enkf_no_centre", FILTERS, "    if centre:\n        D = (D - ensemble_mean(D))",
      "    if False:\n        D = (D - ensemble_mean(D))", T_FILTERS, S_FILTERS),
    M("filters_enkf_innovation_sign", FILTERS, "innov[j, k] = y[k] + D[j, k] - E[j, obs_index[k]]",
      "innov[j, k] = y[k] - D[j, k] - E[j, obs_index[k]]", T_FILTERS, S_FILTERS),
    M("filters_enkf_R_factor", FILTERS, "C = Y.T @ Y + (N - 1) * r * np.eye(p)", "C = Y.T @ Y + r * np.eye(p)",
      T_FILTERS, S_FILTERS),
    M("filters_enkf_gain_sign", FILTERS, "Ea = E + Z.T @ (Y.T @ A)", "Ea = E - Z.T @ (Y.T @ A)", T_FILTERS, S_FILTERS),
    M("filters_etkf_Pw_term", FILTERS, "Y @ Y.T / r + (N - 1) * np.eye(N)", "Y @ Y.T / r + N * np.eye(N)",
      T_FILTERS, S_FILTERS),
    M("filters_etkf_T_sqrt", FILTERS, "\n    T = (vecs * np.sqrt((N - 1) / vals))", "\n    T = (vecs * np.sqrt(N / vals))", T_FILTERS, S_FILTERS),
    M("filters_etkf_mean_weights", FILTERS, "w = (dy / r) @ Y.T @ Pw", "w = dy @ Y.T @ Pw", T_FILTERS, S_FILTERS),
    M("filters_etkf_no_rotation", FILTERS, "return xa, rotation @ T @ A", "return xa, T @ A", T_FILTERS, S_FILTERS),
    M("filters_rotation_sign_fix", FILTERS, "O = O * np.sign(np.diag(R))", "O = O", T_FILTERS, S_FILTERS),
    M("filters_rotation_keeps_ones", FILTERS, "B[1:, 1:] = O", "B[:, :] = np.eye(N)[::-1]", T_FILTERS, S_FILTERS),
    # ---- enkf/system.py: the inflation stage ---------------------------------------------------
    M("system_forecast_stage_ignored", "enkf/system.py",
      'if self.inflation_stage == "forecast" and self.inflation != 1.0:', 'if False:', T_FILTERS, S_FILTERS),
    M("system_analysis_stage_ignored", "enkf/system.py",
      'if self.inflation_stage == "analysis" and self.inflation != 1.0:', 'if False:', T_FILTERS, S_FILTERS),
    # ---- rl/envs/assimilation.py -----------------------------------------------------------------
    M("env_increment_sign", ENV, "xa = self._xb + self.norm.diff_unnorm(a)", "xa = self._xb - self.norm.diff_unnorm(a)",
      T_ENV),
    M("env_no_action_clip", ENV, "a = np.clip(a, -b, b)\n", "\n", T_ENV),
    M("env_reward_clip", ENV, "return 1.0 - np.minimum(np.sqrt(np.nanmean(point_error ** 2, axis=-1)), clip)",
      "return 1.0 - np.sqrt(np.nanmean(point_error ** 2, axis=-1))", T_ENV),
    M("env_reward_mean_abs", ENV, "return 1.0 - np.minimum(np.sqrt(np.nanmean(point_error ** 2, axis=-1)), clip)",
      "return 1.0 - np.minimum(np.nanmean(np.abs(point_error), axis=-1), clip)", T_ENV),
    M("env_truth_target", ENV, '"truth": truth}[target]', '"truth": stored_xa}[target]',
      T_ENV),
    M("env_online_target", ENV, '"online": self._xa_online,', '"online": stored_xa,', T_ENV),
    M("env_anomalies_dropped", ENV, "self._forecast_from(xa + self._Aa)", "self._forecast_from(xa + 0 * self._Aa)",
      T_ENV),
    M("env_halt_bound_strict", ENV, "np.all(np.abs(z) <= self.env_cfg.halt_bound)",
      "np.all(np.abs(z) <= 2 * self.env_cfg.halt_bound)", T_ENV),
    M("env_truncate_early", ENV, "if self.cycle == self.n_cycles:", "if self.cycle == self.n_cycles - 1:", T_ENV),
    M("env_nan_action_reward", ENV, "return self._observation(), 1.0 - clip, True, False, info",
      "return self._observation(), 0.0, True, False, info", T_ENV),
    M("env_prev_analysis_not_kept", ENV, "        self._prev_analysis = xa\n", "\n", T_ENV),
    M("env_window_not_slid", ENV, "            self._history.append(self._features())\n", "\n", T_ENV),
    M("env_innovation_sign", ENV, "norm.diff_norm(obs - forecast_mean[..., obs_index], obs_index)",
      "norm.diff_norm(forecast_mean[..., obs_index] - obs, obs_index)", T_ENV),
    M("env_features_unclipped", ENV, "return np.clip(np.nan_to_num(f, nan=0.0, posinf=bound, neginf=-bound), -bound, bound)",
      "return np.nan_to_num(f, nan=0.0, posinf=bound, neginf=-bound)", T_ENV),
    M("env_reference_window_pad", ENV, "padded = np.concatenate([np.repeat(rows[:1], W - 1, axis=0), rows])",
      "padded = np.concatenate([np.zeros_like(rows[:W - 1]), rows])", T_ENV),
    M("env_reference_actions_absolute", ENV, '    if cfg.env.action_mode == "absolute":\n        return norm.norm(xa)',
      '    if cfg.env.action_mode == "absolute":\n        return norm.diff_norm(xa)', T_ENV),
    M("env_reset_prev_analysis", ENV, "        self._prev_analysis = None\n        self._forecast_from",
      "        self._forecast_from", T_ENV),
    # ---- rl/envs/pointwise.py --------------------------------------------------------------------
    M("point_stencil_offset", POINT, "np.arange(-stencil, stencil + 1)[None, :]) % n",
      "np.arange(-stencil + 1, stencil + 2)[None, :]) % n", T_POINT),
    M("point_gather_axis", POINT, "x = np.moveaxis(x, -2, -4)", "x = np.moveaxis(x, -1, -4)", T_POINT),
    M("point_rewards_unclipped", POINT, "return 1.0 - np.minimum(np.abs(point_error), clip)",
      "return 1.0 - np.abs(point_error)", T_POINT),
    # ---- rl/envs/batched.py: the path slots under the pointwise wrapper ----------------------------
    M("point_truncated_flag", BATCH, 'd["TimeLimit.truncated"] = bool(truncated[m] and not res.terminated[m])',
      'd["TimeLimit.truncated"] = bool(truncated[m] or res.terminated[m])', T_POINT, "halted"),
    M("point_no_slot_reset", BATCH, "            self._start(ended)\n", "\n", T_POINT),
    M("point_owner_every_point", BATCH, '[{"episode_owner": False} for _ in range(k - 1)]',
      '[dict(owner) for _ in range(k - 1)]', T_POINT),
    M("point_return_not_global", BATCH, "self._returns += res.reward",
      "self._returns += self._rewards(res).reshape(self.n_slots, -1).mean(axis=1)", T_POINT),
    M("point_return_not_reset", BATCH, "self._returns[slots], self._lengths[slots] = 0.0, 0",
      "self._lengths[slots] = 0", T_POINT),
    M("point_action_reshape", BATCH, "dtype=np.float64).reshape(self.n_slots, self.n)",
      "dtype=np.float64).reshape(self.n, self.n_slots).T", T_POINT),
    M("point_slot_seed", BATCH, "paths = self.path_rng.choice(self.active_paths, size=len(slots))",
      "paths = np.full(len(slots), self.path_rng.choice(self.active_paths))", T_POINT),
    M("point_env_method_once", BATCH, "return [getattr(self, method_name)(*method_args, **method_kwargs)]",
      "return [getattr(self, method_name)(*method_args, **method_kwargs)] * self.n_slots", T_POINT),
    # ---- rl/studies/report.py ---------------------------------------------------------------------
    M("report_test_means_not_mean", REPORT, '(v if k == "cycles_completed" else v["mean"])',
      '(v if k == "cycles_completed" else v["min"])', T_REPORT),
    M("report_curve_truth_column", REPORT, 'points[int(float(x))] = [float(row["eval/rmse_vs_enkf"]), float(row["eval/rmse_vs_truth"])]',
      'points[int(float(x))] = [float(row["eval/rmse_vs_truth"]), float(row["eval/rmse_vs_enkf"])]', T_REPORT),
    M("report_cycles_max", REPORT, '"cycles_completed": int(min(min(r["test"]["rl"]["cycles_completed"], r["eval_path"]["rl"]["cycles_completed"])',
      '"cycles_completed": int(max(min(r["test"]["rl"]["cycles_completed"], r["eval_path"]["rl"]["cycles_completed"])',
      T_REPORT),
    M("report_cycles_test_only", REPORT, 'min(r["test"]["rl"]["cycles_completed"], r["eval_path"]["rl"]["cycles_completed"])\n',
      'r["test"]["rl"]["cycles_completed"]\n', T_REPORT),
    M("report_std_not_mean", REPORT, 'return {"mean": float(a.mean()), "std": float(a.std())}',
      'return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}', T_REPORT),
    M("report_supervised_truth", REPORT, 'sup_truth = float(np.mean([s["test"]["supervised"]["rmse_vs_truth"] for s in sup]))',
      'sup_truth = float(np.mean([s["test"]["supervised"]["rmse_norm_vs_enkf"] for s in sup]))', T_REPORT),
    M("report_train_steps_min", REPORT, '"train_steps": int(max(r["train_steps"] for r in runs))',
      '"train_steps": int(min(r["train_steps"] for r in runs))', T_REPORT),
    M("report_training_paths", REPORT, 'cfg.paths.train_paths[1] - cfg.paths.train_paths[0] + 1',
      'cfg.paths.train_paths[1] - cfg.paths.train_paths[0]', T_REPORT),
    M("report_below_copy_obs", REPORT, 't["rl"]["rmse_norm_vs_enkf"] < t["copy_obs"]["rmse_norm_vs_enkf"]',
      't["rl"]["rmse_norm_vs_enkf"] <= 2 * t["copy_obs"]["rmse_norm_vs_enkf"]', T_REPORT),
    M("report_within_1.2x", REPORT, 't["rl"]["rmse_vs_truth"] <= 1.2 * t["enkf"]["rmse_vs_truth"]',
      't["rl"]["rmse_vs_truth"] <= 1.3 * t["enkf"]["rmse_vs_truth"]', T_REPORT),
    M("report_within_1.1x", REPORT, 't["rl"]["rmse_vs_truth"] <= 1.1 * t["enkf"]["rmse_vs_truth"]',
      't["rl"]["rmse_vs_truth"] < 1.0 * t["enkf"]["rmse_vs_truth"]', T_REPORT),
    M("report_2M_steps", REPORT, '(r or record)["train_steps"] <= 2_000_000', '(r or record)["train_steps"] <= 200_000',
      T_REPORT),
    M("report_1.25x_supervised", REPORT, '<= 1.25 * t["supervised"]["rmse_norm_vs_enkf"]',
      '<= 1.5 * t["supervised"]["rmse_norm_vs_enkf"]', T_REPORT),
    M("report_below_clone", REPORT, 'lambda t, r: t["rl"]["rmse_norm_vs_enkf"] < t["supervised"]["rmse_norm_vs_enkf"]))',
      'lambda t, r: t["rl"]["rmse_norm_vs_enkf"] <= 1.01 * t["supervised"]["rmse_norm_vs_enkf"]))', T_REPORT),
    M("report_no_below_clone_for_scratch", REPORT, '        if init == "clone":\n            rules.append',
      '        if True:\n            rules.append', T_REPORT),
    M("report_completes_eval_path", REPORT, 'return t["rl"]["cycles_completed"] == n_cycles and r["eval_path"]["rl"]["cycles_completed"] == n_cycles',
      'return t["rl"]["cycles_completed"] == n_cycles', T_REPORT),
    M("report_seeds_passing_count", REPORT, '"seeds_passing": sum(per_seed),', '"seeds_passing": len(per_seed),', T_REPORT),
    M("report_improvement_sign", REPORT, 'gains = [1 - r["test"]["rl"]["rmse_norm_vs_enkf"] / r["test"]["supervised"]["rmse_norm_vs_enkf"]',
      'gains = [r["test"]["rl"]["rmse_norm_vs_enkf"] / r["test"]["supervised"]["rmse_norm_vs_enkf"] - 1', T_REPORT),
    M("report_per_path_order", REPORT, 'for p in sorted(runs[0]["test_paths"], key=int)]', 'for p in sorted(runs[0]["test_paths"])]',
      T_REPORT),
    M("report_sweep_burn_in", REPORT, 'per_path = data["analysis_rmse"][:, burn_in:].mean(axis=1)',
      'per_path = data["analysis_rmse"].mean(axis=1)', T_REPORT),
    M("report_best_is_max", REPORT, 'best = min(sweep, key=lambda r: r["rmse_vs_truth"])',
      'best = max(sweep, key=lambda r: r["rmse_vs_truth"])', T_REPORT),
    M("report_beats_stored_le", REPORT, '"mean": rl < record["enkf"]["rmse_vs_truth"],',
      '"mean": rl <= 1.05 * record["enkf"]["rmse_vs_truth"],', T_REPORT),
    M("report_beats_best_seeds", REPORT, 'sum(s["test"]["rl"]["rmse_vs_truth"] < best["rmse_vs_truth"] for s in record["per_seed"])',
      'sum(s["test"]["rl"]["rmse_vs_truth"] < record["enkf"]["rmse_vs_truth"] for s in record["per_seed"])', T_REPORT),
    M("report_stored_inflation_not_swept", REPORT, "inflations = sorted({r.cfg.filter.inflation for r in enkf_runs} | {cfg.filter.inflation})",
      "inflations = sorted({r.cfg.filter.inflation for r in enkf_runs})", T_REPORT),
]

T_CLI = ["tests/test_cli_rl.py"]
T_PLOTS = ["tests/test_plots_rl.py"]
T_ABLATE = ["tests/test_ablate.py"]
ABLATE = "rl/studies/ablate.py"
TRAIN = "rl/training/train.py"
EVALUATE = "rl/training/evaluate.py"
RUNS = "rl/training/runs.py"
# the mutations that the strengthened record-checking tests catch (each names its test)
TESTS = [
    M("best_model_is_the_worst", TRAIN, 'if s["total_reward"] > self.best:', 'if s["total_reward"] < self.best or self.best == -np.inf:',
      T_CLI, "eval_scalars"),
    M("eval_logs_truth_as_enkf", TRAIN, "\"eval/{key.replace('rmse_norm_vs_enkf', 'rmse_vs_enkf')}\", s[key]",
      "\"eval/{key.replace('rmse_norm_vs_enkf', 'rmse_vs_enkf')}\", s[key.replace('rmse_norm_vs_enkf', 'rmse_vs_truth')]",
      T_CLI, "eval_scalars"),
    M("exploration_from_training_rmse", TRAIN, 'scale, source = history["val_rmse"][-1]', 'scale, source = history["train_rmse"][-1]',
      T_CLI, "exploration"),
    M("evaluate_ignores_model_choice", RUNS, 'path = run_dir / f"{which}_model.safetensors"',
      'path = run_dir / ("pretrained_model.safetensors" if which == "pretrained" else "final_model.safetensors")',
      T_CLI, "best_model"),
    M("load_policy_no_fallback", RUNS, 'if which == "best" and not any(', 'if False and not any(', T_CLI, "falls_back"),
    M("curriculum_logs_wrong_count", "rl/training/curriculum.py",
      'self.logger.record("curriculum/n_paths", self.curriculum.n_active)',
      'self.logger.record("curriculum/n_paths", max(1, self.curriculum.n_active - 1))', T_CLI, "every_tag"),
    M("metrics_without_burn_in", EVALUATE, "{name: summarise(ep, burn_in) for name", "{name: summarise(ep, 0) for name",
      T_CLI, "writes_metrics"),
    M("ablate_clone_training_rmse", ABLATE, '(history["val_rmse"] or history["train_rmse"] or [np.nan])[-1]',
      '(history["train_rmse"] or [np.nan])[-1]', T_ABLATE, "clone"),
    M("ablate_finetune_without_ppo", ABLATE, "    model.learn(cfg.train.total_steps * agents_per_path(cfg), callback=CurriculumCallback(curriculum))\n",
      "\n", T_ABLATE, "finetune"),
    M("ablate_bounds_threshold", ABLATE, 'out[f"{name}_outside_{b}"] = float(np.mean(np.abs(z) > b))',
      'out[f"{name}_outside_{b}"] = float(np.mean(np.abs(z) > b + 0.1))', T_ABLATE, "bounds"),
    M("ablate_bounds_fewer_paths", ABLATE, "paths = list(range(min(cfg.paths.n_paths, 5)))",
      "paths = list(range(1, min(cfg.paths.n_paths, 5)))",
      T_ABLATE, "bounds"),
    M("ablate_diverged_flipped", ABLATE, '"diverged_paths": int(np.sum(per_path > obs_per_path))',
      '"diverged_paths": int(np.sum(per_path < obs_per_path))', T_ABLATE, "enkf_skill"),
    M("best_not_restored_on_resume", TRAIN, 'self.best = json.loads(best_file.read_text())["total_reward"]',
      'self.best = -np.inf', ["tests/test_training.py"], "restored"),
    M("mismatched_checkpoint_skipped", "rl/training/runs.py",
      "        check_model(model, run_dir, trust)  # a recorded sum that differs: refused\n",
      "        if not trust and sha256_file(model) != sums[_record_key(run_dir, model)]:\n            continue\n",
      ["tests/test_training.py"], "differs"),
    M("bench_recurrent_ratio_inverted", "rl/studies/bench.py", '"ratio": ours / up}', '"ratio": up / ours}',
      ["tests/test_bench.py"]),
    M("bench_ppo_ratio_inverted", "rl/studies/bench.py", '"ratio_to_env_only": ppo / env_only,',
      '"ratio_to_env_only": env_only / ppo,',
      ["tests/test_bench.py"]),
    M("log_std_auto_from_training_paths", TRAIN, "copy_obs_rmse(cfg, normaliser, data, split_training_paths(cfg)[1])",
      "copy_obs_rmse(cfg, normaliser, data, split_training_paths(cfg)[0])", ["tests/test_clone.py"], "log_std_auto"),
    M("old_format_hash_ignored", "enkf/precompute.py",
      'changed = [] if attrs.get("data_hash") == data_hash(cfg) else ["data settings"]', "changed = []",
      ["tests/test_system.py"], "old_format"),
    M("shared_data_needs_three_variants", "rl/studies/sweep.py", "(len(cfgs) < 2 and not own)", "(len(cfgs) < 3 and not own)",
      ["tests/test_sweep.py"], "share_their_data"),
    M("readme_check_always_passes", "scripts/fill_readme.py", "return 1 if problems else 0", "return 0",
      ["tests/test_fill_readme.py"], "check_fails_when_a_readme_table"),
    M("plots_no_log_scale", "rl/studies/plots.py", "LOG_Y_RATIO = 5.0 ", "LOG_Y_RATIO = 500.0 ", T_PLOTS, "halted"),
    M("plots_always_log_scale", "rl/studies/plots.py", "    if log_y:\n        ax.set_yscale", "    if True:\n        ax.set_yscale",
      T_PLOTS, "marks_nothing"),
    M("plots_no_halt_marker", "rl/studies/plots.py", "        if c < K:\n            ax.axvline", "        if False:\n            ax.axvline",
      T_PLOTS, "halted"),
    M("plots_marks_every_actor", "rl/studies/plots.py", "        if c < K:\n            ax.axvline", "        if c <= K:\n            ax.axvline",
      T_PLOTS, "marks_nothing"),
    M("plots_eval_panel_truth", "rl/studies/plots.py", 'if _curve(a_eval, s, "eval/rmse_vs_enkf", title,',
      'if _curve(a_eval, s, "eval/rmse_vs_truth", title,', T_PLOTS, "every_figure"),
]

GROUPS = {"core": CORE, "tests": TESTS}

# mutants that survive on purpose: why no test can (or needs to) tell them from the code
EXPLAINED: dict[str, str] = {}


def smoke_data(folder: Path) -> Path:
    """The smoke data of both splits made once with the unmutated code (what tests/conftest.py
    would make in every session): the sessions of mutants outside enkf/ read it."""
    if (folder / "complete").exists() and (folder / "config.yaml").read_text() == (ROOT / "config.yaml").read_text():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for split in ("train", "test"):
        for command in ("generate", "precompute"):
            subprocess.run([sys.executable, "-m", "cli.main", command, "--exp", "smoke", "--split", split],
                           cwd=folder, env=env, check=True, capture_output=True)
    (folder / "complete").touch()
    return folder


RUNNING: set[int] = set()
"""Process groups of the test runs under way (ended on an interrupt)."""


def run_tests(m: Mutant, timeout: float, data: Path, root: Path = ROOT) -> tuple[str, float, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
           *[t for t in m.tests if (root / t).exists()]]
    if m.select:
        cmd += ["-k", m.select]
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1")
    env.pop("ENKFRL_TEST_SMOKE_DATA", None)
    if not m.file.startswith("enkf/"):  # the data come from enkf/ alone: unchanged by this mutant
        env["ENKFRL_TEST_SMOKE_DATA"] = str(data)
    t0 = time.perf_counter()
    # its own process group: a timeout or an interrupt ends pytest and everything it started
    p = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    RUNNING.add(p.pid)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return "timeout", time.perf_counter() - t0, ""
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    finally:
        RUNNING.discard(p.pid)
    wall = time.perf_counter() - t0
    last = (out.strip().splitlines() or [""])[-1]
    if p.returncode == 0:
        return "survived", wall, last
    failed = [line.split(" ")[1] for line in out.splitlines() if line.startswith("FAILED ")]
    if p.returncode == 1 and failed:
        return "killed", wall, failed[0]
    # a collection or usage error (the mutant broke more than behaviour), or a test that could not
    # start (an error in a fixture: nothing was asserted about the mutant)
    return "error", wall, last


def copy_checkout(dest: Path) -> Path:
    """dest (made afresh) with the checkout's tracked and untracked, not ignored files."""
    files = subprocess.check_output(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, text=True)
    shutil.rmtree(dest, ignore_errors=True)
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def check_mutant(m: Mutant, root: Path, timeout: float, data: Path, backup: Path | None) -> dict:
    """m applied to root's copy of its file, its tests run, the file restored: the mutant's row."""
    path = root / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        return {"name": m.name, "file": m.file, "status": "stale", "detail": f"snippet found {text.count(m.old)} times"}
    saved = backup / m.file.replace("/", "__") if backup else None
    if saved:
        shutil.copy2(path, saved)
    try:
        path.write_text(text.replace(m.old, m.new))
        status, wall, detail = run_tests(m, timeout, data, root)
    finally:
        path.write_text(text)
        if saved:
            saved.unlink()
    return {"name": m.name, "file": m.file, "old": m.old, "new": m.new, "tests": list(m.tests),
            "select": m.select, "status": status, "wall_s": round(wall, 1), "detail": detail}


def cut_per_file(mutants: list[Mutant], most: int) -> tuple[list[Mutant], dict[str, dict]]:
    """The first `most` mutants of each file (0: all), and per file how many were run of how many."""
    kept, count = [], {}
    for m in mutants:
        c = count.setdefault(m.file, {"run": 0, "of": 0})
        c["of"] += 1
        if not most or c["run"] < most:
            c["run"] += 1
            kept.append(m)
    return kept, count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", choices=sorted(GROUPS), default="core")
    ap.add_argument("--only", default="", help="run the mutants whose name starts with this (a,b: with a or b)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant's test run")
    ap.add_argument("--record", action="store_true", help="write results/mutation.json (else logs/)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested at once, each in its own copy of the checkout")
    ap.add_argument("--max-per-file", type=int, default=0, help="the first N mutants of each file only (0: all)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))  # restore, then stop
    mutants, per_file = cut_per_file([m for m in GROUPS[args.group] if m.name.startswith(tuple(args.only.split(",")))],
                                     args.max_per_file)
    for file, c in per_file.items():
        if c["run"] < c["of"]:
            print(f"{file}: {c['run']} of its {c['of']} mutants (--max-per-file {args.max_per_file}); "
                  f"{c['of'] - c['run']} not run", flush=True)
    rows, t_start = [], time.perf_counter()
    data = smoke_data(ROOT / "logs/mutation_smoke_data")
    order = {m.name: i for i, m in enumerate(mutants)}
    out = ROOT / ("results" if args.record else "logs") / f"mutation{'' if args.group == 'core' else '_' + args.group}.json"
    command = ("python scripts/mutation_check.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    sys.path.insert(0, str(ROOT))
    from enkf.config import hash_of
    from enkf.io import atomic_write_json, provenance

    def write(finished: bool) -> dict:
        """The record so far (after every mutant: an interrupted check keeps what it found)."""
        counts = {s: sum(r["status"] == s for r in rows) for s in ("killed", "survived", "timeout", "error", "stale")}
        counts["total"] = len(rows)
        doc = {"group": args.group, "finished": finished, "counts": counts,
               "mutants": sorted(rows, key=lambda r: order[r["name"]]), "wall_s": time.perf_counter() - t_start,
               "jobs": args.jobs, "mutants_per_file": per_file,
               "explained": {m.name: EXPLAINED[m.name] for m in mutants if m.name in EXPLAINED}}
        # the mutants are listed above; like the suite's timing, the check depends on no config setting
        doc["provenance"] = provenance({}, hash_of({}), command, doc["wall_s"])
        atomic_write_json(out, doc)
        return counts

    def done(row: dict) -> None:
        rows.append(row)
        print(f"{row['name']:40s} {row['status']:9s} {row.get('wall_s', 0):6.1f} s  {row['detail']}", flush=True)
        write(False)
    if args.jobs == 1:  # in this checkout (run_tests ends its tests on an interrupt)
        backup = ROOT / "logs/mutation_backup"
        backup.mkdir(parents=True, exist_ok=True)
        for m in mutants:
            done(check_mutant(m, ROOT, args.timeout, data, backup))
    else:  # each mutant in a free copy of the checkout
        free: queue.Queue = queue.Queue()
        for i in range(1, args.jobs + 1):
            free.put(copy_checkout(ROOT / "logs/mutation_work" / args.group / str(i)))
        lock, stopping = threading.Lock(), threading.Event()

        def one(m: Mutant) -> None:
            root = free.get()
            try:
                row = check_mutant(m, root, args.timeout, data, None)
            finally:
                free.put(root)
            with lock:
                if not stopping.is_set():  # a test run ended by the interrupt is no result
                    done(row)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(one, m) for m in mutants]
            try:
                for f in futures:
                    f.result()
            except BaseException:  # Ctrl-C or SIGTERM: no new mutant, the running tests ended
                stopping.set()
                for f in futures:
                    f.cancel()
                for pid in list(RUNNING):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                raise
    rows.sort(key=lambda r: order[r["name"]])
    counts = write(True)
    print(", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if counts["survived"] == counts["error"] == counts["stale"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
