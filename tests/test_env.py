"""The closed-loop assimilation environment (rl/envs/assimilation.py) on the smoke experiment's real data.

Also home of the helpers the RL tests share (test_curriculum, test_policy and test_cli_rl import
them): ``smoke_workdir`` is the session's read-only smoke data (conftest), ``load_smoke`` reads it
the way rl/training/train.py does.
"""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest

from conftest import build_smoke_data
from rl.config import load_config
from enkf.precompute import read_paths
from enkf.spinup import read_spinup
from rl.envs.assimilation import AssimilationEnv, build_features, feature_sizes
from rl.envs.normalisation import Normaliser

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.yaml"
ALL_FEATURES = ["forecast_mean", "obs", "innovation", "spread", "prev_analysis"]


# ---- shared helpers ------------------------------------------------------------------------------
def smoke_workdir(tmp_path_factory) -> Path:
    """The session's smoke data folder (conftest.build_smoke_data): config.yaml and data/smoke/ of
    both splits. Read-only: a test that writes copies it first (conftest.copy_smoke_data)."""
    return build_smoke_data(tmp_path_factory)


def load_smoke(workdir: Path):
    """(cfg, data, normaliser) of the smoke experiment in workdir."""
    cfg = load_config(workdir / "config.yaml", "smoke")
    data = read_paths(cfg, workdir / "data" / "smoke" / "paths.h5")
    spin = read_spinup(cfg, workdir / "data" / "smoke" / "spinup.h5")
    return cfg, data, Normaliser.from_climatology(spin["clim_min"], spin["clim_max"])


def with_env(cfg, **changes):
    return dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, **changes))


def max_rel(x, ref):
    """Largest component error relative to the largest component of the reference state."""
    return float(np.max(np.abs(np.asarray(x) - ref)) / np.max(np.abs(ref)))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The RL tests' nets are tiny: one torch thread (several threads on shared cores are ~50x
    slower); the previous setting is restored afterwards."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """smoke with absolute actions: these tests spell actions as normalised states (increment
    mode has its own oracle test below)."""
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    return with_env(cfg, action_mode="absolute"), data, norm


# ---- oracle: the stored analysis reproduces the stored run ---------------------------------------
@pytest.mark.parametrize("path", [1, 0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_stored_analysis_reproduces_stored_run(smoke, path, dtype):
    cfg, data, norm = smoke
    env = AssimilationEnv(cfg, data, norm, [1])
    env.reset(options={"path": path})
    K = cfg.paths.n_cycles
    assert env.n_cycles == K == 60
    worst, rewards = 0.0, []
    for k in range(K):
        ref = data["forecast_mean"][path, k]
        err = max_rel(env.forecast_mean, ref)
        assert err < 1e-6, f"cycle {k}: forecast mean off by {err:.2e} (relative)"
        worst = max(worst, err)
        action = env.action_for(data["analysis_mean"][path, k], dtype)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        assert not terminated and not info["halted"], f"halted at cycle {k}"
        assert truncated == (k == K - 1), f"truncated={truncated} at cycle {k}"
        assert info["cycle"] == k and info["path"] == path
        np.testing.assert_allclose(info["enkf_rmse_vs_truth"],
                                   np.sqrt(np.mean((data["analysis_mean"][path, k] - data["truth"][path, k]) ** 2)),
                                   rtol=1e-12)
    assert min(rewards) >= 1 - 1e-5
    assert env.cycle == K
    if dtype is np.float64:  # float64 actions are the stored analysis to rounding
        assert worst < 1e-10


def test_increment_mode_oracle(smoke):
    cfg, data, norm = smoke
    cfg = with_env(cfg, action_mode="increment")
    path = 1
    env = AssimilationEnv(cfg, data, norm, [path])
    env.reset(options={"path": path})
    for k in range(cfg.paths.n_cycles):
        assert max_rel(env.forecast_mean, data["forecast_mean"][path, k]) < 1e-6, k
        action = norm.diff_norm(data["analysis_mean"][path, k] - env.forecast_mean)
        np.testing.assert_allclose(env.action_for(data["analysis_mean"][path, k]), action, rtol=1e-6, atol=1e-7)
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward >= 1 - 1e-5 and not terminated
        assert max_rel(env.last_analysis, data["analysis_mean"][path, k]) < 1e-10
    assert truncated


def test_online_target_rewards_the_online_analysis(smoke):
    cfg, data, norm = smoke
    cfg = dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, target="online"))
    env = AssimilationEnv(cfg, data, norm, [2])
    env.reset(options={"path": 2})
    for k in range(cfg.paths.n_cycles):
        obs, reward, terminated, truncated, info = env.step(env.action_for(env.online_analysis))
        assert reward >= 1 - 1e-5, (k, reward)
        assert info["rmse_vs_online"] < 1e-5
        assert not terminated
    assert truncated
    # and the online target is the target: the no-analysis action is rewarded against it
    env.reset(options={"path": 2})
    xb, xa_online = env.forecast_mean.copy(), env.online_analysis.copy()
    _, reward, *_ = env.step(env.action_for(xb))
    expected = 1 - min(float(np.sqrt(np.mean((norm.norm(xb) - norm.norm(xa_online)) ** 2))), cfg.reward.clip)
    assert reward == pytest.approx(expected, abs=1e-6) and reward < 1 - 1e-3


def test_online_target_off_the_stored_run(smoke):
    """Once the env's own ensemble has left the stored run (a few analyses off the stored ones),
    the online target is its own EnKF analysis, no longer the stored one: asking for it earns
    reward 1 while it is measurably off the stored analysis."""
    cfg, data, norm = smoke
    cfg = dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, target="online"))
    path = 2
    env = AssimilationEnv(cfg, data, norm, [path])
    env.reset(options={"path": path})
    for k in range(4):
        env.step(env.action_for(data["analysis_mean"][path, k] + 0.3, np.float64))
    online = env.online_analysis.copy()
    assert np.abs(norm.norm(online) - norm.norm(data["analysis_mean"][path, 4])).max() > 1e-3
    _, reward, terminated, _, info = env.step(env.action_for(online, np.float64))
    assert reward == pytest.approx(1.0, abs=1e-9) and not terminated
    assert info["rmse_vs_online"] < 1e-9 and info["rmse_vs_enkf"] > 1e-3


def test_truth_target_rewards_the_distance_to_the_truth(smoke):
    """reward.target truth: the reward and the per-point credit are the normalised distance of the
    agent's analysis to the true state (not to the stored EnKF analysis, reported apart)."""
    cfg, data, norm = smoke
    cfg = dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, target="truth"))
    path = 2
    env = AssimilationEnv(cfg, data, norm, [path])
    env.reset(options={"path": path})
    rng = np.random.default_rng(3)
    c, h = norm.centre, norm.half_range
    for k in range(8):
        truth, stored = data["truth"][path, k], data["analysis_mean"][path, k]
        a = ((stored - c) / h + rng.normal(0, 0.02 * (k + 1), env.n)).astype(np.float32)
        _, reward, terminated, _, info = env.step(a)
        xa = env.last_analysis
        np.testing.assert_allclose(xa, a.astype(np.float64) * h + c, rtol=1e-12)  # absolute action
        error = np.abs((xa - truth) / h)
        np.testing.assert_allclose(info["point_error"], error, rtol=1e-10, atol=1e-14)
        assert reward == pytest.approx(1 - min(np.sqrt(np.mean(error ** 2)), cfg.reward.clip), abs=1e-12)
        assert info["rmse_vs_enkf"] == pytest.approx(np.sqrt(np.mean(((xa - stored) / h) ** 2)), rel=1e-10)
        assert reward != pytest.approx(1 - info["rmse_vs_enkf"], abs=1e-6)  # another target than stored's
        assert not terminated
    # the truth itself is the best analysis there is
    env.reset(options={"path": path})
    _, reward, *_ = env.step(env.action_for(data["truth"][path, 0], np.float64))
    assert reward == pytest.approx(1.0, abs=1e-12)


# ---- halting --------------------------------------------------------------------------------------
def run_until_halt(env, norm, halt_bound, act):
    """Step until termination, checking at every step that termination happens exactly when the
    normalised forecast mean first leaves [-halt_bound, halt_bound]. Returns the halting step."""
    for k in range(env.n_cycles):
        obs, reward, terminated, truncated, info = env.step(act(k))
        if truncated:
            return None
        z = norm.norm(env.forecast_mean)
        outside = (not np.all(np.isfinite(z))) or bool(np.any(np.abs(z) > halt_bound))
        assert terminated == outside, (k, terminated, np.abs(z).max())
        assert info["halted"] == terminated
        if terminated:
            return k
    return None


@pytest.mark.parametrize("mode,halt_bound", [("absolute", 2.0), ("increment", 3.0)])
def test_all_max_actions_halt(smoke, mode, halt_bound):
    cfg, data, norm = smoke
    cfg = with_env(cfg, action_mode=mode, halt_bound=halt_bound)
    env = AssimilationEnv(cfg, data, norm, [1])
    env.reset(options={"path": 1})
    assert np.all(np.abs(norm.norm(env.forecast_mean)) <= halt_bound)
    b = cfg.env.obs_bound
    k = run_until_halt(env, norm, halt_bound, lambda k: np.full(env.n, b, np.float32))
    assert k is not None, "all-(+obs_bound) actions never halted"


def test_halt_at_first_excursion_of_the_stored_run(smoke):
    """Oracle actions with a tight halt bound: the halt comes exactly at the first cycle (after
    cycle 0) whose stored forecast mean leaves the bound, not before, not after."""
    cfg, data, norm = smoke
    path = 1
    m = np.abs(norm.norm(data["forecast_mean"][path])).max(axis=1)  # (K,)
    halt_bound = float(np.sort(m[1:])[-4])  # a bound the stored run leaves a few times
    first_out = 1 + int(np.argmax(m[1:] > halt_bound))
    assert first_out >= 2, "choose a path whose first excursion is not at cycle 1"
    env = AssimilationEnv(with_env(cfg, halt_bound=halt_bound), data, norm, [path])
    env.reset(options={"path": path})
    k = run_until_halt(env, norm, halt_bound,
                       lambda k: norm.norm(data["analysis_mean"][path, k]))
    assert k == first_out - 1  # step k makes the forecast of cycle k + 1


def test_nan_and_huge_actions(smoke):
    cfg, data, norm = smoke
    env = AssimilationEnv(cfg, data, norm, [1])
    clip = cfg.reward.clip
    for bad in (np.full(env.n, np.nan), np.r_[np.zeros(env.n - 1), np.nan], np.full(env.n, np.inf)):
        env.reset(options={"path": 1})
        obs, reward, terminated, truncated, info = env.step(bad.astype(np.float32))
        assert terminated and not truncated and info["halted"]
        assert reward == 1 - clip
        assert np.all(np.isfinite(obs)) and obs.dtype == np.float32
    b = cfg.env.obs_bound
    for sign in (1.0, -1.0):
        env.reset(options={"path": 1})
        obs, reward, terminated, truncated, info = env.step(np.full(env.n, sign * 1e30, np.float32))
        np.testing.assert_allclose(env.last_analysis, norm.unnorm(np.full(env.n, sign * b)), rtol=1e-12)
        assert reward == 1 - clip  # norm(xa) = +-3 everywhere: RMSE vs the stored xa > 2
        assert np.all(np.isfinite(obs)) and np.all(np.abs(obs) <= b)


def test_reward_bounds_and_value(smoke):
    cfg, data, norm = smoke
    env = AssimilationEnv(cfg, data, norm, [1, 2, 3])
    rng = np.random.default_rng(0)
    clip, b = cfg.reward.clip, cfg.env.obs_bound
    env.reset(seed=0)
    rewards, n_done = [], 0
    for i in range(300):
        if i % 2:
            a = rng.uniform(-b, b, env.n)
        else:
            a = norm.norm(data["analysis_mean"][env.path, env.cycle]) + rng.normal(0, 0.5, env.n)
        obs, reward, terminated, truncated, info = env.step(a.astype(np.float32))
        rewards.append(reward)
        assert 1 - clip <= reward <= 1
        assert reward == pytest.approx(1 - min(info["rmse_vs_enkf"], clip), abs=1e-12)
        if terminated or truncated:
            n_done += 1
            env.reset()
    rewards = np.array(rewards)
    assert rewards.min() < 0.2 and rewards.max() > 0.5  # the range is actually explored


# ---- the observation ---------------------------------------------------------------------------
def test_features_never_see_the_truth(smoke):
    cfg, data, norm = smoke
    assert "truth" not in inspect.signature(build_features).parameters
    blind = dict(data, truth=np.full_like(data["truth"], np.nan))
    cfg = with_env(cfg, features=ALL_FEATURES)
    envs = [AssimilationEnv(cfg, d, norm, [1]) for d in (data, blind)]
    rng = np.random.default_rng(1)
    obs = [e.reset(options={"path": 1})[0] for e in envs]
    np.testing.assert_array_equal(obs[0], obs[1])
    for k in range(40):
        a = (norm.norm(data["analysis_mean"][1, k]) + rng.normal(0, 0.05, envs[0].n)).astype(np.float32)
        out = [e.step(a) for e in envs]
        np.testing.assert_array_equal(out[0][0], out[1][0])
        assert out[0][1] == out[1][1]  # reward
        assert np.isfinite(out[0][4]["rmse_vs_truth"]) and np.isnan(out[1][4]["rmse_vs_truth"])


@pytest.mark.parametrize("features", [["forecast_mean", "obs"], ["innovation"], ALL_FEATURES,
                                      ["prev_analysis", "spread", "obs"]])
@pytest.mark.parametrize("stride", [1, 2])
def test_observation_space_and_window(smoke, features, stride):
    cfg, data, norm = smoke
    cfg = dataclasses.replace(with_env(cfg, features=features, window=3),
                              obs=dataclasses.replace(cfg.obs, stride=stride))
    idx = np.array(cfg.obs_index)
    data = dict(data, obs=data["obs"][..., idx])  # observations of every stride-th variable
    sizes = {"forecast_mean": 8, "obs": 8 // stride, "innovation": 8 // stride, "spread": 8,
             "prev_analysis": 8, "ensemble": 8 * cfg.filter.n_ens, "correlation": 8 * cfg.agent.stencil}
    assert feature_sizes(cfg) == sizes
    F = sum(sizes[f] for f in features)
    env = AssimilationEnv(cfg, data, norm, [1])
    b = cfg.env.obs_bound
    assert env.observation_space.shape == (3, F) and env.observation_space.dtype == np.float32
    assert np.all(env.observation_space.low == -b) and np.all(env.observation_space.high == b)
    assert env.action_space.shape == (8,)

    def expected_row(k):
        xb = env.forecast_mean
        y = data["obs"][1, k]
        prev = xb if env.last_analysis is None else env.last_analysis
        parts = {"forecast_mean": norm.norm(xb), "obs": norm.norm(y, idx),
                 "innovation": norm.diff_norm(y - xb[idx], idx),
                 "spread": norm.diff_norm(data["forecast_spread"][1, k]) if stride == 1 else None,
                 "prev_analysis": norm.norm(prev)}
        return parts

    obs, info = env.reset(options={"path": 1})
    assert obs.shape == (3, F) and obs.dtype == np.float32 and env.observation_space.contains(obs)
    for row in obs[1:]:
        np.testing.assert_array_equal(row, obs[0])  # the window starts filled with cycle 0
    history = [obs]
    for k in range(5):
        parts = expected_row(k)
        row, start = history[-1][-1], 0
        for f in features:
            n = sizes[f]
            if parts[f] is not None:
                np.testing.assert_allclose(row[start:start + n], np.clip(parts[f], -b, b),
                                           atol=1e-6, err_msg=f"{f} at cycle {k}")
            start += n
        obs, *_ = env.step(norm.norm(data["analysis_mean"][1, k]) if stride == 1
                           else env.action_for(env.online_analysis))
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        np.testing.assert_array_equal(obs[:-1], history[-1][1:])  # the window slides by one
        assert not np.array_equal(obs[-1], history[-1][-1])
        history.append(obs)


def test_reset_picks_paths(smoke):
    cfg, data, norm = smoke
    env = AssimilationEnv(cfg, data, norm, [1])
    for p in (0, 5, 3):
        obs, info = env.reset(options={"path": p})
        assert env.path == info["path"] == p and info["cycle"] == 0
        np.testing.assert_allclose(env.forecast_mean, data["forecast_mean"][p, 0], rtol=1e-12)
    env.set_active_paths([3, 4])
    assert env.active_paths == [3, 4]
    picked = set()
    for seed in range(30):
        _, info = env.reset(seed=seed)
        picked.add(info["path"])
        np.testing.assert_allclose(env.forecast_mean, data["forecast_mean"][info["path"], 0], rtol=1e-12)
    assert picked == {3, 4}
    env.set_active_paths([2])
    assert {env.reset()[1]["path"] for _ in range(5)} == {2}


def test_reference_observations_are_what_the_env_shows_the_oracle(tmp_path_factory):
    """Behaviour cloning's inputs (rl.envs.assimilation.reference_observations, built from the stored run) equal
    the env's observations along the oracle run, for every feature including the ensemble."""
    from enkf.precompute import precompute
    from rl.envs.assimilation import reference_actions, reference_observations
    cfg, _, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(
        cfg, env=dataclasses.replace(cfg.env, features=ALL_FEATURES + ["ensemble"]),
        paths=dataclasses.replace(cfg.paths, n_paths=2, train_paths=[1, 1], store_ensembles=True, workers=1))
    starts = read_spinup(load_config(CONFIG, "smoke"), smoke_workdir(tmp_path_factory) / "data/smoke/spinup.h5")["starts"]
    data = precompute(cfg, starts[:2], progress=False)
    env = AssimilationEnv(cfg, data, norm, [1])
    expected, actions = reference_observations(cfg, norm, data, 1), reference_actions(cfg, norm, data, 1)
    obs, _ = env.reset(options={"path": 1})
    assert obs.shape == expected.shape[1:]
    for k in range(env.n_cycles):
        np.testing.assert_array_equal(obs, expected[k])
        obs, *_ = env.step(actions[k])


@pytest.mark.parametrize("mode", ["absolute", "increment"])
def test_reference_actions_ask_for_the_stored_analysis(smoke, mode):
    """Behaviour cloning's targets (rl.envs.assimilation.reference_actions) in either action mode:
    fed to the env they are the stored analyses, every reward 1."""
    from rl.envs.assimilation import reference_actions
    cfg, data, norm = smoke
    cfg = with_env(cfg, action_mode=mode)
    path = 3
    actions = reference_actions(cfg, norm, data, path)
    assert actions.shape == (cfg.paths.n_cycles, cfg.model.n)
    env = AssimilationEnv(cfg, data, norm, [path])
    env.reset(options={"path": path})
    for k in range(cfg.paths.n_cycles):
        _, reward, terminated, _, _ = env.step(actions[k])
        assert reward >= 1 - 1e-9 and not terminated, k
        assert max_rel(env.last_analysis, data["analysis_mean"][path, k]) < 1e-10, k
