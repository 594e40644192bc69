"""Ablation studies: the config section, every measure on a tiny smoke study (its values recomputed
here from the data and the models, independently of rl/studies/ablate.py), records and the table
(the studies on Ray: tests/test_sweep.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch as th
import yaml

from conftest import read_config_yaml
from enkf.config import ConfigError
from rl.config import load_config, ablation_names, load_ablation
from enkf.io import DataError, atomic_write_json
from rl.envs.assimilation import AssimilationEnv
from rl.studies.ablate import (_cloned_model, finished_record, located_data, markdown_table, measure_run,
                               record_path, study_table, trial_record)
from rl.training.curriculum import Curriculum, CurriculumCallback
from rl.training.train import agents_per_path

from rl_checks import closed_loop, oracle_rmse


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = th.get_num_threads()
    th.set_num_threads(1)
    yield
    th.set_num_threads(before)


def test_every_study_in_config_yaml_loads():
    from conftest import CONFIG
    for name in ablation_names(CONFIG):
        meta, runs = load_ablation(CONFIG, name)
        assert runs and meta["measure"] in ("enkf_skill", "sensitivity", "bounds", "clone", "finetune", "train")
        seeds = {r.seed for r in runs}
        assert all(r.cfg.train.seed == r.seed for r in runs) and len(seeds) >= 1
        if meta["measure"] == "train":  # training studies vary the training seed only: same data
            assert all(r.cfg.seed == load_config(CONFIG, r.experiment).seed for r in runs)
        else:
            assert all(r.cfg.seed == r.seed for r in runs)


def _write_study(path, study: dict):
    raw = read_config_yaml()
    raw["ablations"] = {"tiny": study}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_variant_overrides_are_validated(tmp_path):
    cfg_path = tmp_path / "config.yaml"
    _write_study(cfg_path, {"question": "q", "measure": "enkf_skill", "experiments": ["smoke"],
                            "seeds": [0], "overrides": {}, "variants": {"bad": {"filter": {"n_ens": 1}}}})
    with pytest.raises(ConfigError, match="ablations.tiny.variants.bad.*filter.n_ens"):
        load_ablation(cfg_path, "tiny")
    _write_study(cfg_path, {"question": "q", "measure": "nope", "experiments": ["smoke"],
                            "seeds": [0], "overrides": {}, "variants": {"a": {}}})
    with pytest.raises(ConfigError, match="measure"):
        load_ablation(cfg_path, "tiny")


@pytest.mark.parametrize("measure,variants", [
    ("enkf_skill", {"infl_1.5": {"filter": {"inflation": 1.5}}, "infl_5": {}}),
    ("sensitivity", {"stored": {}}),
    ("bounds", {"halt_1": {"env": {"halt_bound": 1.0}}}),  # a bound the baselines leave
    ("clone", {"xb_y": {"env": {"features": ["forecast_mean", "obs"]}}}),
    ("finetune", {"default": {}, "gamma_0": {"ppo": {"gamma": 0.0}}}),
])
def test_every_measure_on_a_tiny_study_and_its_table(in_tmp, measure, variants):
    """What a trial does (measure, record), in this process; then the table from the records."""
    study = {"question": "tiny", "measure": measure, "experiments": ["smoke"], "seeds": [0, 1],
             "overrides": {"train": {"total_steps": 128}}, "variants": variants}
    _write_study(in_tmp / "config.yaml", study)
    meta, runs = load_ablation(in_tmp / "config.yaml", "tiny")
    for run in runs:
        result, source = measure_run(run, measure, in_tmp / "data")
        assert source == "computed in memory"  # no data/ here
        atomic_write_json(record_path(in_tmp / "rec", "tiny", run),
                          trial_record("tiny", meta, run, result, 1.0, "enkfrl ablate --question tiny", {}))
    doc = study_table("tiny", meta, study, runs, in_tmp / "rec", "enkfrl ablate --question tiny", 2.0)
    assert doc["measure"] == measure and len(doc["records"]) == 2 * len(variants)
    assert {r["variant"] for r in doc["summary"]} == set(variants)
    assert all(r["seeds"] == [0, 1] for r in doc["summary"])
    assert doc["provenance"]["config"] == study and "| smoke |" in markdown_table(doc)
    assert all("config" not in r["provenance"] and r["provenance"]["config_hash"] == r["config_hash"]
               for r in doc["records"])
    for run in runs:
        rec = next(r["result"] for r in doc["records"] if (r["variant"], r["seed"]) == (run.variant, run.seed))
        data, norm, _ = located_data(run.cfg, in_tmp / "data", 1)
        CHECKS[measure](run.cfg, data, norm, rec)
    if measure == "finetune":  # the variants share the cloned start and differ in PPO only
        by_variant = {r["variant"]: r["result"] for r in doc["records"] if r["seed"] == 0}
        assert by_variant["default"]["supervised_rmse_norm_vs_enkf"] == by_variant["gamma_0"]["supervised_rmse_norm_vs_enkf"]
        assert by_variant["default"]["rl_rmse_norm_vs_enkf"] != by_variant["gamma_0"]["rl_rmse_norm_vs_enkf"]


def rmse_over_variables(a, b):
    return np.sqrt(np.mean((a - b) ** 2, axis=-1))


def check_enkf_skill(cfg, data, norm, rec):
    """Time means after burn-in of the stored runs' RMSEs, recomputed from the arrays."""
    b = cfg.paths.burn_in
    analysis = rmse_over_variables(data["analysis_mean"], data["truth"])[:, b:].mean(axis=1)
    forecast = rmse_over_variables(data["forecast_mean"], data["truth"])[:, b:].mean(axis=1)
    obs = rmse_over_variables(data["obs"], data["truth"][..., np.array(cfg.obs_index)])[:, b:].mean(axis=1)
    assert rec["analysis_rmse"] == pytest.approx(analysis.mean(), rel=1e-12)
    assert rec["forecast_rmse"] == pytest.approx(forecast.mean(), rel=1e-12)
    assert rec["obs_rmse"] == pytest.approx(obs.mean(), rel=1e-12)
    assert rec["analysis_rmse_median"] == pytest.approx(np.median(analysis), rel=1e-12)
    assert rec["diverged_paths"] == int(np.sum(analysis > obs)) and rec["paths"] == cfg.paths.n_paths == 6
    assert 0 < rec["analysis_rmse"] < rec["obs_rmse"]


def check_sensitivity(cfg, data, norm, rec):
    # smoke has fewer variables than members: the exact oracle never leaves the stored run
    assert rec["float64_cycles_to_1e-6"] == rec["n_cycles"] == 60


def baseline_cycles(cfg, data, norm, path: int, copy_obs: bool) -> int:
    """Cycles no-DA (xa = xb) or copy-obs (xa = y where observed) completes on path, stepped here."""
    env = AssimilationEnv(cfg, data, norm, [path])
    env.reset(options={"path": path})
    idx = np.array(cfg.obs_index)
    for k in range(env.n_cycles):
        xa = env.forecast_mean.copy()
        if copy_obs:
            xa[idx] = data["obs"][path, k]
        if env.step(env.action_for(xa))[2]:
            return k
    return env.n_cycles


def check_bounds(cfg, data, norm, rec):
    """Shares outside [-b, b] of the normalised arrays, normalised here from the climatology's
    centre and half range; the baselines' cycles under the variant's halt bound, stepped here."""
    idx = np.array(cfg.obs_index)
    c, h = norm.centre, norm.half_range
    z = {"forecast_mean": (data["forecast_mean"] - c) / h, "obs": (data["obs"] - c[idx]) / h[idx],
         "analysis_mean": (data["analysis_mean"] - c) / h,
         "innovation": (data["obs"] - data["forecast_mean"][..., idx]) / h[idx],
         "spread": data["forecast_spread"] / h}
    for name, values in z.items():
        for b in (1, 2, 3):
            assert rec[f"{name}_outside_{b}"] == pytest.approx(np.mean(np.abs(values) > b), abs=1e-12), (name, b)
    assert cfg.env.halt_bound == 1.0
    paths = range(min(cfg.paths.n_paths, 5))
    for actor, copy_obs in (("copy_obs", True), ("no_da", False)):
        expected = np.mean([baseline_cycles(cfg, data, norm, p, copy_obs) for p in paths])
        assert rec[f"{actor}_cycles_completed"] == expected, actor
    assert rec["copy_obs_cycles_completed"] < cfg.paths.n_cycles  # the count is of halts, not a constant


def check_supervised(cfg, data, norm, rec, model):
    """The cloned policy's figures: its error on the held-out training path's stored pairs, the
    exploration std set from it, its closed loop on the eval path (stepped here)."""
    held_out = [cfg.paths.train_paths[1]]  # 5 training paths: the last one held out
    assert rec["clone_heldout_rmse"] == pytest.approx(oracle_rmse(model, cfg, norm, data, held_out), rel=1e-4)
    assert rec["log_std_init"] == pytest.approx(np.log(rec["clone_heldout_rmse"]), rel=1e-12)
    loop = closed_loop(model, cfg, data, norm, cfg.paths.eval_path, cfg.paths.burn_in)
    for key in ("cycles_completed", "rmse_norm_vs_enkf", "rmse_vs_truth"):
        assert rec[f"supervised_{key}"] == pytest.approx(loop[key], rel=1e-9), key


def check_clone(cfg, data, norm, rec):
    assert cfg.env.features == ["forecast_mean", "obs"]  # the variant's features
    model, _ = _cloned_model(cfg, data, norm)  # cloning is deterministic: the trial's model again
    assert model.policy.features_extractor is not None
    check_supervised(cfg, data, norm, rec, model)
    assert rec["clone_wall_s"] > 0


def check_finetune(cfg, data, norm, rec):
    """The cloned start, then train.total_steps path-steps of PPO (n agent-steps each for the
    pointwise agent) with the curriculum: the rl_ figures are that model's closed loop."""
    model, _ = _cloned_model(cfg, data, norm)
    check_supervised(cfg, data, norm, rec, model)
    curriculum = Curriculum(*cfg.paths.train_paths, cfg.curriculum.episodes_k)
    model.learn(cfg.train.total_steps * agents_per_path(cfg), callback=CurriculumCallback(curriculum))
    loop = closed_loop(model, cfg, data, norm, cfg.paths.eval_path, cfg.paths.burn_in)
    for key in ("cycles_completed", "rmse_norm_vs_enkf", "rmse_vs_truth"):
        assert rec[f"rl_{key}"] == pytest.approx(loop[key], rel=1e-9), key
    assert rec["ppo_steps"] == cfg.train.total_steps == 128 and rec["curriculum_paths"] == curriculum.n_active
    assert rec["ppo_steps_per_s"] == pytest.approx(rec["ppo_steps"] / rec["ppo_wall_s"], rel=1e-12)


CHECKS = {"enkf_skill": check_enkf_skill, "sensitivity": check_sensitivity, "bounds": check_bounds,
          "clone": check_clone, "finetune": check_finetune}


def test_a_record_counts_only_for_its_own_config_and_the_table_needs_every_record(in_tmp):
    study = {"question": "q", "measure": "enkf_skill", "experiments": ["smoke"], "seeds": [0, 1],
             "overrides": {}, "variants": {"a": {}}}
    _write_study(in_tmp / "config.yaml", study)
    meta, runs = load_ablation(in_tmp / "config.yaml", "tiny")
    path = record_path(in_tmp / "rec", "tiny", runs[0])
    assert path.name == "smoke__a__seed0.json" and finished_record(path, runs[0], "enkf_skill") is None
    atomic_write_json(path, trial_record("tiny", meta, runs[0], {"x": 1.0}, 1.0, "c", {}))
    assert finished_record(path, runs[0], "enkf_skill")["result"] == {"x": 1.0}
    assert finished_record(path, runs[0], "bounds") is None  # another measure
    assert finished_record(path, runs[1], "enkf_skill") is None  # another config (seed)
    with pytest.raises(DataError, match="smoke__a__seed1.json: no finished record"):
        study_table("tiny", meta, study, runs, in_tmp / "rec", "c", 1.0)
