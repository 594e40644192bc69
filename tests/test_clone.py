"""Behaviour cloning (rl/agents/clone.py) and the exploration scale it sets (rl/training/train.py
set_exploration): cloning fits the stored analyses (its loss falls, its held-out error is the
cloned policy's, recomputed here) and the cloned pointwise policy beats copy-obs, on the held-out
path and in closed loop; without cloning, log_std_init auto takes copy-obs' error against the reward's
target, through a whole (tiny) training run."""
from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch as th

from rl.agents.clone import behaviour_clone, copy_obs_rmse, split_training_paths
from rl.agents.policy import build_model
from rl.training.train import make_vec_env, set_exploration, train

from rl_checks import closed_loop, copy_obs_error, oracle_rmse
from test_env import load_smoke, one_torch_thread, smoke_workdir  # noqa: F401

HELD_OUT = [5]  # smoke trains on paths 1..5: the last one (10%, at least one) is held out


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return load_smoke(smoke_workdir(tmp_path_factory))


def configured(cfg, **sections):
    return dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **changes)
                                       for name, changes in sections.items()})


def test_the_held_out_paths_are_the_last_tenth_of_the_training_paths(smoke):
    cfg, _, _ = smoke
    assert split_training_paths(cfg) == ([1, 2, 3, 4], HELD_OUT)
    wide = configured(cfg, paths={"n_paths": 31, "train_paths": [1, 30]})
    assert split_training_paths(wide) == (list(range(1, 28)), [28, 29, 30])
    one = configured(cfg, paths={"train_paths": [1, 1]})
    assert split_training_paths(one) == ([1], [1])


@pytest.mark.parametrize("kind,point_net", [("pointwise", "lstm"), ("pointwise", "mlp"), ("window", "lstm")])
def test_cloning_fits_the_stored_analyses(smoke, kind, point_net):
    """The loss falls, and the reported held-out error is the cloned policy's on the held-out
    path's stored pairs, recomputed from the model (smoke's 240 training cycles: small batches,
    a larger learning rate than config.yaml's so that 15 epochs learn something)."""
    cfg, data, norm = smoke
    cfg = configured(cfg, agent={"kind": kind, "point_net": point_net},
                     pretrain={"epochs": 15, "batch_size": 16, "learning_rate": 3e-3})
    venv = make_vec_env(cfg, data, norm, [1])
    model = build_model(cfg, venv, None, "cpu", cfg.train.seed)
    before = oracle_rmse(model, cfg, norm, data, HELD_OUT)
    history = behaviour_clone(model, cfg, norm, data, log=lambda *a: None)
    train_rmse, val_rmse = history["train_rmse"], history["val_rmse"]
    assert len(train_rmse) == len(val_rmse) == 15
    assert train_rmse[-1] < 0.6 * train_rmse[0] and val_rmse[-1] < 0.6 * before  # the loss falls
    assert oracle_rmse(model, cfg, norm, data, HELD_OUT) == pytest.approx(val_rmse[-1], rel=1e-4)
    if kind == "pointwise":  # the agent of the final runs: better than copying the observations
        assert val_rmse[-1] < copy_obs_error(cfg, norm, data, HELD_OUT)
        # and in closed loop, on the eval path it never saw
        mine = closed_loop(model, cfg, data, norm, cfg.paths.eval_path, cfg.paths.burn_in)
        copy = closed_loop(None, cfg, data, norm, cfg.paths.eval_path, cfg.paths.burn_in, copy_obs=True)
        assert mine["cycles_completed"] == copy["cycles_completed"] == cfg.paths.n_cycles
        assert mine["rmse_norm_vs_enkf"] < copy["rmse_norm_vs_enkf"], (mine, copy)
    venv.close()


@pytest.mark.parametrize("target,key", [("stored", "analysis_mean"), ("truth", "truth")])
def test_copy_obs_error_is_against_the_rewards_target(smoke, target, key):
    cfg, data, norm = smoke
    cfg = configured(cfg, reward={"target": target})
    assert copy_obs_rmse(cfg, norm, data, HELD_OUT) == pytest.approx(copy_obs_error(cfg, norm, data, HELD_OUT, key),
                                                                   rel=1e-12)
    other = "truth" if key == "analysis_mean" else "analysis_mean"
    assert copy_obs_rmse(cfg, norm, data, HELD_OUT) != pytest.approx(copy_obs_error(cfg, norm, data, HELD_OUT, other),
                                                                   rel=1e-3)


def test_a_configured_log_std_is_kept(smoke):
    cfg, data, norm = smoke
    cfg = configured(cfg, agent={"log_std_init": -2.5})
    model = build_model(cfg, make_vec_env(cfg, data, norm, [1]), None, "cpu", 0)
    assert set_exploration(model, cfg, norm, data, {"train_rmse": [0.1], "val_rmse": [0.1]}) == {
        "log_std_init": -2.5, "source": "config"}
    assert th.allclose(model.policy.log_std, th.full_like(model.policy.log_std, -2.5))


@pytest.mark.parametrize("target,key", [("stored", "analysis_mean"), ("truth", "truth")])
def test_log_std_auto_without_cloning_starts_ppo_at_the_copy_obs_error(smoke, tmp_path, target, key):
    """pretrain.epochs 0, log_std_init auto: a whole training run records copy-obs' error on the
    held-out path against the reward's target as its std, and PPO's first rollout runs with it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg, data, norm = smoke
    cfg = configured(cfg, pretrain={"epochs": 0}, reward={"target": target},
                     train={"total_steps": 128, "checkpoint_freq": 128, "eval_freq": 128})
    assert cfg.agent.log_std_init == "auto"
    run = tmp_path / "run"
    run.mkdir()
    try:
        train(cfg, data, norm, run, command="test")
    finally:
        for h in list(logging.getLogger("enkfrl.train").handlers):
            h.close()
            logging.getLogger("enkfrl.train").removeHandler(h)
    exploration = json.loads((run / "exploration.json").read_text())
    expected = copy_obs_error(cfg, norm, data, HELD_OUT, key)
    assert exploration["source"] == "copy-obs RMSE" and exploration["auto"] is True
    assert exploration["std"] == pytest.approx(expected, rel=1e-12)
    assert exploration["log_std_init"] == pytest.approx(np.log(expected), rel=1e-12)
    assert not (run / "pretrain.json").exists() and not (run / "pretrained_model.zip").exists()
    ea = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    assert ea.Scalars("policy/std_mean")[0].value == pytest.approx(expected, rel=1e-6)


def test_cloning_the_truth_regresses_the_truth_from_the_same_features(smoke):
    """pretrain.target truth (the information ceiling): the targets ask for the truth along the
    stored runs (the features stay the stored run's), and the cloned policy ends nearer the truth
    than the one cloned on the stored analyses, on the held-out path."""
    from rl.envs.assimilation import reference_actions, reference_observations
    cfg, data, norm = smoke
    truth_cfg = configured(cfg, pretrain={"target": "truth"})
    a_truth, a_xa = reference_actions(truth_cfg, norm, data, 3), reference_actions(cfg, norm, data, 3)
    np.testing.assert_allclose(data["forecast_mean"][3] + norm.diff_unnorm(a_truth), data["truth"][3], atol=1e-9)
    assert not np.allclose(a_truth, a_xa, atol=1e-3)
    np.testing.assert_array_equal(reference_observations(truth_cfg, norm, data, 3),
                                  reference_observations(cfg, norm, data, 3))
    errors = {}
    for name, c in (("stored", cfg), ("truth", truth_cfg)):
        c = configured(c, agent={"kind": "pointwise", "point_net": "mlp"},
                       pretrain={"epochs": 15, "batch_size": 16, "learning_rate": 3e-3})
        model = build_model(c, make_vec_env(c, data, norm, [1]), None, "cpu", c.train.seed)
        behaviour_clone(model, c, norm, data, log=lambda *a: None)
        errors[name] = oracle_rmse(model, configured(c, pretrain={"target": "truth"}),  # both vs the truth
                                   norm, data, HELD_OUT)
    assert errors["truth"] < errors["stored"]


def test_cloning_the_truth_needs_cloning_epochs(tmp_path):
    from enkf.config import ConfigError
    from rl.config import load_config
    import yaml
    raw = yaml.safe_load(open("config.yaml"))
    raw["experiments"]["smoke"]["pretrain"] = {"epochs": 0, "target": "truth"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="pretrain.target: truth needs pretrain.epochs >= 1"):
        load_config(tmp_path / "c.yaml", "smoke")
