"""The classical-filters study: a filter rerun on stored test data (enkf/skill.py), its grid in
config.yaml (rl/config.py) and the study on Ray (rl/studies/filters.py, `enkfrl filters`)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from enkf import datafiles
from enkf.config import ConfigError, test_split
from enkf.skill import filter_skill
from enkf.system import System
from rl.config import filter_grid, load_config, load_filter_study

from conftest import CONFIG, read_config_yaml


@pytest.fixture(scope="module")
def smoke_test_data():
    """The smoke experiment's test split, computed in memory: (its config, spin-up, paths arrays)."""
    cfg = test_split(load_config(CONFIG, "smoke"))
    spin, data = datafiles.compute(cfg, workers=1)
    return cfg, spin, data


def with_filter(cfg, **keys):
    return dataclasses.replace(cfg, filter=dataclasses.replace(cfg.filter, **keys))


# ---- a filter rerun on stored data --------------------------------------------------------------
def test_rerunning_the_stored_filter_reproduces_the_stored_analyses(smoke_test_data):
    """With the settings the data were made with, filter_skill's analysis RMSE equals the stored
    one at every cycle of every path: same initial ensembles, observations and draws."""
    cfg, _, data = smoke_test_data
    out = filter_skill(System.from_config(cfg), data, cfg.paths.burn_in, 64)
    np.testing.assert_allclose(out["analysis_rmse"], data["analysis_rmse"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(out["rmse_vs_truth"], data["analysis_rmse"][:, cfg.paths.burn_in:].mean(axis=1),
                               rtol=1e-12)
    assert out["finite"].all()
    other = filter_skill(System.from_config(with_filter(cfg, method="etkf", inflation=1.2,
                                                        inflation_stage="analysis")), data, cfg.paths.burn_in, 64)
    assert np.abs(other["rmse_vs_truth"] - out["rmse_vs_truth"]).max() > 1e-3  # the settings matter


def test_a_path_that_blows_up_is_counted_not_averaged(smoke_test_data):
    """A non-finite observation makes that path's ensemble non-finite: its RMSE is NaN, it counts
    as diverged, and the other paths are as before. An analysis worse than the observations
    (no inflation, a collapsing ensemble) counts as diverged too."""
    cfg, _, data = smoke_test_data
    system = System.from_config(cfg)
    clean = filter_skill(system, data, cfg.paths.burn_in, 64)
    bad = dict(data, obs=data["obs"].copy())
    bad["obs"][1, 10, 0] = np.nan
    out = filter_skill(system, bad, cfg.paths.burn_in, 64)
    assert np.isnan(out["rmse_vs_truth"][1]) and not out["finite"][1] and out["diverged"][1]
    keep = np.arange(len(out["finite"])) != 1
    np.testing.assert_array_equal(out["rmse_vs_truth"][keep], clean["rmse_vs_truth"][keep])
    starved = filter_skill(System.from_config(with_filter(cfg, inflation=0.8)), data, cfg.paths.burn_in, 64)
    assert starved["diverged"].all() and np.all(starved["rmse_vs_truth"] > starved["obs_rmse"])


# ---- the grid in config.yaml ----------------------------------------------------------------------
def write_grid(tmp_path, grid=None, experiments=None):
    raw = read_config_yaml()
    if grid is not None:
        raw["filters"]["grid"] = grid
        raw["filters"]["experiments"] = {"smoke": {}}
    if experiments is not None:
        raw["filters"]["experiments"] = experiments
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_grid_is_the_product_of_each_methods_lists_with_the_experiments_trims(tmp_path):
    """An experiment's lists replace the grid's, null drops a method; every setting is the
    experiment's config with the four filter keys replaced."""
    grid = {"enkf": {"inflation_stage": ["forecast", "analysis"], "inflation": [1.1, 1.5, 2.0]},
            "letkf": {"inflation_stage": ["analysis"], "inflation": [1.05], "loc_radius": [2.0, 4.0]}}
    path = write_grid(tmp_path, grid, {"smoke": {"enkf": {"inflation": [1.5]}}, "L63": {"letkf": None}})
    settings = load_filter_study(path, "smoke")
    assert [s.name for s in settings] == ["enkf_forecast_infl1.5", "enkf_analysis_infl1.5",
                                          "letkf_analysis_infl1.05_loc2", "letkf_analysis_infl1.05_loc4"]
    base = load_config(path, "smoke")
    s = settings[3]
    assert s.cfg.filter == dataclasses.replace(base.filter, method="letkf", inflation=1.05,
                                               inflation_stage="analysis", loc_radius=4.0)
    assert s.cfg.model == base.model and s.cfg.test == base.test
    assert list(filter_grid(path, "L63")) == ["enkf"]


@pytest.mark.parametrize("grid, experiments, message", [
    ({"enkf": {"inflation": [1.1], "inflation_stage": ["analysis"], "loc_radius": [2.0]}}, None,
     "filters.grid.enkf.loc_radius: only letkf localises"),
    ({"letkf": {"inflation": [1.1], "inflation_stage": ["analysis"]}}, None, "filters.grid.letkf.loc_radius: missing"),
    ({"etkf": {"inflation": [1.1], "stage": ["analysis"]}}, None, "filters.grid.etkf.stage: unknown key"),
    ({"etkf": {"inflation": 1.1, "inflation_stage": ["analysis"]}}, None, "filters.grid.etkf.inflation: expected a non-empty list"),
    ({"etkf": {"inflation": [-1.0], "inflation_stage": ["analysis"]}}, None, "filter.inflation: must be > 0"),
    ({"etkf": {"inflation": [1.1, 1.1], "inflation_stage": ["analysis"]}}, None, "listed twice"),
    ({"eakf": {"inflation": [1.1], "inflation_stage": ["analysis"]}}, None, "filter.method: must be one of"),
    (None, {"L96_1": {}}, "--exp smoke: not under filters.experiments"),
    (None, {"smoke": {"enkf": None, "etkf": None, "letkf": None}}, "leaves no method to run"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_grids_raise_one_line_naming_the_key(tmp_path, grid, experiments, message):
    path = write_grid(tmp_path, grid, experiments)
    with pytest.raises(ConfigError) as e:
        load_filter_study(path, "smoke")
    assert message in str(e.value) and "\n" not in str(e.value)


# ---- the study on Ray ----------------------------------------------------------------------------
def test_filters_study_table_resume_and_the_stored_setting(ray_local, smoke_test_data, tmp_path, monkeypatch):
    """`run_filters` on smoke: a trial per setting, then the table in RESULTS_FORMAT's shape
    (logs/ without record, results/ with it). The grid's row with the stored settings has exactly
    the stored filter's RMSE; the best is the lowest mean without diverged paths; a rerun runs
    no trial."""
    from rl.studies.filters import run_filters
    scfg, spin, data = smoke_test_data
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(CONFIG.read_text())
    datafiles.write(load_config(CONFIG, "smoke"), tmp_path / "data/smoke", spin, data, "test")
    lines = []
    out = run_filters(tmp_path / "config.yaml", "smoke", tmp_path / "data", "enkfrl filters --exp smoke",
                      address=ray_local, echo=lines.append)
    assert out == tmp_path / "logs/filters/smoke.json" and not (tmp_path / "results").exists()
    table = json.loads(out.read_text())
    settings = load_filter_study(CONFIG, "smoke")
    assert len(table["filters"]) == len(settings) == len(list((tmp_path / "logs/filters/smoke").glob("*.json")))
    for k in ("experiment", "headline_on", "test", "n_ens", "burn_in", "filters", "best", "stored", "provenance"):
        assert k in table
    stored = table["stored"]
    assert (stored["method"], stored["inflation"], stored["inflation_stage"]) == ("enkf", 5.0, "forecast")
    row = next(r for r in table["filters"] if (r["method"], r["inflation"], r["inflation_stage"]) == ("enkf", 5.0, "forecast"))
    assert row["rmse_vs_truth"]["mean"] == pytest.approx(stored["rmse_vs_truth"]["mean"], rel=1e-12)
    assert stored["rmse_vs_truth"]["mean"] == pytest.approx(
        data["analysis_rmse"][:, scfg.paths.burn_in:].mean(), rel=1e-12)
    clean = [r for r in table["filters"] if r["diverged_paths"] == 0]
    assert table["best"]["rmse_vs_truth"]["mean"] == min(r["rmse_vs_truth"]["mean"] for r in clean)
    assert table["provenance"]["command"] == "enkfrl filters --exp smoke"
    lines.clear()
    out = run_filters(tmp_path / "config.yaml", "smoke", tmp_path / "data", "enkfrl filters --exp smoke --record",
                      record=True, address=ray_local, echo=lines.append)
    assert out == tmp_path / "results/filters/smoke.json"
    assert f"{len(settings)} recorded, 0 to run" in lines[0]
    assert json.loads(out.read_text())["filters"] == table["filters"]
