"""The pointwise agent's vectorised env (rl/envs/pointwise.py) against the closed-loop env it wraps:
per-point rewards, per-point observations, the oracle, curriculum counting, cloning's gather."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import CallbackList

from rl.training.curriculum import Curriculum, CurriculumCallback
from rl.envs.assimilation import AssimilationEnv
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


def oracle_actions(env: AssimilationEnv, data, path: int, k: int) -> np.ndarray:
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
    for m, env in enumerate(venv.envs):
        obs = env._observation()  # (W, k n)
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
    assert venv.get_attr("n", indices=[0, 3]) == [cfg.model.n] * 2
    assert venv.env_is_wrapped(object) == [False] * venv.num_envs


def test_per_point_rewards_are_the_per_point_errors(smoke):
    cfg, data, norm = smoke
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=2, seed=0)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        targets = [env.data["analysis_mean"][env.path, env.cycle] for env in venv.envs]
        xbs = [env.forecast_mean.copy() for env in venv.envs]
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
    for m, p in enumerate(paths):  # put each slot on its own path
        venv.envs[m].reset(options={"path": p})
    K = cfg.paths.n_cycles
    for k in range(K):
        actions = []
        for m, p in enumerate(paths):
            assert max_rel(venv.envs[m].forecast_mean, data["forecast_mean"][p, k]) < 1e-10, (p, k)
            actions.append(oracle_actions(venv.envs[m], data, p, k))
        _, rewards, dones, infos = venv.step(np.concatenate(actions)[:, None])
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
    assert all(env.active_paths == cur.active_paths for env in venv.envs)


def test_cloning_and_the_actor_see_the_windows_the_wrapper_shows(smoke):
    """Behaviour cloning's torch gather, the evaluation actor and the vectorised env agree."""
    cfg, data, norm = smoke
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=1, seed=0)
    model = build_model(cfg, venv, None, "cpu", 0)
    points = venv.reset()
    obs = venv.envs[0]._observation()
    nb = stencil_neighbours(cfg.model.n, cfg.agent.stencil)
    np.testing.assert_array_equal(gather_points(obs, nb), points)
    with th.no_grad():
        mean = _policy_mean(model.policy, th.as_tensor(obs[None]), False, th.as_tensor(nb))[0].numpy()
        direct = model.policy.get_distribution(th.as_tensor(points)).distribution.mean[:, 0].numpy()
    np.testing.assert_allclose(mean, direct, rtol=1e-6, atol=1e-7)
    act = pointwise_actor(model, nb)(obs, venv.envs[0])
    np.testing.assert_allclose(act, np.clip(direct, -cfg.env.obs_bound, cfg.env.obs_bound), rtol=1e-5, atol=1e-6)
