"""The pointwise agent's vectorised env (rl/envs/pointwise.py) against the closed-loop env it wraps:
per-point rewards, per-point observations, the oracle, curriculum counting, cloning's gather."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import CallbackList

from rl.training.curriculum import Curriculum, CurriculumCallback
from rl.agents.actors import pointwise_actor
from rl.envs.pointwise import PointwiseVecEnv, gather_points, point_rewards, stencil_neighbours
from rl.agents.policy import build_model
from rl.agents.clone import _policy_mean

from test_env import load_smoke, max_rel, one_torch_thread, smoke_workdir  # noqa: F401


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    assert cfg.agent.kind == "pointwise" and cfg.env.action_mode == "increment"
    return cfg, data, norm


def with_agent(cfg, **changes):
    return dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, **changes))


def oracle_actions(env, data, path, k: int) -> np.ndarray:
    """The actions asking for the stored xa of `path` (one path, or one per slot) at cycle k."""
    return env.action_for(data["analysis_mean"][path, k], np.float64)


def test_stencil_is_cyclic():
    nb = stencil_neighbours(8, 2)
    assert nb.shape == (8, 5)
    assert list(nb[0]) == [6, 7, 0, 1, 2] and list(nb[7]) == [5, 6, 7, 0, 1]


@pytest.mark.parametrize("stencil", [1, 3])
def test_point_observation_is_the_env_features_on_its_stencil(smoke, stencil):
    """Point i's row w, feature block f, column j is the env observation's row w, feature f of
    variable (i - S + j) mod n: every window row, cyclic, written out index by index."""
    cfg, data, norm = smoke
    cfg = with_agent(cfg, stencil=stencil)
    venv = PointwiseVecEnv(cfg, data, norm, [1, 2], n_paths=2, seed=0)
    points = venv.reset().reshape(2, cfg.model.n, cfg.env.window, -1)
    n, W, S = cfg.model.n, cfg.env.window, stencil
    k = len(cfg.env.features)
    for _ in range(4):  # a few cycles, so the window rows differ
        points, *_ = venv.step(np.zeros((venv.num_envs, 1), np.float32))
        points = points.reshape(2, n, W, -1)
    for m in range(2):
        obs = venv.loop.observations()[m]  # (W, k n)
        assert points[m].shape == (n, W, k * (2 * S + 1))
        for i in range(n):
            for w in range(W):
                for f in range(k):
                    for j in range(2 * S + 1):
                        assert points[m, i, w, f * (2 * S + 1) + j] == obs[w, f * n + (i - S + j) % n]


def test_the_vec_env_answers_sb3s_attribute_queries_without_warnings(smoke):
    """SB3 asks every VecEnv for render_mode (and wrappers by get_attr/env_is_wrapped): one value
    per agent, no UserWarning that the attribute is missing."""
    import warnings
    cfg, data, norm = smoke
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=2, seed=0)
    assert venv.render_mode is None and venv.get_attr("render_mode") == [None] * venv.num_envs
    assert venv.get_attr("agents_per_slot", indices=[0, 3]) == [cfg.model.n] * 2
    assert venv.env_is_wrapped(object) == [False] * venv.num_envs


def test_per_point_rewards_are_the_per_point_errors(smoke):
    cfg, data, norm = smoke
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=2, seed=0)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        loop = venv.loop
        targets = [data["analysis_mean"][loop.path[m], loop.cycle[m]] for m in range(2)]
        xbs = [loop.forecast_mean[m].copy() for m in range(2)]
        actions = rng.normal(0, 0.05, (venv.num_envs, 1)).astype(np.float32)
        _, rewards, _, infos = venv.step(actions)
        for m in range(2):
            a = actions.reshape(2, -1)[m].astype(np.float64)
            xa = xbs[m] + a * norm.half_range                       # increment action, by hand
            expected = 1.0 - np.minimum(np.abs((xa - norm.centre) / norm.half_range
                                               - (targets[m] - norm.centre) / norm.half_range), cfg.reward.clip)
            np.testing.assert_allclose(rewards.reshape(2, -1)[m], expected, rtol=1e-6, atol=1e-6)
            owner = infos[m * cfg.model.n]
            assert owner["episode_owner"] and not any(d["episode_owner"] for d in infos[m * cfg.model.n + 1:(m + 1) * cfg.model.n])
            # the global reward of the same cycle: 1 - clip(RMSE) of the same errors
            err = 1.0 - expected
            assert owner["reward_global"] == pytest.approx(1.0 - min(np.sqrt(np.mean(err ** 2)), cfg.reward.clip), abs=1e-6)
    assert np.all(point_rewards(np.array([0.0, 0.5, 5.0, -5.0]), 2.0) == [1.0, 0.5, -1.0, -1.0])


def test_oracle_through_the_wrapper_reproduces_the_stored_run(smoke):
    """Feeding every point the stored xa (float64) through the vectorised env reproduces the
    stored forecasts of every path (as the env's own oracle test), with every point's reward 1."""
    cfg, data, norm = smoke
    paths = [1, 3]
    venv = PointwiseVecEnv(cfg, data, norm, paths, n_paths=2, seed=0)
    venv.reset()
    venv.loop.reset([0, 1], paths)  # put each slot on its own path
    K = cfg.paths.n_cycles
    for k in range(K):
        actions = []
        for m, p in enumerate(paths):
            assert max_rel(venv.loop.forecast_mean[m], data["forecast_mean"][p, k]) < 1e-10, (p, k)
        actions.append(oracle_actions(venv.loop, data, paths, k))
        _, rewards, dones, infos = venv.step(np.concatenate(actions).reshape(-1, 1))
        assert np.all(rewards >= 1 - 1e-9)
        assert np.all(dones == (k == K - 1))
    owners = [d for d in infos if d["episode_owner"]]
    assert len(owners) == 2 and all(d["episode"]["l"] == K and not d["halted"] for d in owners)
    assert all(d["TimeLimit.truncated"] and d["terminal_observation"].shape == venv.observation_space.shape
               for d in infos)


def test_curriculum_counts_path_episodes_with_several_paths_per_env(smoke):
    """M = 3 paths x n points per env: each finished path-episode counts once, not n times."""
    cfg, data, norm = smoke
    first, last = cfg.paths.train_paths
    cur = Curriculum(first, last, cfg.curriculum.episodes_k)
    venv = PointwiseVecEnv(cfg, data, norm, cur.active_paths, n_paths=3, seed=0)
    model = build_model(cfg, venv, None, "cpu", 0)
    K, n = cfg.paths.n_cycles, cfg.model.n
    ends = []

    class Ends(CurriculumCallback):
        def _on_step(self):
            ends.extend(i for i, d in enumerate(self.locals["dones"]) if d)
            return super()._on_step()

    model.learn(total_timesteps=2 * K * 3 * n, callback=CallbackList([Ends(cur)]))
    halts = cur.halts
    path_episodes = len(ends) // n
    assert len(ends) % n == 0 and path_episodes >= 6
    assert cur.episodes == path_episodes
    # never more paths than the rule allows for this many completions
    assert 1 <= cur.n_active <= 1 + (cur.episodes - halts)
    assert venv.active_paths == cur.active_paths


def test_training_diagnostics_read_every_paths_rmse_once(smoke):
    """DiagnosticsCallback reads the point-0 agent of every path slot (the one carrying its path's
    RMSEs): the rollout's logged rmse_vs_enkf is the mean over those infos of the rollout, every
    path-step counted once, whatever the other agents' infos hold."""
    from stable_baselines3.common.callbacks import BaseCallback
    from rl.training.train import DiagnosticsCallback
    cfg, data, norm = smoke
    n = cfg.model.n
    venv = PointwiseVecEnv(cfg, data, norm, [1, 2], n_paths=3, seed=0)
    model = build_model(cfg, venv, None, "cpu", 0)
    seen = []

    class Owners(BaseCallback):
        def _on_step(self):
            infos = self.locals["infos"]
            for info in infos[n // 2::n]:  # a point that is not its path's first: must be ignored
                info["rmse_vs_enkf"] = 1e6
            seen.extend(d["rmse_vs_enkf"] for d in infos if d.get("episode_owner"))
            return True

    class Logged(BaseCallback):
        def _on_step(self):
            return True

        def _on_rollout_end(self):
            logged.append(self.logger.name_to_value["rollout/rmse_vs_enkf"])

    logged = []
    model.learn(total_timesteps=model.n_steps * venv.num_envs,
                callback=CallbackList([Owners(), DiagnosticsCallback(n), Logged()]))
    assert len(seen) == model.n_steps * 3 and len(logged) == 1
    assert logged[0] == pytest.approx(np.mean(seen), rel=1e-12)


def test_cloning_and_the_actor_see_the_windows_the_wrapper_shows(smoke):
    """Behaviour cloning's torch gather, the evaluation actor and the vectorised env agree."""
    cfg, data, norm = smoke
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=1, seed=0)
    model = build_model(cfg, venv, None, "cpu", 0)
    points = venv.reset()
    obs = venv.loop.observations()[0]
    nb = stencil_neighbours(cfg.model.n, cfg.agent.stencil)
    np.testing.assert_array_equal(gather_points(obs, nb), points)
    with th.no_grad():
        mean = _policy_mean(model.policy, th.as_tensor(obs[None]), False, th.as_tensor(nb))[0].numpy()
        direct = model.policy.get_distribution(th.as_tensor(points)).distribution.mean[:, 0].numpy()
    np.testing.assert_allclose(mean, direct, rtol=1e-6, atol=1e-7)
    act = pointwise_actor(model, nb)(obs, venv.loop)
    np.testing.assert_allclose(act, np.clip(direct, -cfg.env.obs_bound, cfg.env.obs_bound), rtol=1e-5, atol=1e-6)


def test_a_halted_path_ends_its_agents_and_its_slot_starts_a_new_path(smoke):
    """Slot 0's points all ask for the largest increment until its forecast leaves the halt bound:
    that step ends the episode of its n agents (terminated, so TimeLimit.truncated is False, and
    the terminal observation is the halted env's), the slot starts a new path at once (cycle 0,
    its observation the new path's windows), and slot 1, fed the stored analyses, goes on."""
    cfg, data, norm = smoke
    n = cfg.model.n
    venv = PointwiseVecEnv(cfg, data, norm, [1, 2, 3], n_paths=2, seed=0)
    venv.reset()
    nb = stencil_neighbours(n, cfg.agent.stencil)
    halted_at = None
    loop = venv.loop
    for k in range(cfg.paths.n_cycles):
        stored = data["analysis_mean"][loop.path[1], loop.cycle[1]]
        actions = np.concatenate([np.full(n, cfg.env.obs_bound),
                                  norm.diff_norm(stored - loop.forecast_mean[1])])[:, None]
        obs, rewards, dones, infos = venv.step(actions)
        if dones[0]:
            halted_at = k
            break
        assert not dones.any()
    assert halted_at is not None and halted_at < cfg.paths.n_cycles - 1, "all-max increments never halted"
    assert dones[:n].all() and not dones[n:].any()
    owner = infos[0]
    assert owner["episode_owner"] and owner["halted"] and owner["episode"]["l"] == halted_at + 1
    for d in infos[:n]:
        assert d["TimeLimit.truncated"] is False and d["terminal_observation"].shape == venv.observation_space.shape
    assert all("terminal_observation" not in d for d in infos[n:])
    assert loop.cycle[0] == 0 and loop.path[0] in (1, 2, 3)
    np.testing.assert_array_equal(obs[:n], gather_points(loop.observations()[0], nb))
    assert not np.array_equal(infos[0]["terminal_observation"], obs[0])
    assert loop.cycle[1] == halted_at + 1
    np.testing.assert_array_equal(obs[n:], gather_points(loop.observations()[1], nb))
    # the new episode counts from zero
    _, _, _, infos = venv.step(np.zeros((2 * n, 1), np.float32))
    assert infos[0]["cycle"] == 0 and infos[n]["cycle"] == halted_at + 1


def test_episode_statistics_are_the_global_rewards_of_that_path_episode(smoke):
    """info["episode"] of a path-episode: its return is the sum of the env's global rewards (1 -
    clip(RMSE)) of that episode alone, its length its cycles; two episodes in a row on one slot."""
    cfg, data, norm = smoke
    n = cfg.model.n
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=1, seed=0)
    venv.reset()
    episodes, rewards = [], []
    for _ in range(3 * cfg.paths.n_cycles):
        _, _, dones, infos = venv.step(np.full((n, 1), 0.4 * cfg.env.obs_bound, np.float32))
        rewards.append(infos[0]["reward_global"])
        if dones[0]:
            episodes.append((infos[0]["episode"], rewards))
            rewards = []
            if len(episodes) == 2:
                break
    assert len(episodes) == 2
    for episode, r in episodes:
        assert episode["l"] == len(r) and episode["r"] == pytest.approx(sum(r), rel=1e-12)
        assert episode["r"] != pytest.approx(len(r) * 1.0)  # not every reward 1: a real sum


def test_each_slot_draws_its_own_paths_and_env_method_counts_the_env_once(smoke):
    """The slots' path choice comes from the env's seeded generator (the slots do not march in
    step, and the same seed gives the same paths); env_method runs once on the whole vectorised
    env (a sum over its result, as the diagnostics take, counts every env.step second once)."""
    cfg, data, norm = smoke
    paths = [1, 2, 3, 4, 5]

    def choices(seed):
        venv = PointwiseVecEnv(cfg, data, norm, paths, n_paths=3, seed=seed)
        out = []
        for _ in range(12):
            venv._start(np.arange(3))
            out.append(venv.loop.path.copy())
        return np.array(out)
    a = choices(0)
    assert not np.array_equal(a[:, 0], a[:, 1]) and not np.array_equal(a[:, 1], a[:, 2])
    np.testing.assert_array_equal(a, choices(0))
    assert set(a.ravel()) == set(paths)
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=3, seed=0)
    venv.reset()
    venv.step(np.zeros((venv.num_envs, 1), np.float32))
    assert venv.step_seconds > 0
    seconds = venv.env_method("pop_step_seconds")
    assert len(seconds) == 1 and sum(seconds) > 0 and venv.step_seconds == 0.0
    venv.env_method("set_active_paths", [2, 3])
    assert venv.active_paths == [2, 3]
    venv._start(np.arange(3))
    assert set(venv.loop.path) <= {2, 3}


def test_absolute_actions_through_the_wrapper(smoke):
    """env.action_mode absolute: each point's action is its normalised analysis; the stored xa
    spelled so reproduces the stored run through the vectorised env, every reward 1."""
    cfg, data, norm = smoke
    cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, action_mode="absolute"))
    path = 4
    venv = PointwiseVecEnv(cfg, data, norm, [path], n_paths=1, seed=0)
    venv.reset()
    assert venv.loop.path[0] == path
    for k in range(cfg.paths.n_cycles):
        assert max_rel(venv.loop.forecast_mean[0], data["forecast_mean"][path, k]) < 1e-10, k
        a = (data["analysis_mean"][path, k] - norm.centre) / norm.half_range  # normalised xa, by hand
        _, rewards, dones, _ = venv.step(a[:, None])
        assert np.all(rewards >= 1 - 1e-9) and dones.all() == (k == cfg.paths.n_cycles - 1)
    # an offset of 0.1 at point 3 only costs point 3 (and its reward is 1 - 0.1)
    venv.loop.reset([0], [path])
    a = (data["analysis_mean"][path, 0] - norm.centre) / norm.half_range
    a[3] += 0.1
    _, rewards, _, _ = venv.step(a[:, None])
    expected = np.ones(cfg.model.n)
    expected[3] = 0.9
    np.testing.assert_allclose(rewards, expected, atol=1e-9)


def test_point_net_mlp(smoke):
    """agent.point_net mlp: SB3's MLP of the point's flattened window (no LSTM), the same weights
    at every point, trainable by PPO and by cloning; the action depends on every window row."""
    from stable_baselines3.common.torch_layers import FlattenExtractor
    from rl.agents.policy import lstm_modules
    cfg, data, norm = smoke
    cfg = with_agent(cfg, point_net="mlp")
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=1, seed=0)
    model = build_model(cfg, venv, None, "cpu", 0)
    W, F = venv.observation_space.shape
    assert isinstance(model.policy.features_extractor, FlattenExtractor) and not lstm_modules(model.policy)
    first = model.policy.mlp_extractor.policy_net[0]
    assert first.in_features == W * F == cfg.env.window * len(cfg.env.features) * (2 * cfg.agent.stencil + 1)
    points = venv.reset()
    a, _ = model.predict(points, deterministic=True)
    # the same window at two points gives the same action: one network for all
    same = points.copy()
    same[5] = same[2]
    b, _ = model.predict(same, deterministic=True)
    assert b[5] == b[2] and np.array_equal(np.delete(b, 5), np.delete(a, 5))
    for row in range(W):  # every row of the window reaches the action
        poked = points.copy()
        poked[:, row] += 0.5
        assert np.abs(model.predict(poked, deterministic=True)[0] - a).max() > 1e-6, row
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=cfg.ppo.n_steps * cfg.model.n)
    assert any(not th.equal(p, q) for p, q in zip(before, model.policy.parameters()))
    from rl.agents.clone import behaviour_clone
    history = behaviour_clone(model, dataclasses.replace(cfg, pretrain=dataclasses.replace(cfg.pretrain, epochs=3)),
                              norm, data, log=lambda *a: None)
    assert len(history["train_rmse"]) == 3 and history["train_rmse"][-1] < history["train_rmse"][0]
