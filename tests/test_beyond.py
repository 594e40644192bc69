"""Beyond imitation: the no-truth reward (reward.target next_obs), the env's own (tuned) ensemble
filter, the ensemble-correlation feature, on the smoke experiment's real data; the single env is
the reference and the batched loop must equal it."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from enkf.system import System
from rl.envs.assimilation import AssimilationEnv
from rl.envs.batched import BatchedLoop
from rl.envs.pointwise import PointwiseVecEnv

from test_env import load_smoke, one_torch_thread, smoke_workdir  # noqa: F401


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    assert cfg.env.action_mode == "increment"
    return cfg, data, norm


def with_reward(cfg, **changes):
    return dataclasses.replace(cfg, reward=dataclasses.replace(cfg.reward, **changes))


# ---- reward.target: next_obs -----------------------------------------------------------------------
def test_next_obs_reward_equals_its_hand_computation(smoke):
    """Step k's reward is the fit of the forecast started from xa_rl to y(k+1): by hand, the
    analysis anomalies of the env's forecast (the filter with the (path, k) draws), recentred on
    xa_rl, forecast one cycle with the model, their mean against the next observation."""
    cfg, data, norm = smoke
    cfg = with_reward(cfg, target="next_obs")
    system = System.from_config(cfg)
    env = AssimilationEnv(cfg, data, norm, [2])
    env.reset(options={"path": 2})
    gen = np.random.default_rng(3)
    clip, n = cfg.reward.clip, cfg.model.n
    for k in range(6):
        Ef, xb = env._ensemble.copy(), env.forecast_mean.copy()
        a = gen.normal(0, 0.05, n).astype(np.float32)
        _, reward, terminated, truncated, info = env.step(a)
        xa = xb + a.astype(np.float64) * norm.half_range
        _, Aa = system.analyse(Ef, data["obs"][2, k], 2, k)
        xb_next = system.forecast(xa + Aa).mean(axis=0)
        y_next = data["obs"][2, k + 1]
        expected_points = np.abs(xb_next - y_next) / norm.half_range
        np.testing.assert_allclose(info["point_error"], expected_points, rtol=1e-9, atol=1e-12)
        expected = 1.0 - min(np.sqrt(np.mean(expected_points ** 2)), clip)
        assert reward == pytest.approx(expected, abs=1e-12)
        assert not terminated and not truncated
        # no truth in it: the same step with a NaN truth gives the same reward
    blind = dict(data, truth=np.full_like(data["truth"], np.nan))
    envs = [AssimilationEnv(cfg, d, norm, [1]) for d in (data, blind)]
    for e in envs:
        e.reset(options={"path": 1})
    for k in range(5):
        out = [e.step(np.full(n, 0.01, np.float32)) for e in envs]
        assert out[0][1] == out[1][1]
        np.testing.assert_array_equal(out[0][4]["point_error"], out[1][4]["point_error"])


def test_next_obs_differs_from_the_other_targets(smoke):
    """The reward is not the stored-xa reward (a mutation back to the old target fails here)."""
    cfg, data, norm = smoke
    rewards = {}
    for target in ("stored", "next_obs"):
        env = AssimilationEnv(with_reward(cfg, target=target), data, norm, [1])
        env.reset(options={"path": 1})
        rewards[target] = [env.step(np.zeros(cfg.model.n, np.float32))[1] for _ in range(5)]
    assert not np.allclose(rewards["stored"], rewards["next_obs"])


def test_next_obs_last_cycle_has_no_reward_and_training_episodes_end_before_it(smoke):
    """The single env and the batched loop give a NaN reward on the last cycle (no next y); the
    training VecEnv ends its episodes one cycle earlier (truncated, a finite reward every step)."""
    cfg, data, norm = smoke
    cfg = with_reward(cfg, target="next_obs")
    K, n = cfg.paths.n_cycles, cfg.model.n
    env = AssimilationEnv(cfg, data, norm, [1])
    env.reset(options={"path": 1})
    for k in range(K):
        _, reward, terminated, truncated, info = env.step(env.action_for(env.online_analysis))
        assert not terminated
        assert np.isfinite(reward) == (k < K - 1) and truncated == (k == K - 1)
    assert np.all(np.isnan(info["point_error"]))
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=2, seed=0)
    venv.reset()
    lengths = []
    for t in range(2 * K):
        _, rewards, dones, infos = venv.step(np.zeros((venv.num_envs, 1), np.float32))
        assert np.all(np.isfinite(rewards))
        for m in range(2):
            if dones[m * n]:
                lengths.append(infos[m * n]["episode"]["l"])
                assert infos[m * n]["TimeLimit.truncated"]
    assert lengths and set(lengths) == {K - 1}


@pytest.mark.parametrize("target", ["next_obs", "truth", "online"])
def test_batched_loop_equals_single_envs_for_every_target(smoke, target):
    """Random actions, some halting slots, resets: rewards, per-point errors and flags of the
    batched loop equal the single env's (NaN rewards included)."""
    cfg, data, norm = smoke
    cfg = with_reward(cfg, target=target)
    P = 3
    loop = BatchedLoop(cfg, data, norm, P)
    envs = [AssimilationEnv(cfg, data, norm, [0]) for _ in range(P)]
    queue = iter([q % data["obs"].shape[0] for q in range(1000)])
    start = [next(queue) for _ in range(P)]
    loop.reset(np.arange(P), start)
    for q, e in enumerate(envs):
        e.reset(options={"path": start[q]})
    gen = np.random.default_rng(1)
    scale = np.array([0.05, 2.5, 0.02])
    seen_nan = halts = 0
    for t in range(130):
        actions = (gen.standard_normal((P, cfg.model.n)) * scale[:, None]).astype(np.float32)
        res = loop.step(actions)
        ended = []
        for q, e in enumerate(envs):
            obs, reward, terminated, truncated, info = e.step(actions[q])
            np.testing.assert_allclose(res.reward[q], reward, rtol=0, atol=1e-12)  # NaN == NaN
            np.testing.assert_allclose(res.point_error[q], info["point_error"], rtol=0, atol=1e-12)
            assert res.terminated[q] == terminated and res.truncated[q] == truncated
            seen_nan += np.isnan(reward)
            halts += terminated
            if terminated or truncated:
                ended.append(q)
            else:
                np.testing.assert_array_equal(loop.observations()[q], obs)
        new = [next(queue) for _ in ended]
        loop.reset(np.array(ended, dtype=int), new)
        for q, p in zip(ended, new):
            envs[q].reset(options={"path": p})
    assert halts >= 1
    assert (seen_nan >= 1) == (target == "next_obs")


# ---- env.ensemble_filter: the env's ensemble runs with another (tuned) filter ------------------------
TUNED = {"method": "etkf", "inflation": 1.2, "inflation_stage": "analysis", "centre_perturbations": False,
         "rotate": True, "loc_radius": None}


def with_ensemble_filter(cfg, settings):
    from rl.config import EnsembleFilterConfig
    f = None if settings is None else EnsembleFilterConfig(**settings)
    return dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, ensemble_filter=f))


def reference_run(cfg, workdir, path):
    """That filter's own run from the path's start (enkf.precompute.run_path): the truth and the
    observations are the stored run's (the same seed), the analyses the filter's."""
    from enkf.precompute import run_path
    from enkf.spinup import read_spinup
    starts = read_spinup(cfg, workdir / "data" / "smoke" / "spinup.h5")["starts"]
    return run_path(System.from_config(cfg.ensemble_config()), starts[path], path, cfg.paths.n_cycles)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tuned_ensemble_with_its_own_mean_reproduces_the_tuned_filter(smoke, tmp_path_factory, dtype):
    """The filter's own analysis mean as the action: one step equals that filter's run exactly,
    the whole path follows it (float64 actions: to rounding; float32, as a policy emits them:
    statistically, the RMSE vs truth over the path within 5%)."""
    cfg, data, norm = smoke
    cfg = with_ensemble_filter(cfg, TUNED)
    ref = reference_run(cfg, smoke_workdir(tmp_path_factory), 2)
    np.testing.assert_allclose(ref["truth"], data["truth"][2], rtol=0, atol=1e-12)  # the same twin
    assert not np.allclose(ref["analysis_mean"], data["analysis_mean"][2], atol=1e-3)  # another filter
    env = AssimilationEnv(cfg, data, norm, [2])
    env.reset(options={"path": 2})
    K, rmse_env = cfg.paths.n_cycles, []
    for k in range(K):
        if k == 0:
            np.testing.assert_allclose(env.forecast_mean, ref["forecast_mean"][0], rtol=0, atol=1e-12)
            np.testing.assert_allclose(env.online_analysis, ref["analysis_mean"][0], rtol=0, atol=1e-12)
        *_, info = env.step(env.action_for(env.online_analysis, dtype))
        rmse_env.append(info["rmse_vs_truth"])
        if dtype is np.float64:
            np.testing.assert_allclose(env.last_analysis, ref["analysis_mean"][k], rtol=0, atol=1e-6)
    rmse_ref = np.sqrt(np.mean((ref["analysis_mean"] - ref["truth"]) ** 2, axis=1))
    b = cfg.paths.burn_in
    assert np.mean(rmse_env[b:]) == pytest.approx(np.mean(rmse_ref[b:]), rel=0.05)
    assert np.mean(rmse_ref[b:]) < 0.8 * np.mean(np.sqrt(np.mean(
        (data["analysis_mean"][2] - data["truth"][2]) ** 2, axis=1))[b:])  # tuned beats the stored filter


def test_a_localised_ensemble_filter_with_its_own_mean_reproduces_the_letkf(smoke, tmp_path_factory):
    """env.ensemble_filter may be the LETKF (the best filter of a ring is often localised): with
    the LETKF's own analysis mean as the action the env follows that filter's run, cycle by cycle."""
    cfg, data, norm = smoke
    cfg = with_ensemble_filter(cfg, dict(TUNED, method="letkf", loc_radius=1.0))
    assert cfg.ensemble_config().filter.method == "letkf" and cfg.ensemble_config().filter.loc_radius == 1.0
    ref = reference_run(cfg, smoke_workdir(tmp_path_factory), 2)
    etkf = reference_run(with_ensemble_filter(cfg, TUNED), smoke_workdir(tmp_path_factory), 2)
    assert not np.allclose(ref["analysis_mean"][:5], etkf["analysis_mean"][:5], atol=1e-6)  # localisation acts
    env = AssimilationEnv(cfg, data, norm, [2])
    env.reset(options={"path": 2})
    for k in range(10):
        env.step(env.action_for(env.online_analysis, np.float64))
        np.testing.assert_allclose(env.last_analysis, ref["analysis_mean"][k], rtol=0, atol=1e-6)


def test_the_tuned_filters_own_runs_for_cloning_are_that_filters_runs(smoke, tmp_path_factory):
    """rl.envs.batched.ensemble_filter_runs (the features a truth-cloning inside the tuned ensemble
    reads): on the given paths the tuned filter's forecast mean, spread and analysis mean, cycle by
    cycle; elsewhere, and the truth and observations everywhere, the stored run's."""
    from rl.envs.batched import ensemble_filter_runs
    cfg, data, norm = smoke
    cfg = with_ensemble_filter(cfg, TUNED)
    runs = ensemble_filter_runs(cfg, data, norm, [2, 4])
    for p in (2, 4):
        ref = reference_run(cfg, smoke_workdir(tmp_path_factory), p)
        for key in ("forecast_mean", "forecast_spread", "analysis_mean"):
            np.testing.assert_allclose(runs[key][p], ref[key], rtol=0, atol=1e-6, err_msg=key)
    for key in ("forecast_mean", "analysis_mean"):
        np.testing.assert_array_equal(runs[key][3], data[key][3])
    for key in ("truth", "obs"):
        np.testing.assert_array_equal(runs[key], data[key])


def test_tuned_ensemble_in_the_batched_loop_equals_the_single_env(smoke):
    cfg, data, norm = smoke
    cfg = with_ensemble_filter(cfg, dict(TUNED, method="enkf", inflation_stage="forecast", rotate=False))
    loop = BatchedLoop(cfg, data, norm, 2)
    envs = [AssimilationEnv(cfg, data, norm, [0]) for _ in range(2)]
    loop.reset(np.arange(2), [1, 3])
    for q, p in enumerate([1, 3]):
        envs[q].reset(options={"path": p})
    gen = np.random.default_rng(0)
    for k in range(20):
        np.testing.assert_allclose(loop.online_analysis, np.stack([e.online_analysis for e in envs]),
                                   rtol=0, atol=1e-12)
        actions = gen.normal(0, 0.02, (2, cfg.model.n)).astype(np.float32)
        res = loop.step(actions)
        for q, e in enumerate(envs):
            obs, reward, *_ = e.step(actions[q])
            assert res.reward[q] == pytest.approx(reward, abs=1e-12)
            np.testing.assert_array_equal(loop.observations()[q], obs)


def test_ensemble_filter_config_rules(tmp_path):
    from conftest import write_config
    from enkf.config import ConfigError
    from rl.config import load_config
    good = write_config(tmp_path / "a.yaml", "smoke", {"env": {"ensemble_filter": TUNED}, "pretrain": {"epochs": 0}})
    cfg = load_config(good, "smoke")
    assert cfg.ensemble_config().filter.method == "etkf" and cfg.filter.method == "enkf"
    assert cfg.ensemble_config().filter.n_ens == cfg.filter.n_ens
    bad = write_config(tmp_path / "b.yaml", "smoke", {"env": {"ensemble_filter": dict(TUNED, inflation=-1.0)},
                                                      "pretrain": {"epochs": 0}})
    with pytest.raises(ConfigError, match="env.ensemble_filter.inflation: must be > 0"):
        load_config(bad, "smoke")
    clone = write_config(tmp_path / "c.yaml", "smoke", {"env": {"ensemble_filter": TUNED}})
    with pytest.raises(ConfigError, match="env.ensemble_filter: cloning"):
        load_config(clone, "smoke")


# ---- the correlation feature -------------------------------------------------------------------
def test_correlation_feature_values_by_hand(smoke):
    """Block d - 1 of the correlation feature holds corr(x_j, x_{j+d}) of the forecast members at
    variable j; the pointwise gather hands point i its correlations with x_{i+d} and x_{i-d}."""
    cfg, data, norm = smoke
    S = 2
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, stencil=S),
                              env=dataclasses.replace(cfg.env, features=["spread", "correlation"]))
    n = cfg.model.n
    venv = PointwiseVecEnv(cfg, data, norm, [1], n_paths=1, seed=0)
    points = venv.reset()
    for _ in range(3):
        points, *_ = venv.step(np.zeros((venv.num_envs, 1), np.float32))
    E = venv.loop.ensemble[0]
    obs = venv.loop.observations()[0][-1]  # the current row: spread (n), correlation (S n)
    assert obs.shape == (n + S * n,)
    for d in range(1, S + 1):
        for j in range(n):
            a, b = E[:, j] - E[:, j].mean(), E[:, (j + d) % n] - E[:, (j + d) % n].mean()
            by_hand = np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b))
            assert obs[n + (d - 1) * n + j] == pytest.approx(by_hand, abs=1e-6)
            assert by_hand == pytest.approx(np.corrcoef(E[:, j], E[:, (j + d) % n])[0, 1], abs=1e-12)
    width = 2 * S + 1
    points = points.reshape(n, cfg.env.window, -1)[:, -1]  # (n, k (2S+1)) current row of each point
    for i in range(n):
        for d in range(1, S + 1):
            block = points[i, (1 + d - 1) * width:(1 + d) * width]  # feature block 1 + (d - 1)
            assert block[S] == pytest.approx(np.corrcoef(E[:, i], E[:, (i + d) % n])[0, 1], abs=1e-6)
            assert block[S - d] == pytest.approx(np.corrcoef(E[:, (i - d) % n], E[:, i])[0, 1], abs=1e-6)


def test_correlation_feature_rules(tmp_path):
    from conftest import write_config
    from enkf.config import ConfigError
    from rl.config import load_config
    ok = write_config(tmp_path / "a.yaml", "smoke", {"env": {"features": ["obs", "correlation"]}, "pretrain": {"epochs": 0}})
    assert load_config(ok, "smoke").env.features == ["obs", "correlation"]
    clone = write_config(tmp_path / "b.yaml", "smoke", {"env": {"features": ["obs", "correlation"]}})
    with pytest.raises(ConfigError, match="cloning the 'correlation' feature needs paths.store_ensembles"):
        load_config(clone, "smoke")
    l63 = write_config(tmp_path / "c.yaml", "L63", {"env": {"features": ["obs", "correlation"]}, "pretrain": {"epochs": 0}})
    with pytest.raises(ConfigError, match="'correlation' needs a ring"):
        load_config(l63, "L63")
