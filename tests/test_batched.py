"""The batched closed loop (rl/envs/batched.py, enkf/batch.py) against its single-path reference.

With the same actions, P batched slots must equal P AssimilationEnvs exactly (the same kernels on
the same draws), through halts, truncations and resets inside a batch; the stored-xa oracle must
reproduce the stored run through the batched loop.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from enkf.batch import forecast_ensembles, spreads
from enkf.filters import ensemble_spread
from enkf.system import KeptDraws, System
from rl.envs.assimilation import AssimilationEnv
from rl.envs.batched import BatchedLoop
from test_env import load_smoke, smoke_workdir


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return load_smoke(smoke_workdir(tmp_path_factory))


def with_block(cfg, block_columns):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, block_columns=block_columns))


@pytest.mark.parametrize("block_columns", [1, 10, 25, 1000])
def test_forecast_of_many_paths_equals_one_path_at_a_time(smoke, block_columns):
    cfg, data, _ = smoke
    system = System.from_config(cfg)
    EE = data["initial_ensemble"][:5]
    batched = system.forecast_batch(np.ascontiguousarray(EE), block_columns)
    for p in range(5):
        np.testing.assert_array_equal(batched[p], system.forecast(EE[p]))
    np.testing.assert_array_equal(spreads(batched), np.stack([ensemble_spread(E) for E in batched]))


@pytest.mark.parametrize("method,stage", [("enkf", "forecast"), ("enkf", "analysis"), ("etkf", "forecast")])
def test_analysis_of_many_paths_equals_one_path_at_a_time(smoke, method, stage):
    cfg, data, _ = smoke
    f = dataclasses.replace(cfg.filter, method=method, inflation_stage=stage, inflation=1.3, rotate=method == "etkf")
    system = System.from_config(dataclasses.replace(cfg, filter=f))
    EE = system.forecast_batch(np.ascontiguousarray(data["initial_ensemble"][:4]), 100)
    paths, cycles = np.array([0, 1, 2, 3]), np.array([0, 5, 0, 7])
    yy = data["obs"][paths, cycles]
    xa, Aa = system.analyse_batch(EE, yy, paths, cycles)
    E0 = np.ascontiguousarray(data["initial_ensemble"][:4])
    Ef, spread, xa2, Aa2 = system.cycle_batch(E0, yy, paths, cycles, 25)  # forecast + analysis, fused
    for q in range(4):
        x1, A1 = system.analyse(EE[q], yy[q], paths[q], cycles[q])
        np.testing.assert_allclose(xa[q], x1, rtol=0, atol=1e-13)
        np.testing.assert_allclose(Aa[q], A1, rtol=0, atol=1e-13)
        np.testing.assert_array_equal(Ef[q], system.forecast(E0[q]))
        np.testing.assert_array_equal(spread[q], ensemble_spread(Ef[q]))
        np.testing.assert_allclose(xa2[q], x1, rtol=0, atol=1e-13)
        np.testing.assert_allclose(Aa2[q], A1, rtol=0, atol=1e-13)


@pytest.mark.parametrize("method,rotate", [("enkf", False), ("etkf", True), ("etkf", False)])
def test_kept_draws_are_the_systems_draws(smoke, method, rotate):
    """Drawn once and kept: every call returns exactly System.analysis_draws of its (path, cycle)
    pairs, for pairs new, repeated within a call and seen in an earlier call."""
    cfg, data, _ = smoke
    f = dataclasses.replace(cfg.filter, method=method, rotate=rotate)
    system = System.from_config(dataclasses.replace(cfg, filter=f))
    kept = KeptDraws(system, 6, 60)
    calls = [([0, 1, 2], [0, 0, 5]), ([2, 2, 0, 3], [5, 6, 0, 5]), ([3, 3], [5, 5]), ([5, 4, 1], [59, 0, 0])]
    for paths, cycles in calls:
        paths, cycles = np.array(paths), np.array(cycles)
        D, Q = kept(paths, cycles)
        D0, Q0 = system.analysis_draws(paths, cycles)
        np.testing.assert_array_equal(D, D0)
        np.testing.assert_array_equal(Q, Q0)
    assert kept.drawn.sum() == (7 if kept.kind else 0)  # each distinct pair drawn once, only where kept


def compare_step(q, env_out, res):
    obs, reward, terminated, truncated, info = env_out
    assert res.terminated[q] == terminated and res.truncated[q] == truncated
    assert res.reward[q] == pytest.approx(reward, abs=1e-12)
    np.testing.assert_allclose(res.point_error[q], info["point_error"], rtol=0, atol=1e-12)
    for key in ("rmse_vs_enkf", "rmse_vs_online", "rmse_vs_truth", "enkf_rmse_vs_truth"):
        np.testing.assert_allclose(getattr(res, key)[q], info[key], rtol=0, atol=1e-12, equal_nan=True)
    assert res.path[q] == info["path"] and res.cycle[q] == info["cycle"]


@pytest.mark.parametrize("P", [1, 3, 5])
def test_batched_slots_equal_single_envs_through_halts_and_resets(smoke, P):
    """Random actions, large on some slots so that they halt; every ended slot starts the next
    path of a queue in both implementations; observations, rewards, errors and flags agree."""
    cfg, data, norm = smoke
    cfg = with_block(cfg, 15)  # several blocks, a path split across none
    n_paths = data["obs"].shape[0]
    loop = BatchedLoop(cfg, data, norm, P)
    envs = [AssimilationEnv(cfg, data, norm, [0]) for _ in range(P)]
    queue = iter([q % n_paths for q in range(1000)])
    start = [next(queue) for _ in range(P)]
    loop.reset(np.arange(P), start)
    for q, env in enumerate(envs):
        obs, _ = env.reset(options={"path": start[q]})
        np.testing.assert_array_equal(loop.observations()[q], obs)
    gen = np.random.default_rng(0)
    scale = np.where(np.arange(P) % 2 == 1, 2.5, 0.05)  # odd slots: violent analyses, halts
    halts = truncations = 0
    for t in range(150):
        actions = (gen.standard_normal((P, cfg.model.n)) * scale[:, None]).astype(np.float32)
        if t == 7:
            actions[0, 0] = np.nan  # a broken policy output halts that slot
        res = loop.step(actions)
        ended = []
        for q, env in enumerate(envs):
            out = env.step(actions[q])
            compare_step(q, out, res)
            if out[2] or out[3]:
                halts += out[2]
                truncations += out[3]
                ended.append(q)
            else:
                np.testing.assert_array_equal(loop.observations()[q], out[0])
        new = [next(queue) for _ in ended]
        loop.reset(np.array(ended, dtype=int), new)
        for q, p in zip(ended, new):
            obs, _ = envs[q].reset(options={"path": p})
            np.testing.assert_array_equal(loop.observations()[q], obs)
    assert halts >= 1 and truncations >= (1 if P > 0 else 0)


def test_inactive_slots_do_not_move(smoke):
    cfg, data, norm = smoke
    loop = BatchedLoop(cfg, data, norm, 3)
    loop.reset(np.arange(3), [0, 1, 2])
    before = loop.observations(), loop.cycle.copy(), loop.ensemble.copy()
    res = loop.step(np.zeros((3, cfg.model.n), np.float32), active=np.array([True, False, True]))
    assert list(loop.cycle) == [1, 0, 1]
    np.testing.assert_array_equal(loop.observations()[1], before[0][1])
    np.testing.assert_array_equal(loop.ensemble[1], before[2][1])
    assert np.isnan(res.reward[1]) and not np.isnan(res.reward[0])


def test_stored_analyses_through_the_batched_loop_reproduce_the_stored_run(smoke):
    """The oracle: every slot asks for the stored xa (float64 actions); the loop's forecasts
    are the stored forecasts and the reward is 1 on every cycle of every path."""
    cfg, data, norm = smoke
    P = data["obs"].shape[0]
    loop = BatchedLoop(cfg, data, norm, P)
    loop.reset(np.arange(P), np.arange(P))
    K = data["obs"].shape[1]
    for k in range(K):
        np.testing.assert_allclose(loop.xb, data["forecast_mean"][:, k], rtol=0, atol=1e-9)
        res = loop.step(loop.action_for(data["analysis_mean"][:, k], dtype=np.float64))
        assert not res.terminated.any()
        np.testing.assert_allclose(res.reward, 1.0, atol=1e-9)
    assert res.truncated.all()


GPU_SCRIPT = """
import dataclasses, sys
import numpy as np
from pathlib import Path
from test_env import load_smoke
from rl.envs.batched import BatchedLoop
cfg, data, norm = load_smoke(Path(sys.argv[1]))
runs = []
for device in ("cuda", "cpu"):
    c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))
    loop = BatchedLoop(c, data, norm, 3)
    assert loop.gpu == (device == "cuda")
    loop.reset(np.arange(3), [1, 2, 3])
    gen = np.random.default_rng(0)
    out = []
    for _ in range(3):
        res = loop.step(gen.normal(0, 0.05, (3, cfg.model.n)).astype(np.float32))
        out.append(np.concatenate([loop.observations().ravel(), res.reward, loop.ensemble.ravel()]))
    runs.append(np.concatenate(out))
print("max difference", np.abs(runs[0] - runs[1]).max())
"""


def test_the_gpu_forecast_runs_under_the_cuda_simulator_and_agrees_with_the_cpu(tmp_path_factory):
    """The batched loop with train.device cuda (enkf/cuda.py) under numba's CUDA simulator, against
    the CPU loop: the same observations, rewards and ensembles over 3 cycles."""
    import os
    import subprocess
    import sys
    from test_env import ROOT
    workdir = smoke_workdir(tmp_path_factory)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    out = subprocess.run([sys.executable, "-c", GPU_SCRIPT, str(workdir)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    diff = float(out.stdout.split("max difference")[1])
    assert diff < 1e-12
