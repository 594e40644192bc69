"""Ablation studies: the config section, every measure on a tiny smoke study, records and the table
(the studies on Ray: tests/test_sweep.py)."""
from __future__ import annotations

import pytest
import torch as th
import yaml

from conftest import read_config_yaml
from enkf.config import ConfigError
from rl.config import load_config, ablation_names, load_ablation
from enkf.io import DataError, atomic_write_json
from rl.studies.ablate import finished_record, markdown_table, measure_run, record_path, study_table, trial_record


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
    ("bounds", {"halt_2": {"env": {"halt_bound": 2.0}}}),
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
    rec = doc["records"][0]["result"]
    if measure == "enkf_skill":
        assert 0 < rec["analysis_rmse"] < rec["obs_rmse"] and rec["paths"] == 6
    if measure == "sensitivity":
        # smoke has fewer variables than members: the exact oracle never leaves the stored run
        assert rec["float64_cycles_to_1e-6"] == rec["n_cycles"] == 60
    if measure == "bounds":
        assert 0 <= rec["obs_outside_3"] <= rec["obs_outside_2"] <= rec["obs_outside_1"] <= 1
    if measure == "clone":
        assert rec["supervised_cycles_completed"] <= 60 and rec["clone_wall_s"] > 0
    if measure == "finetune":
        assert rec["ppo_steps"] == 128 and "rl_rmse_norm_vs_enkf" in rec


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
