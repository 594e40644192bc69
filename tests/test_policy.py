"""The agent's networks (rl/agents/policy.py): FastRecurrentPolicy against upstream sb3-contrib on real
rollout minibatches, and the window LSTM extractor."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

from rl.agents.policy import FastRecurrentPolicy, WindowLstmExtractor, build_model
from rl.training.train import make_vec_env

from test_env import one_torch_thread  # noqa: F401  (autouse)
from test_env import load_smoke, smoke_workdir

UPSTREAM = RecurrentActorCriticPolicy._process_sequence


@pytest.fixture(scope="module")
def recurrent_model(tmp_path_factory):
    """A RecurrentPPO on 2 smoke envs after one PPO iteration (64 steps per env; episodes are 60
    cycles, so every env's buffer holds an episode start in the middle)."""
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="recurrent"),
                              env=dataclasses.replace(cfg.env, window=1),
                              train=dataclasses.replace(cfg.train, n_envs=2, subproc=False),
                              ppo=dataclasses.replace(cfg.ppo, batch_size=32))  # 4 minibatches a shuffle
    assert cfg.ppo.n_steps == 64 and cfg.paths.n_cycles == 60
    venv = make_vec_env(cfg, data, norm, [1, 2])
    th.manual_seed(0)
    model = build_model(cfg, venv, None, "cpu", 0)
    assert isinstance(model.policy, FastRecurrentPolicy)
    model.learn(total_timesteps=2 * 64)  # one rollout + one update; the buffer keeps the rollout
    yield model
    venv.close()


def evaluate(policy, batch, weights):
    """values, log_prob, entropy and the gradients of a weighted scalar of all three."""
    policy.zero_grad(set_to_none=True)
    values, log_prob, entropy = policy.evaluate_actions(batch.observations, batch.actions,
                                                        batch.lstm_states, batch.episode_starts)
    loss = ((weights[0] * values.flatten()).sum() + (weights[1] * log_prob).sum()
            + (weights[2] * entropy).sum())
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in policy.named_parameters()
             if p.grad is not None}
    return values.detach(), log_prob.detach(), entropy.detach(), grads


def upstream_evaluate(policy, batch, weights, monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(FastRecurrentPolicy, "_process_sequence", staticmethod(UPSTREAM))
        return evaluate(policy, batch, weights)


def fast_evaluate(policy, batch, weights, monkeypatch):
    """The fast policy, counting calls of upstream's loop (its fallback)."""
    calls = []

    def counting(*args):
        calls.append(1)
        return UPSTREAM(*args)

    with monkeypatch.context() as m:
        m.setattr(RecurrentActorCriticPolicy, "_process_sequence", staticmethod(counting))
        out = evaluate(policy, batch, weights)
    return out, len(calls)


def resetting_sequences(batch, n_seq) -> int:
    """Sequences of a padded minibatch that start an episode from a non-zero stored state (the
    only case in which resetting matters)."""
    starts = batch.episode_starts.reshape(n_seq, -1)
    h = batch.lstm_states.pi[0]  # (layers, n_seq, hidden)
    return int(sum(bool(starts[s, 0]) and bool(h[:, s].abs().sum() > 0) for s in range(n_seq)))


def test_fast_recurrent_policy_matches_upstream(recurrent_model, monkeypatch):
    model = recurrent_model
    policy, buffer = model.policy, model.rollout_buffer
    np.random.seed(0)
    th.manual_seed(0)
    n_batches = n_resetting = 0
    for _ in range(3):  # three shuffles of the buffer (random split points)
        for batch in buffer.get(model.batch_size):
            n_seq = batch.lstm_states.pi[0].shape[1]
            starts = batch.episode_starts.reshape(n_seq, -1)
            # after the buffer's split an episode start is always the first step of a sequence
            assert not bool(starts[:, 1:].any())
            n_resetting += resetting_sequences(batch, n_seq)
            weights = th.randn(3, batch.actions.shape[0])
            (v, lp, ent, g), fallbacks = fast_evaluate(policy, batch, weights, monkeypatch)
            assert fallbacks == 0, "the fast path fell back to upstream's loop"
            v0, lp0, ent0, g0 = upstream_evaluate(policy, batch, weights, monkeypatch)
            for a, b in [(v, v0), (lp, lp0), (ent, ent0)]:
                th.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
            assert set(g) == set(g0) and any("lstm_actor" in k for k in g) and any("lstm_critic" in k for k in g)
            for name in g:
                th.testing.assert_close(g[name], g0[name], rtol=1e-6, atol=1e-6, msg=name)
            n_batches += 1
    assert n_batches >= 12
    assert n_resetting >= 1, "no minibatch held an episode start: the comparison proves nothing"


def test_episode_starts_matter_in_the_compared_batches(recurrent_model):
    """Sensitivity of the comparison above: ignoring the episode starts changes the outputs of a
    minibatch holding a reset, so a fast path that skipped the reset would have been caught."""
    model = recurrent_model
    np.random.seed(1)
    for batch in model.rollout_buffer.get(model.batch_size):
        n_seq = batch.lstm_states.pi[0].shape[1]
        if resetting_sequences(batch, n_seq):
            break
    else:
        pytest.fail("no minibatch with an episode start")
    with th.no_grad():
        v, lp, _ = model.policy.evaluate_actions(batch.observations, batch.actions,
                                                 batch.lstm_states, batch.episode_starts)
        v1, lp1, _ = model.policy.evaluate_actions(batch.observations, batch.actions, batch.lstm_states,
                                                   th.zeros_like(batch.episode_starts))
    assert float((v - v1).abs().max()) > 1e-4 or float((lp - lp1).abs().max()) > 1e-4


def test_fast_process_sequence_synthetic():
    """Direct comparison on made-up sequences, including starts at every position (which must
    fall back to the loop) and at first positions only."""
    th.manual_seed(0)
    lstm = th.nn.LSTM(5, 7, num_layers=2)
    n_seq, T = 4, 6
    features = th.randn(n_seq * T, 5)
    states = (th.randn(2, n_seq, 7), th.randn(2, n_seq, 7))
    first_only = th.zeros(n_seq, T)
    first_only[[0, 2], 0] = 1.0
    inside = first_only.clone()
    inside[1, 3] = 1.0
    for starts in (th.zeros(n_seq, T), first_only, inside):
        out, (h, c) = FastRecurrentPolicy._process_sequence(features, states, starts.flatten(), lstm)
        out0, (h0, c0) = UPSTREAM(features, states, starts.flatten(), lstm)
        for a, b in [(out, out0), (h, h0), (c, c0)]:
            th.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---- window agent ------------------------------------------------------------------------------
def test_window_lstm_extractor_uses_the_window():
    th.manual_seed(0)
    space = gym.spaces.Box(-3, 3, (3, 16), np.float32)
    ext = WindowLstmExtractor(space, hidden=16, layers=1, dtype="float32")
    assert ext.features_dim == 16
    obs = th.rand(5, 3, 16) * 2 - 1
    out = ext(obs)
    assert out.shape == (5, 16)
    older = obs.clone()
    older[:, 0] += 0.5  # change only the oldest row of the window
    diff = (ext(older) - out).detach().abs().amax(dim=1)
    assert bool((diff > 1e-4).all()), diff
    one = obs.clone()
    one[2, 0] += 0.5  # one sample changes, the others do not
    d = (ext(one) - out).detach().abs().amax(dim=1)
    assert float(d[2]) > 1e-4 and float(d[[0, 1, 3, 4]].max().detach()) == 0.0
    two = WindowLstmExtractor(space, hidden=8, layers=2, dtype="float32")
    assert two(obs).shape == (5, 8) and two.lstm.num_layers == 2


def test_window_model_has_the_extractor(tmp_path_factory):
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="window"))
    venv = make_vec_env(cfg, data, norm, [1])
    model = build_model(cfg, venv, None, "cpu", 0)
    ext = model.policy.features_extractor
    n_features = cfg.model.n * len(cfg.env.features)  # every feature is per variable in smoke
    assert isinstance(ext, WindowLstmExtractor)
    assert ext.features_dim == cfg.agent.lstm_hidden and ext.lstm.input_size == n_features
    obs = venv.reset()  # (n_envs, window, features)
    assert obs.shape == (cfg.train.n_envs, cfg.env.window, n_features)
    a, _ = model.predict(obs, deterministic=True)
    obs2 = obs.copy()
    obs2[:, 0] = -obs2[:, 0]
    a2, _ = model.predict(obs2, deterministic=True)
    assert np.abs(a - a2).max() > 1e-5
    venv.close()


def test_local_policy_is_translation_equivariant_and_reloads(tmp_path_factory, tmp_path):
    """Rolling every per-variable feature by one grid point rolls the action by one point
    (one network shared by all points); the model saves and loads with its stencil."""
    from stable_baselines3 import PPO

    from rl.agents.policy import LocalActorCriticPolicy, LocalLstmExtractor
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="local", stencil=2))
    venv = make_vec_env(cfg, data, norm, [1])
    model = build_model(cfg, venv, None, "cpu", 0)
    assert isinstance(model.policy, LocalActorCriticPolicy)
    assert isinstance(model.policy.features_extractor, LocalLstmExtractor)
    n, k = cfg.model.n, len(cfg.env.features)
    obs = venv.reset()
    obs = obs + 0.3 * np.random.default_rng(0).standard_normal(obs.shape).astype(np.float32)
    a, _ = model.predict(obs, deterministic=True)
    W = obs.shape[1]
    for shift in (1, 3):
        rolled = np.roll(obs.reshape(len(obs), W, k, n), shift, axis=-1).reshape(obs.shape)
        a_rolled, _ = model.predict(rolled, deterministic=True)
        np.testing.assert_allclose(a_rolled, np.roll(a, shift, axis=-1), atol=1e-6)
    # a change at point 0 reaches the actions of points within the stencil only
    poked = obs.copy().reshape(len(obs), W, k, n)
    poked[:, :, :, 0] += 1.0
    a_poked, _ = model.predict(poked.reshape(obs.shape), deterministic=True)
    changed = np.abs(a_poked - a).max(axis=0) > 1e-7
    assert changed[[0, 1, 2, n - 2, n - 1]].all() and not changed[3:n - 2].any()
    model.save(tmp_path / "local.zip")
    again = PPO.load(tmp_path / "local.zip", device="cpu")
    np.testing.assert_array_equal(again.predict(obs, deterministic=True)[0], a)


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_ppo_lr_schedule(tmp_path_factory, schedule):
    """ppo.lr_schedule linear: the optimiser's rate falls from learning_rate towards 0 over the
    steps of learn (the last update of 4 rollouts runs at 1/4 of it); constant keeps it."""
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, lr_schedule=schedule, n_epochs=1))
    venv = make_vec_env(cfg, data, norm, [1])
    model = build_model(cfg, venv, None, "cpu", 0)
    lr0 = cfg.ppo.learning_rate
    rates = []
    train = model.train
    model.train = lambda: (train(), rates.append(model.policy.optimizer.param_groups[0]["lr"]))
    model.learn(4 * model.n_steps * venv.num_envs)
    assert len(rates) == 4
    expected = [lr0] * 4 if schedule == "constant" else [lr0 * (1 - k / 4) for k in range(1, 5)]
    np.testing.assert_allclose(rates, expected, rtol=1e-9)
    venv.close()


# ---- agent.lstm_dtype ------------------------------------------------------------------------------
def test_bfloat16_lstm_computes_in_bfloat16_and_keeps_float32_weights():
    """agent.lstm_dtype bfloat16: the same weights give the float32 output to bfloat16's precision
    (8 significant bits) but not bit for bit (the autocast is in effect); the output, the stored
    weights and their gradients are float32 and finite."""
    th.manual_seed(0)
    space = gym.spaces.Box(-3, 3, (3, 36), np.float32)
    f32 = WindowLstmExtractor(space, hidden=64, layers=1, dtype="float32")
    b16 = WindowLstmExtractor(space, hidden=64, layers=1, dtype="bfloat16")
    b16.load_state_dict(f32.state_dict())
    obs = th.rand(256, 3, 36) * 2 - 1
    out32, out16 = f32(obs), b16(obs)
    assert out16.dtype == th.float32 and out16.shape == out32.shape
    diff = (out16 - out32).detach().abs()
    assert 0 < float(diff.max()) < 3e-2 and float(diff.mean()) < 3e-3, (float(diff.max()), float(diff.mean()))
    out16.square().sum().backward()
    for name, p in b16.lstm.named_parameters():
        assert p.dtype == th.float32 and p.grad is not None and p.grad.dtype == th.float32, name
        assert bool(th.isfinite(p.grad).all()) and float(p.grad.abs().max()) > 0, name


def test_pointwise_bfloat16_model_learns_and_rebuilds_from_its_config(tmp_path_factory):
    """A pointwise model with agent.lstm_dtype bfloat16 runs a PPO update (its LSTM computing in
    bfloat16), and the policy rebuilt from the config (what a run folder's weights load into)
    computes the same actions as the trained one."""
    from rl.agents.policy import build_policy
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="pointwise", point_net="lstm",
                                                             lstm_dtype="bfloat16"))
    venv = make_vec_env(cfg, data, norm, [1])
    model = build_model(cfg, venv, None, "cpu", 0)
    assert model.policy.features_extractor.dtype == th.bfloat16
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(model.n_steps * venv.num_envs)
    lstm_moved = [k for k, v in model.policy.state_dict().items() if "lstm" in k and not th.equal(v, before[k])]
    assert lstm_moved and all(v.dtype == th.float32 for v in model.policy.state_dict().values())
    again = build_policy(cfg)
    again.load_state_dict(model.policy.state_dict())
    assert again.features_extractor.dtype == th.bfloat16
    obs = venv.reset()
    np.testing.assert_array_equal(again.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    venv.close()


@pytest.mark.parametrize("agent", [{"kind": "recurrent"}, {"kind": "pointwise", "point_net": "mlp"}])
def test_bfloat16_is_refused_where_there_is_no_window_lstm(tmp_path, agent):
    from enkf.config import ConfigError
    from rl.config import load_config
    from conftest import write_config
    path = write_config(tmp_path / "c.yaml", "smoke", {"agent": dict(agent, lstm_dtype="bfloat16"), "env": {"window": 1}})
    with pytest.raises(ConfigError, match="agent.lstm_dtype: bfloat16 is for the LSTM over the window"):
        load_config(path, "smoke")


def test_a_run_folder_made_before_lstm_dtype_reads_as_float32(tmp_path):
    """A run's config.yaml without agent.lstm_dtype loads as float32 with the hash it had; bfloat16
    changes the hash (its records are a different run's)."""
    import yaml
    from enkf.config import dump_config
    from rl.config import load_config, load_run_config
    from conftest import CONFIG, write_config
    cfg = load_config(CONFIG, "smoke")
    dump_config(cfg, tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del raw["agent"]["lstm_dtype"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    old = load_run_config(tmp_path / "config.yaml")
    assert old.agent.lstm_dtype == "float32" and old.hash() == cfg.hash()
    b16 = load_config(write_config(tmp_path / "b.yaml", "smoke", {"agent": {"lstm_dtype": "bfloat16"}}), "smoke")
    assert b16.hash() != cfg.hash()


def test_optimisers_step_with_fused_kernels_as_the_per_parameter_loop(tmp_path_factory, tmp_path):
    """build_model's optimisers use torch's fused Adam kernels on the CPU (PPO's policy, SAC's
    actor, critics and entropy coefficient); one PPO update gives the weights of torch's
    per-parameter loop to float32 rounding, and moves them; a model resumed from a zip saved with
    the loop steps fused again."""
    from rl.agents.policy import fused_optimisers, optimisers
    from rl.training.runs import load_for_resume
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="pointwise", point_net="lstm"))
    trained = {}
    for fused in (True, False):
        venv = make_vec_env(cfg, data, norm, [1])
        model = build_model(cfg, venv, None, "cpu", 0)
        assert [(g["fused"], g["foreach"]) for o in optimisers(model) for g in o.param_groups] == [(True, False)]
        for group in model.policy.optimizer.param_groups:
            group["fused"], group["foreach"] = fused, False
        model.learn(model.n_steps * venv.num_envs)
        trained[fused] = model
    start = build_model(cfg, venv, None, "cpu", 0).policy.state_dict()
    fused, loop = trained[True].policy.state_dict(), trained[False].policy.state_dict()
    moved = max(float((v - start[k]).abs().max()) for k, v in loop.items())
    assert moved > 1e-4
    assert max(float((v - loop[k]).abs().max()) for k, v in fused.items()) < 1e-3 * moved
    trained[False].save(tmp_path / "model.zip")
    resumed = load_for_resume(cfg, tmp_path / "model.zip", tmp_path, venv, "cpu", trust=True)
    assert all(g["fused"] and not g["foreach"] for g in resumed.policy.optimizer.param_groups)
    sac_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, algo="sac"))
    sac = build_model(sac_cfg, make_vec_env(sac_cfg, data, norm, [1]), None, "cpu", 0)
    found = optimisers(sac)
    assert len(found) == 3 and all(g["fused"] for o in found for g in o.param_groups)
    sac.learn(2 * sac_cfg.offpolicy.learning_starts)  # the fused kernels step SAC's three optimisers
    assert fused_optimisers(sac) is sac
