"""The config schema of enkf/config.py: every experiment loads, merge semantics, round trip,
and errors that name the offending key."""
from __future__ import annotations

import pytest
import yaml

from enkf.config import ConfigError, deep_merge, dump_config
from enkf.datafiles import data_hash
from rl.config import experiment_names, from_dict, load_config

from conftest import CONFIG, read_config_yaml, write_config

NAMES = list(read_config_yaml()["experiments"])


def test_experiment_names_lists_the_yaml_experiments_in_order():
    """experiment_names gives the keys under experiments:, in file order."""
    names = experiment_names(CONFIG)
    assert names == NAMES
    for required in ("L96_1", "L96_2", "L96_3", "L63", "L96_sakov2008", "L63_sakov2012", "smoke"):
        assert required in names


@pytest.mark.parametrize("experiment", NAMES)
def test_every_experiment_loads_and_round_trips(experiment, tmp_path):
    """Each experiment validates; dump_config -> from_dict(yaml) gives an equal Config
    (and the same hashes)."""
    cfg = load_config(CONFIG, experiment)
    assert cfg.experiment == experiment
    dump_config(cfg, tmp_path / "resolved.yaml")
    back = from_dict(yaml.safe_load((tmp_path / "resolved.yaml").read_text()))
    assert back == cfg
    assert back.hash() == cfg.hash() and data_hash(back) == data_hash(cfg)


def test_experiment_values_come_from_shared_merged_with_own_block():
    """L96_2 overrides only model.n; L63 changes the model but keeps shared obs.error_var;
    derived steps_per_cycle = t_obs / dt and obs_index = range(0, n, stride)."""
    raw = read_config_yaml()
    l1, l2, l63 = (load_config(CONFIG, e) for e in ("L96_1", "L96_2", "L63"))
    assert l2.model.n == 17 and l1.model.n == 20
    assert l2.model.forcing == raw["shared"]["model"]["forcing"]
    assert l1.steps_per_cycle == 400  # 1.0 / 2.5e-3
    assert l63.model.name == "lorenz63" and l63.model.n == 3 and l63.steps_per_cycle == 25
    assert l63.obs.error_var == raw["shared"]["obs"]["error_var"]
    assert l63.filter.inflation == 1.5
    assert l1.obs_index == list(range(20))
    sak = load_config(CONFIG, "L96_sakov2008")
    assert sak.steps_per_cycle == 1 and sak.model.n == 40 and sak.obs.error_var == 1.0


def test_deep_merge_merges_mappings_and_replaces_everything_else():
    """Nested dicts merge key by key; lists, scalars and dict-vs-scalar replace; inputs unchanged."""
    base = {"a": {"x": 1, "y": [1, 2], "z": {"p": 1, "q": 2}}, "b": [1, 2, 3], "c": 5, "d": {"k": 1}}
    over = {"a": {"y": [9], "z": {"q": 3}, "w": 0}, "b": [4], "d": 7, "e": {"new": 1}}
    base_copy, over_copy = yaml.safe_load(yaml.safe_dump(base)), yaml.safe_load(yaml.safe_dump(over))
    out = deep_merge(base, over)
    assert out == {"a": {"x": 1, "y": [9], "z": {"p": 1, "q": 3}, "w": 0}, "b": [4], "c": 5,
                   "d": 7, "e": {"new": 1}}
    assert base == base_copy and over == over_copy
    out["a"]["z"]["p"] = 100
    out["e"]["new"] = 100
    assert base["a"]["z"]["p"] == 1 and over["e"]["new"] == 1  # no shared references


def test_train_paths_list_is_replaced_not_merged():
    """smoke's train_paths [1, 5] replaces shared's [1, 99] entirely (not concatenated/merged)."""
    assert read_config_yaml()["shared"]["paths"]["train_paths"] == [1, 99]
    assert load_config(CONFIG, "smoke").paths.train_paths == [1, 5]


@pytest.mark.parametrize("overrides, key", [
    ({"filter": {"n_enss": 20}}, "filter.n_enss: unknown key"),
    ({"filter": {"n_ens": "twenty"}}, "filter.n_ens: expected an integer"),
    ({"filter": {"n_ens": 20.0}}, "filter.n_ens: expected an integer"),
    ({"filter": {"n_ens": True}}, "filter.n_ens: expected an integer"),
    ({"filter": {"rotate": "yes"}}, "filter.rotate: expected true/false"),
    ({"filter": {"method": "eakf"}}, "filter.method: must be one of"),
    ({"filter": {"n_ens": 1}}, "filter.n_ens: must be >= 2"),
    ({"filter": {"method": "letkf"}}, "filter.loc_radius: letkf needs a radius > 0"),
    ({"filter": {"method": "letkf", "loc_radius": 0.0}}, "filter.loc_radius: letkf needs a radius > 0"),
    ({"filter": {"method": "letkf", "loc_radius": "far"}}, "filter.loc_radius: expected a number"),
    ({"filter": {"loc_radius": 4.0}}, "filter.loc_radius: only letkf localises"),
    ({"filter": {"method": "letkf", "loc_radius": 4.0}, "model": {"name": "lorenz63", "n": 3}},
     "filter.method: letkf localises on a ring"),
    ({"obs": {"t_obs": 0.015}}, "obs.t_obs: must be a whole number of model.dt"),
    ({"obs": {"t_obs": 0.001}}, "obs.t_obs"),
    ({"obs": {"error_var": 0.0}}, "obs.error_var"),
    ({"obs": {"error_var": -1.0}}, "obs.error_var"),
    ({"paths": {"n_paths": 20000}}, "paths.n_paths"),
    ({"paths": {"eval_path": 3}}, "paths.eval_path: 3 lies inside paths.train_paths"),
    ({"paths": {"train_paths": [1, 2, 3]}}, "paths.train_paths"),
    ({"paths": {"train_paths": "1-5"}}, "paths.train_paths: expected a list"),
    ({"paths": {"burn_in": 60}}, "paths.burn_in"),
    ({"model": {"n": 4, "name": "lorenz63"}}, "model.n: Lorenz-63 has n = 3"),
    ({"model": "lorenz96"}, "model: expected a mapping"),
    ({"train": {"average_checkpoints": 0}}, "train.average_checkpoints: must be >= 1"),
    ({"train": {"average_checkpoints": 3}}, "train.average_checkpoints: 3 checkpoints every 512 path-steps need"),
    ({"experiment": "x"}, "experiment:"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_values_raise_config_error_naming_the_key(tmp_path, overrides, key):
    """Unknown key, wrong type, impossible value: ConfigError whose one-line message names it."""
    path = write_config(tmp_path / "c.yaml", "smoke", overrides)
    with pytest.raises(ConfigError) as e:
        load_config(path, "smoke")
    assert key in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_key_and_missing_experiment_and_bad_top_level(tmp_path):
    """A key removed from shared is reported as missing; an unknown experiment lists the
    available ones; a file without shared/experiments is rejected."""
    raw = read_config_yaml()
    del raw["shared"]["filter"]["init_spread"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"filter\.init_spread: missing"):
        load_config(tmp_path / "c.yaml", "smoke")
    with pytest.raises(ConfigError, match="no such experiment.*L96_1"):
        load_config(CONFIG, "L96_9")
    (tmp_path / "d.yaml").write_text("shared: {}\n")
    with pytest.raises(ConfigError, match="top level"):
        load_config(tmp_path / "d.yaml", "smoke")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml", "smoke")
    (tmp_path / "e.yaml").write_text("shared: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "e.yaml", "smoke")


def test_data_hash_ignores_experiment_name_but_not_data_settings(tmp_path):
    """data_hash covers seed/model/obs/filter/spinup/paths, not the experiment's name: a copy of
    smoke under another name has the same data_hash; a changed seed changes it."""
    raw = read_config_yaml()
    raw["experiments"]["smoke_copy"] = raw["experiments"]["smoke"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    a = load_config(CONFIG, "smoke")
    assert data_hash(load_config(tmp_path / "c.yaml", "smoke_copy")) == data_hash(a)
    assert load_config(tmp_path / "c.yaml", "smoke_copy").hash() != a.hash()
    b = load_config(write_config(tmp_path / "d.yaml", "smoke", {"seed": 1}), "smoke")
    assert data_hash(a) != data_hash(b)
    assert a.hash(("model",)) == b.hash(("model",))


def test_numbers_must_be_finite_and_seeds_non_negative(tmp_path):
    """nan/inf are refused in any float field, negative seeds (master, train, ablation) too; the
    error names the file and the block the key sits in."""
    bad = write_config(tmp_path / "nan.yaml", "smoke", {"model": {"forcing": float("nan")}})
    with pytest.raises(ConfigError, match=r"nan\.yaml: experiments\.smoke\.model\.forcing: must be a finite"):
        load_config(bad, "smoke")
    bad = write_config(tmp_path / "inf.yaml", shared_overrides={"ppo": {"learning_rate": float("-inf")}})
    with pytest.raises(ConfigError, match=r"inf\.yaml: shared\.ppo\.learning_rate: must be a finite"):
        load_config(bad, "L96_1")
    bad = write_config(tmp_path / "seed.yaml", "smoke", {"seed": -1})
    with pytest.raises(ConfigError, match=r"experiments\.smoke\.seed: must be >= 0"):
        load_config(bad, "smoke")
    raw = read_config_yaml()
    study = next(iter(raw["ablations"]))
    raw["ablations"][study]["seeds"] = [0, -2]
    (tmp_path / "abl.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    from rl.config import load_ablation
    with pytest.raises(ConfigError, match=rf"ablations\.{study}\.seeds: .*>= 0"):
        load_ablation(tmp_path / "abl.yaml", study)


def test_run_folder_config_refuses_duplicate_keys_and_tags(tmp_path):
    """load_run_config reads <run>/config.yaml with the same strict loader: a duplicate key or a
    YAML tag is a ConfigError naming the file, and so is a folder without config.yaml."""
    from rl.config import load_run_config
    cfg = load_config(CONFIG, "smoke")
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_run_config(tmp_path / "config.yaml") == cfg
    text = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(text.replace("seed: 0\n", "seed: 0\nseed: 1\n", 1))
    with pytest.raises(ConfigError, match=r"config\.yaml: not valid YAML \(duplicate key 'seed'"):
        load_run_config(tmp_path / "config.yaml")
    (tmp_path / "config.yaml").write_text("seed: !!python/name:os.system\n")
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        load_run_config(tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="is not a run folder"):
        load_run_config(tmp_path / "none" / "config.yaml")


def test_a_null_setting_hashes_as_an_absent_one():
    """filter.loc_radius is null unless the filter is letkf: the config hash and data hash are
    those of the same config without the key (records made before it stay valid), and a radius
    changes both."""
    import dataclasses
    from enkf import datafiles
    from enkf.config import hash_of, result_hash
    cfg = load_config(CONFIG, "smoke")
    assert cfg.filter.loc_radius is None
    d = cfg.to_dict()
    del d["filter"]["loc_radius"]
    assert cfg.hash() == result_hash(d)
    settings = datafiles.data_settings(cfg)
    del settings["filter"]["loc_radius"]
    assert datafiles.data_hash(cfg) == hash_of(settings)
    letkf = dataclasses.replace(cfg, filter=dataclasses.replace(cfg.filter, method="letkf", loc_radius=2.0))
    assert letkf.hash() != cfg.hash() and datafiles.data_hash(letkf) != datafiles.data_hash(cfg)
