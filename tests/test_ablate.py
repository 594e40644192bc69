"""Ablation studies: the config section, every measure on a tiny smoke study, the JSON written."""
from __future__ import annotations

import json

import pytest
import torch as th
import yaml
from click.testing import CliRunner

from cli.main import main
from conftest import read_config_yaml
from enkf.config import load_config, ConfigError, ablation_names, load_ablation


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
def test_a_tiny_study_runs_and_writes_its_json(in_tmp, measure, variants):
    _write_study(in_tmp / "config.yaml", {
        "question": "tiny", "measure": measure, "experiments": ["smoke"], "seeds": [0, 1],
        "overrides": {"train": {"total_steps": 128}}, "variants": variants})
    result = CliRunner().invoke(main, ["ablate", "--question", "tiny"])
    assert result.exit_code == 0, result.output
    doc = json.loads((in_tmp / "results/ablations/tiny.json").read_text())
    assert doc["measure"] == measure and len(doc["records"]) == 2 * len(variants)
    assert {r["variant"] for r in doc["summary"]} == set(variants)
    assert all(r["seeds"] == [0, 1] for r in doc["summary"])
    assert "| smoke |" in result.output
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
