"""Fit records (rl/studies/report.py, `enkfrl report`) and learning curves (`enkfrl curves`): hand-made
evaluated run folders with chosen numbers -> the record's means, minima, per-seed entries, curves
and every pass/fail check, computed here by hand; the truth-reward comparison with the EnKF of
every inflation on the same test paths, checked against the stored test data.

The numbers sit on the checks' boundaries (a value exactly 1.2x the EnKF's, an RL error equal to
the clone's...), so a flipped comparison or a changed factor changes a check."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import matplotlib.figure
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from conftest import CONFIG, copy_smoke_data
from enkf.config import dump_config, split_config
from rl.config import load_config
from enkf.spinup import read_spinup
from enkf.io import DataError
from rl.studies.report import add_enkf_comparison, compare_with_tuned_enkf, fit_record, recheck
from rl.training.runs import run_info

N_TEST = 11  # test paths "0".."10": sorted as strings they are out of order
EVAL_PATH = "0"

# per seed: the test-set means (rmse_norm_vs_enkf, rmse_vs_truth) of every actor, the worst test
# path's cycles and the eval path's cycles of rl, training steps
SEEDS = {
    0: {"rl": (0.12, 0.55), "supervised": (0.12, 0.60), "copy_obs": (0.30, 0.70), "test_cycles": 60,
        "eval_cycles": 57, "train_steps": 1024},
    1: {"rl": (0.32, 0.60), "supervised": (0.24, 0.62), "copy_obs": (0.31, 0.69), "test_cycles": 58,
        "eval_cycles": 60, "train_steps": 2_500_000},
    2: {"rl": (0.25, 0.64), "supervised": (0.20, 0.63), "copy_obs": (0.25, 0.71), "test_cycles": 60,
        "eval_cycles": 60, "train_steps": 2_000_064},  # inside the rollout (2 paths x 64) crossing 2M
}
ENKF_TRUTH = 0.5          # the stored EnKF's test-set RMSE vs truth (the same test data for every seed)
OTHERS = {"no_da": (5.0, 3.0), "enkf_replica": (1e-6, 0.5)}
EVAL = {"rl": (0.2, 0.7), "supervised": (0.25, 0.72), "copy_obs": (0.4, 0.8), "no_da": (6.0, 4.0),
        "enkf_replica": (2e-6, 0.52)}  # the eval path, seed 0 (seed s adds s / 100)


def per_path_values(mean: float, seed: int) -> list[float]:
    """N_TEST values around mean (their mean), different for every path."""
    offsets = np.linspace(-1, 1, N_TEST) * 0.01 * (1 + seed)
    return list(mean + offsets - offsets.mean())


def summary(values: list[float]) -> dict:
    a = np.array(values)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def make_run(folder: Path, cfg, seed: int, actors: tuple[str, ...], curve: list[tuple[int, float, float]],
             command: str | None = None) -> Path:
    """An evaluated run folder as rl/training/train.py and `enkfrl evaluate` leave it."""
    folder.mkdir(parents=True)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    dump_config(cfg, folder / "config.yaml")
    (folder / "command.txt").write_text((command or f"enkfrl train --exp smoke --seed {seed}") + "\n")
    words = (command or "").split()
    study = words[words.index("--study") + 1] if "--study" in words else None
    variant = words[words.index("--variant") + 1] if "--variant" in words else None
    (folder / "run.json").write_text(json.dumps(run_info(cfg, study, variant)))
    s = SEEDS[seed]
    paths = {str(p): {} for p in range(N_TEST)}
    over = {}
    for actor in actors:
        norm_mean, truth_mean = s[actor] if actor in s else OTHERS[actor]
        norms, truths = per_path_values(norm_mean, seed), per_path_values(truth_mean, seed)
        cycles = [60] * N_TEST
        if actor == "rl":
            cycles[7] = s["test_cycles"]
        for p in range(N_TEST):
            paths[str(p)][actor] = {"rmse_norm_vs_enkf": norms[p], "rmse_vs_truth": truths[p],
                                    "cycles_completed": cycles[p]}
        over[actor] = {"rmse_norm_vs_enkf": summary(norms), "rmse_vs_truth": summary(truths),
                       "cycles_completed": min(cycles)}
    enkf = per_path_values(ENKF_TRUTH, 0)
    for p in range(N_TEST):
        paths[str(p)]["enkf"] = {"rmse_vs_truth": enkf[p]}
    over["enkf"] = {"rmse_vs_truth": summary(enkf)}
    eval_path = {a: {"rmse_norm_vs_enkf": EVAL[a][0] + seed / 100, "rmse_vs_truth": EVAL[a][1] + seed / 100,
                     "cycles_completed": s["eval_cycles"] if a == "rl" else 60} for a in actors}
    eval_path["enkf"] = {"rmse_vs_truth": 0.51}
    metrics = {EVAL_PATH: eval_path, "burn_in": cfg.paths.burn_in,
               "test": {"n_paths": N_TEST, "spinup_seed": cfg.test.seed, "paths": paths, "over_paths": over},
               "models": {"rl": {"which": "final", "file": "final_model.safetensors", "steps": s["train_steps"],
                                 "sha256": f"{seed:064x}"}},
               "data": {"paths": {"file": "data/smoke/paths.h5", "sha256": "0" * 64}}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "timing.json").write_text(json.dumps({"train_steps": s["train_steps"], "train_wall_s": 10.0 + seed,
                                                    "path_steps_per_s": 100.0 + seed}))
    (folder / "curriculum_final.json").write_text(json.dumps({"n_active": 3 + seed}))
    # TensorBoard's CSV twin; a resumed run has its earlier rows in progress_until_<step>.csv
    (folder / "tb").mkdir()
    header = "eval/path_steps,eval/rmse_vs_enkf,eval/rmse_vs_truth,time/total_timesteps,train/loss\n"
    rows = [f"{x},{e},{t},{x * 8},0.1\n" for x, e, t in curve]
    (folder / "tb/progress_until_512.csv").write_text(header + "".join(rows[:1]) + ",,,520,0.2\n")
    (folder / "tb/progress.csv").write_text(header + ",,,600,0.3\n" + "".join(rows[1:]))
    return folder


CURVES = {0: [(512, 0.30, 0.9), (1024, 0.20, 0.8), (2048, 0.15, 0.7)],
          1: [(512, 0.40, 1.0), (1024, 0.25, 0.85), (2048, 0.18, 0.75)],
          2: [(512, 0.35, 0.95), (1024, 0.22, 0.82), (1536, 0.2, 0.8), (2048, 0.16, 0.72)]}
ALL = ("rl", "supervised", "copy_obs", "no_da", "enkf_replica")
SCRATCH = ("rl", "copy_obs", "no_da", "enkf_replica")


@pytest.fixture
def smoke_cfg():
    return load_config(CONFIG, "smoke")


@pytest.fixture
def clone_runs(tmp_path, smoke_cfg) -> list[Path]:
    return [make_run(tmp_path / f"clone_s{s}", smoke_cfg, s, ALL, CURVES[s]) for s in (2, 0, 1)]


def mean(values):
    return float(np.mean(values))


def test_fit_record_means_minima_and_per_seed_entries(clone_runs, smoke_cfg):
    record = fit_record(clone_runs, "clone", "cmd", 1.5)
    assert record["seeds"] == [0, 1, 2]  # sorted by seed, whatever the order given
    assert (record["experiment"], record["agent"], record["init"], record["reward_target"]) == (
        "smoke", smoke_cfg.agent.kind, "clone", "stored")
    for actor in ("rl", "supervised", "copy_obs"):
        for i, key in enumerate(("rmse_norm_vs_enkf", "rmse_vs_truth")):
            values = [SEEDS[s][actor][i] for s in (0, 1, 2)]
            assert record[actor][key] == pytest.approx(mean(values), rel=1e-12), (actor, key)
            assert record["test"][actor][key] == pytest.approx({"mean": mean(values), "std": float(np.std(values))},
                                                              rel=1e-12)
    assert record["no_da"]["rmse_norm_vs_enkf"] == pytest.approx(5.0, rel=1e-12)
    assert record["enkf"] == {"rmse_vs_truth": pytest.approx(ENKF_TRUTH, rel=1e-12)}
    # the worst of every seed's eval path and test set
    assert record["cycles_completed"] == 57
    assert record["rl"]["cycles_completed"] == 58 and record["copy_obs"]["cycles_completed"] == 60
    assert record["train_steps"] == 2_500_000
    assert record["path_steps_per_s"] == pytest.approx(101.0)
    assert record["active_paths_at_end"] == [3, 4, 5]
    assert record["of_training_paths"] == 5  # smoke trains on paths 1..5
    assert (record["cycles"], record["burn_in"]) == (60, 5)
    assert record["eval_path"]["path"] == 0
    assert record["eval_path"]["rl"]["rmse_norm_vs_enkf"] == pytest.approx(0.2 + 0.01, rel=1e-12)  # mean of +0, +.01, +.02
    assert record["eval_path"]["enkf"] == {"rmse_vs_truth": pytest.approx(0.51)}
    assert (record["test"]["n_paths"], record["test"]["spinup_seed"]) == (N_TEST, smoke_cfg.test.seed)
    # per test path, in path order, the mean over seeds of rl's error on it
    for i, key in enumerate(("rmse_norm_vs_enkf", "rmse_vs_truth")):
        expected = np.mean([per_path_values(SEEDS[s]["rl"][i], s) for s in (0, 1, 2)], axis=0)
        np.testing.assert_allclose(record["test"]["per_path_rl"][key], expected, rtol=1e-12)
    for entry, s in zip(record["per_seed"], (0, 1, 2)):
        assert entry["seed"] == s and entry["run_dir"].endswith(f"clone_s{s}")
        assert entry["train_steps"] == SEEDS[s]["train_steps"] and entry["train_wall_s"] == 10.0 + s
        assert entry["test"]["rl"] == {"rmse_norm_vs_enkf": pytest.approx(SEEDS[s]["rl"][0]),
                                       "rmse_vs_truth": pytest.approx(SEEDS[s]["rl"][1]),
                                       "cycles_completed": SEEDS[s]["test_cycles"]}
        assert entry["eval_path"]["rl"]["cycles_completed"] == SEEDS[s]["eval_cycles"]
        # [path-steps, RMSE_norm vs stored xa, RMSE vs truth] of every evaluation, both CSV files
        assert entry["eval_curve"] == [[x, e, t] for x, e, t in CURVES[s]]
        assert entry["models"]["rl"] == {"which": "final", "file": "final_model.safetensors",  # what was measured
                                         "steps": SEEDS[s]["train_steps"], "sha256": f"{s:064x}"}
        assert entry["data"]["paths"]["sha256"] == "0" * 64
    gains = [1 - SEEDS[s]["rl"][0] / SEEDS[s]["supervised"][0] for s in (0, 1, 2)]
    assert record["improvement_over_clone"]["per_seed"] == pytest.approx(gains, rel=1e-12)
    assert record["improvement_over_clone"]["mean"] == pytest.approx(mean(gains), rel=1e-12)
    # the report's command, after the commands that made its runs (command.txt of each run)
    assert record["provenance"]["config_hash"] == smoke_cfg.hash() and record["provenance"]["command"].endswith("; cmd")


def test_fit_record_checks_on_the_mean_and_per_seed(clone_runs):
    """Every check by hand: rl vs copy-obs 0.12/0.30, 0.32/0.31, 0.25/0.25 (mean 0.23/0.287); vs
    truth 0.55, 0.60, 0.64 against 1.1 x 0.5 and 1.2 x 0.5; vs the clone 0.12/0.12, 0.32/0.24,
    0.25/0.20 against 1.1x and 1.25x; cycles 57 (eval path) / 58 (test) / 60; train steps 1024, 2.5M, 2M + 64 (inside the
    rollout of 2 paths x 64 cycles that crosses the 2M budget: a pass)."""
    checks = fit_record(clone_runs, "clone", "cmd", 1.0)["checks"]

    def c(mean_ok, passing):
        return {"mean": mean_ok, "seeds_passing": passing, "of_seeds": 3}
    assert checks == {
        "completes_every_path": c(False, 1),
        "below_copy_obs": c(True, 1),
        "vs_truth_within_1.2x_enkf": c(True, 2),
        "vs_truth_within_1.1x_enkf": c(False, 1),
        "train_steps_within_2M": c(False, 2),
        "within_1.25x_supervised": c(True, 2),
        "within_1.1x_supervised": c(False, 1),
        "below_clone": c(False, 0),
    }


def test_recheck_computes_a_records_checks_again_from_what_it_keeps(clone_runs, smoke_cfg):
    """A record whose checks were written under another rule (here: train_steps_within_2M, which
    seed 2's 2M + 64 path-steps now passes, and below_copy_obs stored wrong) gets the checks
    fit_record gives now, every number else unchanged;
    a record whose checks are current comes back as it is, provenance included."""
    record = json.loads(json.dumps(fit_record(clone_runs, "clone", "cmd", 1.0)))   # as read from its file
    assert recheck(record, smoke_cfg) == record
    stale = json.loads(json.dumps(record))
    stale["checks"]["train_steps_within_2M"] = {"mean": False, "seeds_passing": 1, "of_seeds": 3}
    stale["checks"]["below_copy_obs"] = {"mean": False, "seeds_passing": 3, "of_seeds": 3}
    del stale["provenance"]["config"]["train"]["env_threads"]       # a record older than the key
    again = recheck(stale, smoke_cfg)
    assert again["checks"] == record["checks"]
    assert {k: v for k, v in again.items() if k not in ("checks", "provenance")} == \
        {k: v for k, v in record.items() if k not in ("checks", "provenance")}
    assert again["provenance"]["checks_from_commit"] and again["provenance"]["command"] == record["provenance"]["command"]


def test_recheck_keeps_a_truth_records_checks_against_the_enkf(clone_runs, smoke_cfg):
    record = fit_record(clone_runs, "clone", "cmd", 1.0)
    sweep = [{"inflation": 1.5, "rmse_vs_truth": 0.58}, {"inflation": 5.0, "rmse_vs_truth": 0.62}]
    record = add_enkf_comparison(record, sweep, 5.0)     # rl vs truth 0.55, 0.60, 0.64 (mean 0.597)
    stale = json.loads(json.dumps(record))
    stale["checks"]["beats_best_inflation_enkf_vs_truth"]["seeds_passing"] = 0
    assert recheck(stale, smoke_cfg)["checks"] == record["checks"]
    assert record["checks"]["beats_best_inflation_enkf_vs_truth"] == {"mean": False, "seeds_passing": 1, "of_seeds": 3}


def test_fit_record_of_scratch_runs_takes_the_supervised_reference_from_clone_runs(tmp_path, smoke_cfg, clone_runs):
    scratch = [make_run(tmp_path / f"scratch_s{s}", smoke_cfg, s, SCRATCH, CURVES[s]) for s in (0, 1, 2)]
    alone = fit_record(scratch, "scratch", "cmd", 1.0)
    assert "supervised" not in alone and "within_1.25x_supervised" not in alone["checks"]
    record = fit_record(scratch, "scratch", "cmd", 1.0, supervised_runs=clone_runs)
    sup_norm = mean([SEEDS[s]["supervised"][0] for s in (0, 1, 2)])
    sup_truth = mean([SEEDS[s]["supervised"][1] for s in (0, 1, 2)])
    assert record["supervised"]["rmse_norm_vs_enkf"] == pytest.approx(sup_norm, rel=1e-12)
    assert record["supervised"]["rmse_vs_truth"] == pytest.approx(sup_truth, rel=1e-12)
    assert record["supervised"]["from_runs"] == [str(d) for d in clone_runs]
    # the same reference for every seed: rl 0.12, 0.32, 0.25 against 1.25 x 0.18667 = 0.2333
    assert record["checks"]["within_1.25x_supervised"] == {"mean": True, "seeds_passing": 1, "of_seeds": 3}
    assert "below_clone" not in record["checks"] and "improvement_over_clone" not in record
    assert record["init"] == "scratch"


def _without_provenance(record: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in record.items() if k != "provenance"}))


def assert_same_record(a: dict, b: dict) -> None:
    """Equal but for provenance and float rounding (a mean taken in another order)."""
    def same(x, y, where):
        if isinstance(x, dict):
            assert isinstance(y, dict) and x.keys() == y.keys(), where
            for k in x:
                same(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list):
            assert isinstance(y, list) and len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                same(u, v, f"{where}[{i}]")
        elif isinstance(x, float):
            assert x == pytest.approx(y, rel=1e-12), where
        else:
            assert x == y, where
    same(_without_provenance(a), _without_provenance(b), "record")


@pytest.mark.parametrize("kind", ["clone", "scratch"])
def test_a_record_grows_by_seeds_as_if_made_at_once(tmp_path, smoke_cfg, clone_runs, kind):
    """Seed 0's record, then seeds 1 and 2 added to it (`report --add-to`, without seed 0's run
    folder) = the record of the three runs made at once: means, std over seeds, per-path means,
    per-seed entries, checks, the supervised reference (scratch: from the earlier record), the
    commands that made every seed."""
    if kind == "clone":
        runs, init, sup = sorted(clone_runs), "clone", None
    else:
        runs = [make_run(tmp_path / f"scratch_s{s}", smoke_cfg, s, SCRATCH, CURVES[s]) for s in (0, 1, 2)]
        init, sup = "scratch", clone_runs
    at_once = fit_record(runs, init, "cmd", 1.0, sup)
    first = json.loads(json.dumps(fit_record(runs[:1], init, "cmd0", 1.0, sup)))
    grown = fit_record(runs[1:], init, "cmd12", 1.0, None, earlier=first)
    assert grown["seeds"] == [0, 1, 2]
    assert_same_record(grown, at_once)
    assert grown["checks"] == at_once["checks"] and grown["checks"]["completes_every_path"]["of_seeds"] == 3
    made = grown["provenance"]["command"].split(" ; ")
    assert made[:3] == at_once["provenance"]["command"].split(" ; ")[:3] and made[3] == "cmd12"
    assert grown["provenance"]["config_hash"] == at_once["provenance"]["config_hash"]  # seed 0's config
    # a seed among the new runs replaces its earlier entry
    again = make_run(tmp_path / "again_s0", smoke_cfg, 0, ALL if kind == "clone" else SCRATCH, CURVES[0])
    replaced = fit_record([again], init, "cmd", 1.0, None, earlier=json.loads(json.dumps(at_once)))
    assert replaced["seeds"] == [0, 1, 2]
    assert [e["run_dir"] for e in replaced["per_seed"]] == [str(again), str(runs[1]), str(runs[2])]


def test_reporting_the_same_runs_onto_their_record_again_changes_nothing(tmp_path, smoke_cfg):
    """fit_records.sh reports every setting onto its record each time it runs: seeds 1 and 2 again
    onto the grown record = the record made at once, per test path too, whether the record keeps
    each seed's test-path values or (a record made before it did) only their mean over seeds. A
    seed replaced by another run in such an older record is refused: its values are unknown."""
    runs = [make_run(tmp_path / f"s{s}", smoke_cfg, s, ALL, CURVES[s]) for s in (0, 1, 2)]
    at_once = fit_record(runs, "clone", "cmd", 1.0)
    first = json.loads(json.dumps(fit_record(runs[:1], "clone", "cmd0", 1.0)))
    grown = json.loads(json.dumps(fit_record(runs[1:], "clone", "cmd12", 1.0, None, earlier=first)))
    again = fit_record(runs[1:], "clone", "cmd12", 1.0, None, earlier=grown)
    assert_same_record(again, at_once)
    older = json.loads(json.dumps(grown))
    for entry in older["per_seed"]:
        del entry["per_path_rl"]
    assert_same_record(fit_record(runs[1:], "clone", "cmd12", 1.0, None, earlier=older), at_once)
    rerun = make_run(tmp_path / "rerun_s1", smoke_cfg, 1, ALL, CURVES[1])
    with pytest.raises(DataError, match="seed 1 of the earlier record was made by another run"):
        fit_record([rerun, runs[2]], "clone", "cmd", 1.0, None, earlier=older)
    # with each seed's values kept, another run of seed 1 simply takes its place
    assert fit_record([rerun, runs[2]], "clone", "cmd", 1.0, None, earlier=grown)["seeds"] == [0, 1, 2]


def test_a_record_made_before_a_setting_existed_grows_when_the_runs_use_its_earlier_value(tmp_path, smoke_cfg):
    """An earlier record whose config lacks keys added since (rl.config.ADDED_SETTINGS) grows by
    runs that have them at the value earlier runs had, and is refused for runs with another value."""
    runs = [make_run(tmp_path / f"s{s}", smoke_cfg, s, ALL, CURVES[s]) for s in (0, 1, 2)]
    older = json.loads(json.dumps(fit_record(runs[:1], "clone", "cmd0", 1.0)))
    del older["provenance"]["config"]["agent"]["lstm_dtype"], older["provenance"]["config"]["ppo"]["lr_schedule"]
    assert_same_record(fit_record(runs[1:], "clone", "cmd12", 1.0, None, earlier=older),
                       fit_record(runs, "clone", "cmd", 1.0))
    # a section a PPO run does not read (offpolicy:, added with SAC/TD3) and the threads, which change
    # how, not what, a run computes: compared as the config hash compares them
    before_offpolicy = json.loads(json.dumps(older))
    del before_offpolicy["provenance"]["config"]["offpolicy"]
    before_offpolicy["provenance"]["config"]["train"]["torch_threads"] += 1
    assert_same_record(fit_record(runs[1:], "clone", "cmd12", 1.0, None, earlier=before_offpolicy),
                       fit_record(runs, "clone", "cmd", 1.0))
    bf16 = dataclasses.replace(smoke_cfg, agent=dataclasses.replace(smoke_cfg.agent, lstm_dtype="bfloat16"))
    with pytest.raises(DataError, match=r"another config \(agent.lstm_dtype differ\)"):
        fit_record([make_run(tmp_path / "bf16_s1", bf16, 1, ALL, CURVES[1])], "clone", "cmd", 1.0, None, earlier=older)


def test_adding_seeds_to_a_record_of_another_setting_config_or_test_set_is_refused(tmp_path, smoke_cfg, clone_runs):
    record = json.loads(json.dumps(fit_record(clone_runs[:1], "clone", "cmd", 1.0)))
    other_lr = dataclasses.replace(smoke_cfg, ppo=dataclasses.replace(smoke_cfg.ppo, learning_rate=0.123))
    lr_run = make_run(tmp_path / "lr_s1", other_lr, 1, ALL, CURVES[1])
    with pytest.raises(DataError, match=r"another config \(ppo.learning_rate differ\)"):
        fit_record([lr_run], "clone", "cmd", 1.0, None, earlier=record)
    study_run = make_run(tmp_path / "study_s1", smoke_cfg, 1, ALL, CURVES[1],
                         command="enkfrl train --exp smoke --study fit_study --variant v1 --seed 1")
    with pytest.raises(DataError, match="the earlier record is of study None, the runs of fit_study"):
        fit_record([study_run], "clone", "cmd", 1.0, None, earlier=record)
    other_test = json.loads(json.dumps(record))
    other_test["test"]["spinup_seed"] += 1
    with pytest.raises(DataError, match="another test set"):
        fit_record([clone_runs[1]], "clone", "cmd", 1.0, None, earlier=other_test)


def test_report_add_to_through_the_cli(smoke_dir, smoke_cfg, monkeypatch):
    monkeypatch.chdir(smoke_dir)
    runs = [make_run(smoke_dir / f"logs/smoke/s{s}", smoke_cfg, s, ALL, CURVES[s]) for s in (0, 1)]
    out = "results/fit/smoke.json"
    assert CliRunner().invoke(main, ["report", "--runs", str(runs[0]), "--init", "clone", "--out", out]).exit_code == 0
    result = CliRunner().invoke(main, ["report", "--runs", str(runs[1]), "--init", "clone", "--add-to", out,
                                       "--out", out])
    assert result.exit_code == 0, (result.output, result.exception)
    record = json.loads((smoke_dir / out).read_text())
    assert record["seeds"] == [0, 1] and record["checks"]["below_copy_obs"]["of_seeds"] == 2
    assert_same_record(record, fit_record(runs, "clone", "", 0.0))
    bad = CliRunner().invoke(main, ["report", "--runs", str(runs[1]), "--init", "clone", "--add-to", "nope.json",
                                    "--out", out])
    assert bad.exit_code == 1 and "nope.json not found" in bad.output


def test_add_enkf_comparison_checks_against_the_stored_and_the_best_inflation():
    record = {"rl": {"rmse_vs_truth": 0.52}, "enkf": {"rmse_vs_truth": 0.5}, "checks": {},
              "per_seed": [{"test": {"rl": {"rmse_vs_truth": x}, "enkf": {"rmse_vs_truth": 0.5}}}
                           for x in (0.44, 0.48, 0.64)]}
    sweep = [{"inflation": 1.0, "rmse_vs_truth": 0.7}, {"inflation": 1.5, "rmse_vs_truth": 0.45},
             {"inflation": 5.0, "rmse_vs_truth": 0.5}]
    out = add_enkf_comparison(record, sweep, 5.0)
    assert out["enkf_inflation_sweep"] == {"stored_inflation": 5.0, "rows": sweep, "best": sweep[1]}
    assert out["checks"]["beats_stored_enkf_vs_truth"] == {"mean": False, "seeds_passing": 2, "of_seeds": 3}
    assert out["checks"]["beats_best_inflation_enkf_vs_truth"] == {"mean": False, "seeds_passing": 1, "of_seeds": 3}


@pytest.fixture
def smoke_dir(tmp_path_factory, tmp_path) -> Path:
    return copy_smoke_data(tmp_path_factory, tmp_path / "smoke")


def stored_test_rmse(smoke_dir: Path, burn_in: int) -> float:
    """The stored test split's EnKF analysis RMSE vs truth, mean after burn_in, mean over paths."""
    with h5py.File(smoke_dir / "data/smoke/test_paths.h5", "r") as f:
        err = np.sqrt(np.mean((f["analysis_mean"][()] - f["truth"][()]) ** 2, axis=-1))
    return float(err[:, burn_in:].mean(axis=1).mean())


def test_compare_with_tuned_enkf_sweeps_the_studys_inflations_on_the_test_paths(smoke_dir, smoke_cfg):
    """The EnKF of every inflation of the enkf_inflation study and the run's own, on the test
    paths: the row of the inflation the stored test data were made with reproduces them."""
    from rl.config import load_ablation
    assert smoke_cfg.filter.inflation == 5.0
    cfg = dataclasses.replace(smoke_cfg, filter=dataclasses.replace(smoke_cfg.filter, inflation=2.0),
                              reward=dataclasses.replace(smoke_cfg.reward, target="truth"))
    test_cfg = split_config(cfg, "test")
    starts = read_spinup(split_config(smoke_cfg, "test"), smoke_dir / "data/smoke/test_spinup.h5")["starts"]
    record = {"rl": {"rmse_vs_truth": 0.3}, "enkf": {"rmse_vs_truth": 0.5}, "checks": {},
              "per_seed": [{"test": {"rl": {"rmse_vs_truth": 0.3}, "enkf": {"rmse_vs_truth": 0.5}}}]}
    out = compare_with_tuned_enkf(record, cfg, test_cfg, starts, CONFIG)
    sweep = out["enkf_inflation_sweep"]
    study = {r.cfg.filter.inflation for r in load_ablation(CONFIG, "enkf_inflation")[1]}
    assert [r["inflation"] for r in sweep["rows"]] == sorted(study | {2.0}) and sweep["stored_inflation"] == 2.0
    row = {r["inflation"]: r for r in sweep["rows"]}
    assert row[5.0]["rmse_vs_truth"] == pytest.approx(stored_test_rmse(smoke_dir, cfg.paths.burn_in), rel=1e-10)
    assert sweep["best"] == min(sweep["rows"], key=lambda r: r["rmse_vs_truth"])
    assert len({r["rmse_vs_truth"] for r in sweep["rows"]}) == len(sweep["rows"])  # inflation matters


@pytest.fixture
def figures(monkeypatch) -> dict:
    seen = {}
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        ax = fig.axes[0]
        seen[Path(fname).name] = {
            "lines": {line.get_label(): (np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float))
                      for line in ax.get_lines()},
            "bands": [np.asarray(c.get_paths()[0].vertices) for c in ax.collections], "title": ax.get_title()}
        return save(fig, fname, *args, **kwargs)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


def test_report_and_curves_through_the_cli(smoke_dir, smoke_cfg, monkeypatch, figures):
    """`enkfrl report` writes the record and prints every check; a run trained in a study records
    it; `enkfrl curves` draws the mean over seeds at the steps every seed evaluated, the min-max
    band, and the record's copy-obs and supervised levels on the eval path."""
    monkeypatch.chdir(smoke_dir)
    runs = [make_run(smoke_dir / f"logs/smoke/s{s}", smoke_cfg, s, ALL, CURVES[s],
                     command=f"enkfrl train --exp smoke --study fit_study --variant v1 --seed {s}") for s in (0, 1, 2)]
    result = CliRunner().invoke(main, ["report", "--runs", ",".join(map(str, runs)), "--init", "clone",
                                       "--out", "results/fit/smoke.json"])
    assert result.exit_code == 0, (result.output, result.exception)
    record = json.loads((smoke_dir / "results/fit/smoke.json").read_text())
    assert (record["study"], record["variant"]) == ("fit_study", "v1")
    assert record == json.loads(json.dumps(fit_record(runs, "clone", "", 0.0))) | {"provenance": record["provenance"]}
    assert "enkf_inflation_sweep" not in record  # a stored-target record
    lines = result.output.splitlines()
    assert lines[0] == "wrote results/fit/smoke.json" and len(lines) == 1 + len(record["checks"])
    assert "  below_copy_obs               mean pass, 1/3 seeds" in lines
    assert "  below_clone                  mean FAIL, 0/3 seeds" in lines
    for run in runs:  # the record says how to make it again: train and evaluate each run, then report
        assert f"enkfrl train --exp smoke --study fit_study --variant v1 --seed" in record["provenance"]["command"]
        assert f"enkfrl evaluate --run {run}" in record["provenance"]["command"]

    result = CliRunner().invoke(main, ["curves", "--record", "clone=results/fit/smoke.json", "--title", "t",
                                       "--out", "curves.png"])
    assert result.exit_code == 0, (result.output, result.exception)
    fig = figures["curves.png"]
    x, y = fig["lines"]["clone (3 seeds)"]
    np.testing.assert_array_equal(x, [512, 1024, 2048])  # 1536: seed 2 only
    expected = np.array([[dict((s, e) for s, e, _ in CURVES[seed])[step] for step in (512, 1024, 2048)]
                         for seed in (0, 1, 2)])
    np.testing.assert_allclose(y, expected.mean(axis=0), rtol=1e-12)
    band = fig["bands"][0]
    assert band[:, 1].min() == pytest.approx(expected.min()) and band[:, 1].max() == pytest.approx(expected.max())
    assert fig["lines"]["copy obs"][1][0] == pytest.approx(record["eval_path"]["copy_obs"]["rmse_norm_vs_enkf"])
    assert fig["lines"]["supervised (cloned)"][1][0] == pytest.approx(
        record["eval_path"]["supervised"]["rmse_norm_vs_enkf"])
    assert fig["title"] == "t"
    bad = CliRunner().invoke(main, ["curves", "--record", "clone=missing.json", "--out", "c.png"])
    assert bad.exit_code == 1 and "--record clone=missing.json: expected LABEL=path/to/record.json" in bad.output


def test_report_of_a_truth_reward_run_compares_with_the_tuned_enkf(smoke_dir, smoke_cfg, monkeypatch):
    """reward.target truth: the record holds the EnKF of every inflation on the run's test paths
    (read from data/smoke/test_*.h5, made with inflation 5.0: that row is the stored EnKF) and
    the two checks against the stored and the best EnKF."""
    monkeypatch.chdir(smoke_dir)
    cfg = dataclasses.replace(smoke_cfg, reward=dataclasses.replace(smoke_cfg.reward, target="truth"))
    runs = [make_run(smoke_dir / f"logs/smoke/t{s}", cfg, s, ALL, CURVES[s]) for s in (0, 1)]
    result = CliRunner().invoke(main, ["report", "--runs", ",".join(map(str, runs)), "--init", "clone",
                                       "--out", "truth.json"])
    assert result.exit_code == 0, (result.output, result.exception)
    record = json.loads((smoke_dir / "truth.json").read_text())
    assert record["reward_target"] == "truth"
    sweep = record["enkf_inflation_sweep"]
    row = {r["inflation"]: r["rmse_vs_truth"] for r in sweep["rows"]}
    assert sweep["stored_inflation"] == 5.0 and set(row) == {1.0, 1.05, 1.5, 5.0}
    assert row[5.0] == pytest.approx(stored_test_rmse(smoke_dir, cfg.paths.burn_in), rel=1e-10)
    best = min(row.values())
    rl = [SEEDS[s]["rl"][1] for s in (0, 1)]
    assert record["checks"]["beats_best_inflation_enkf_vs_truth"] == {
        "mean": mean(rl) < best, "seeds_passing": sum(x < best for x in rl), "of_seeds": 2}
    assert record["checks"]["beats_stored_enkf_vs_truth"] == {"mean": False, "seeds_passing": 0, "of_seeds": 2}
    assert "  beats_best_inflation_enkf_vs_truth" in result.output
