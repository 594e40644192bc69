"""The model kernels of enkf/models.py: right-hand sides, integrator order, bitwise layout
independence, and the spin-up trajectory's statistics."""
from __future__ import annotations

import numpy as np
import pytest

from rl.config import load_config
from enkf.models import (EULER, LORENZ63, LORENZ96, RK4, lorenz63_rhs, lorenz96_rhs, rhs,
                         spinup_run, step_columns, step_ensemble)
from enkf.precompute import run_path
from enkf.system import System

from conftest import CONFIG

L96_PARAMS = np.array([8.0])
L63_PARAMS = np.array([10.0, 28.0, 8.0 / 3.0])


# ---- plain numpy references (column layout: variables on axis 0, members on axis 1) --------
def l96_numpy(X, F):
    return (np.roll(X, -1, axis=0) - np.roll(X, 2, axis=0)) * np.roll(X, 1, axis=0) - X + F


def l63_numpy(X, sigma, rho, beta):
    x, y, z = X
    return np.array([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])


def on_attractor(model_id, m, seed=0):
    """m column states on (near) the attractor: a random start integrated for a while."""
    g = np.random.default_rng(seed)
    if model_id == LORENZ96:
        X = 8.0 + g.standard_normal((40, m))
        step_columns(X, LORENZ96, RK4, L96_PARAMS, 0.01, 1000)
    else:
        X = np.array([[1.0], [1.0], [20.0]]) + g.standard_normal((3, m))
        step_columns(X, LORENZ63, RK4, L63_PARAMS, 0.01, 1000)
    return np.ascontiguousarray(X)


def integrate(X0, model_id, integrator_id, params, dt, T):
    X = X0.copy()
    n_steps = int(round(T / dt))
    assert abs(n_steps * dt - T) < 1e-12
    step_columns(X, model_id, integrator_id, params, dt, n_steps)
    return X


# ---- right-hand sides ------------------------------------------------------------------------
def test_lorenz96_rhs_matches_numpy_roll_formula():
    """f_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, cyclic, against np.roll, for n = 40 and 5."""
    g = np.random.default_rng(1)
    for n in (40, 5, 4):
        X = 3.0 * g.standard_normal((n, 7))
        out = np.empty_like(X)
        lorenz96_rhs(X, 8.0, out)
        np.testing.assert_allclose(out, l96_numpy(X, 8.0), rtol=1e-14, atol=1e-13)
        out2 = np.empty_like(X)
        rhs(LORENZ96, L96_PARAMS, X, out2)
        assert np.array_equal(out, out2)


def test_lorenz96_rhs_fixed_point_and_energy_budget():
    """x = F 1 is a fixed point; the advection term conserves energy, so x.f = -|x|^2 + F sum x."""
    out = np.empty((40, 1))
    lorenz96_rhs(np.full((40, 1), 8.0), 8.0, out)
    assert np.all(out == 0.0)
    X = np.random.default_rng(2).standard_normal((40, 5)) * 4
    lorenz96_rhs(X, 8.0, out := np.empty_like(X))
    energy_rate = (X * out).sum(axis=0)
    np.testing.assert_allclose(energy_rate, -(X * X).sum(axis=0) + 8.0 * X.sum(axis=0),
                               rtol=1e-12, atol=1e-10)


def test_lorenz63_rhs_matches_numpy_formula_and_fixed_points():
    """dx = sigma(y-x), dy = x(rho-z)-y, dz = xy - beta z; f = 0 at the three fixed points."""
    X = np.random.default_rng(3).standard_normal((3, 6)) * 10
    out = np.empty_like(X)
    lorenz63_rhs(X, 10.0, 28.0, 8.0 / 3.0, out)
    np.testing.assert_allclose(out, l63_numpy(X, 10.0, 28.0, 8.0 / 3.0), rtol=1e-14, atol=1e-13)
    out2 = np.empty_like(X)
    rhs(LORENZ63, L63_PARAMS, X, out2)
    assert np.array_equal(out, out2)
    c = np.sqrt(8.0 / 3.0 * 27.0)
    fixed = np.array([[0.0, c, -c], [0.0, c, -c], [0.0, 27.0, 27.0]])
    lorenz63_rhs(fixed, 10.0, 28.0, 8.0 / 3.0, out := np.empty_like(fixed))
    np.testing.assert_allclose(out, 0.0, atol=1e-12)


@pytest.mark.parametrize("model_id, params, f", [(LORENZ96, L96_PARAMS, lambda X: l96_numpy(X, 8.0)),
                                                 (LORENZ63, L63_PARAMS,
                                                  lambda X: l63_numpy(X, *L63_PARAMS))])
def test_euler_step_is_x_plus_dt_f(model_id, params, f):
    """One (and three) explicit Euler steps equal x + dt f(x) written in numpy, to 1e-14."""
    X = on_attractor(model_id, 4)
    dt = 0.01
    Y = X.copy()
    step_columns(Y, model_id, EULER, params, dt, 1)
    np.testing.assert_allclose(Y, X + dt * f(X), rtol=1e-14, atol=1e-14)
    Z = X.copy()
    step_columns(Z, model_id, EULER, params, dt, 3)
    ref = X
    for _ in range(3):
        ref = ref + dt * f(ref)
    np.testing.assert_allclose(Z, ref, rtol=1e-14, atol=1e-14)


def test_rk4_step_matches_numpy_rk4():
    """One classical RK4 step, k1..k4 written in numpy, equals the kernel's step."""
    X = on_attractor(LORENZ96, 3)
    dt = 0.05
    f = lambda Z: l96_numpy(Z, 8.0)  # noqa: E731
    k1 = f(X)
    k2 = f(X + dt / 2 * k1)
    k3 = f(X + dt / 2 * k2)
    k4 = f(X + dt * k3)
    ref = X + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    Y = X.copy()
    step_columns(Y, LORENZ96, RK4, L96_PARAMS, dt, 1)
    np.testing.assert_allclose(Y, ref, rtol=1e-14, atol=1e-13)


# ---- order of accuracy -------------------------------------------------------------------------
@pytest.mark.parametrize("model_id, params, dt", [(LORENZ63, L63_PARAMS, 0.01),
                                                  (LORENZ96, L96_PARAMS, 0.025)],
                         ids=["lorenz63", "lorenz96"])
def test_rk4_is_fourth_order(model_id, params, dt):
    """Global error at T = 0.5 against a dt/64 run: halving dt divides it by ~2^4 = 16."""
    T = 0.5
    X0 = on_attractor(model_id, 3)
    ref = integrate(X0, model_id, RK4, params, dt / 64, T)
    errs = [np.abs(integrate(X0, model_id, RK4, params, h, T) - ref).max()
            for h in (dt, dt / 2, dt / 4)]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert errs[2] > 1e-12, errs  # still well above round-off, so the ratios mean something
    for r in ratios:
        assert 12 < r < 20, (errs, ratios)


@pytest.mark.parametrize("model_id, params, dt", [(LORENZ63, L63_PARAMS, 1e-3),
                                                  (LORENZ96, L96_PARAMS, 2e-3)],
                         ids=["lorenz63", "lorenz96"])
def test_euler_is_first_order(model_id, params, dt):
    """Euler's global error at T = 0.5 (against a fine RK4 run) halves when dt halves."""
    T = 0.5
    X0 = on_attractor(model_id, 3)
    ref = integrate(X0, model_id, RK4, params, dt / 8, T)
    errs = [np.abs(integrate(X0, model_id, EULER, params, h, T) - ref).max()
            for h in (dt, dt / 2, dt / 4)]
    for r in (errs[0] / errs[1], errs[1] / errs[2]):
        assert 1.8 < r < 2.2, errs


# ---- bitwise independence of the column layout -------------------------------------------------
@pytest.mark.parametrize("model_id, params, n, m, dt, n_steps", [
    (LORENZ96, np.array([5.0]), 20, 20, 2.5e-3, 400),
    (LORENZ96, np.array([5.0]), 17, 20, 2.5e-3, 400),
    (LORENZ96, L96_PARAMS, 40, 40, 0.05, 3),
    (LORENZ96, L96_PARAMS, 40, 24, 0.05, 3),
    (LORENZ63, L63_PARAMS, 3, 10, 0.01, 25),
    (LORENZ63, L63_PARAMS, 3, 7, 0.01, 25),
], ids=["l96n20m20", "l96n17m20", "l96n40m40", "l96n40m24", "l63m10", "l63m7"])
@pytest.mark.parametrize("integrator_id", [RK4, EULER], ids=["rk4", "euler"])
def test_step_columns_bitwise_independent_of_block_width(model_id, params, n, m, dt, n_steps,
                                                         integrator_id):
    """[truth | members] stepped as m+1 columns gives the same bits for the members as the m
    members stepped alone (precompute steps both together, the RL env only the members)."""
    g = np.random.default_rng(n * 100 + m)
    base = 5.0 if model_id == LORENZ96 else 10.0
    X = base + g.standard_normal((n, m + 1))
    alone = np.ascontiguousarray(X[:, 1:])
    single = np.ascontiguousarray(X[:, :1])
    E = np.ascontiguousarray(X.T)
    step_columns(X, model_id, integrator_id, params, dt, n_steps)
    step_columns(alone, model_id, integrator_id, params, dt, n_steps)
    step_columns(single, model_id, integrator_id, params, dt, n_steps)
    assert not np.array_equal(X[:, 1:], E[1:].T)  # it did move
    assert np.array_equal(X[:, 1:], alone)
    # one column alone, and the row-layout wrapper (members as rows), give the same bits too
    assert np.array_equal(X[:, :1], single)
    assert np.array_equal(step_ensemble(E, model_id, integrator_id, params, dt, n_steps), X.T)


@pytest.mark.parametrize("experiment", ["smoke", "L96_sakov2008"])
def test_system_forecast_replays_precompute_bitwise(experiment):
    """Re-forecasting a stored analysis ensemble with System.forecast (as the RL env does) and
    re-analysing it reproduces the reference run's next forecast and analysis bit for bit."""
    cfg = load_config(CONFIG, experiment)
    system = System.from_config(cfg)
    x0 = 5.0 + np.random.default_rng(0).standard_normal(cfg.model.n)
    out = run_path(system, x0, 3, 12, store_ensembles=True)
    assert np.array_equal(system.forecast(out["initial_ensemble"]), out["forecast_ensemble"][0])
    for k in range(11):
        Ef = system.forecast(out["analysis_ensemble"][k])
        assert np.array_equal(Ef, out["forecast_ensemble"][k + 1])
        xa, Aa = system.analyse(Ef, out["obs"][k + 1], 3, k + 1)
        assert np.array_equal(xa, out["analysis_mean"][k + 1])
        assert np.array_equal(xa + Aa, out["analysis_ensemble"][k + 1])


# ---- spin-up run ---------------------------------------------------------------------------------
def test_spinup_run_statistics_and_records_match_numpy():
    """With thin = 1 the thinned output is the whole trajectory; min/max/mean/std (ddof 0) over
    steps >= stats_from equal numpy's on it; recorded states equal the trajectory there."""
    n_steps, stats_from = 3000, 1001
    x0 = 0.01 * np.random.default_rng(4).standard_normal(8)
    params = np.array([5.0])
    record_at = np.array([1, 999, 1000, 1001, 2500, 3000], dtype=np.int64)
    recorded, thinned, stats, finite = spinup_run(x0.copy(), LORENZ96, RK4, params, 0.01, n_steps,
                                                  record_at, 1, stats_from)
    assert finite
    assert thinned.shape == (n_steps, 8) and np.all(np.isfinite(thinned))
    # the trajectory is the kernel's own stepping, step by step
    for s in (1, 2, 1000, 3000):
        X = x0[:, None].copy()
        step_columns(X, LORENZ96, RK4, params, 0.01, s)
        assert np.array_equal(thinned[s - 1], X[:, 0])
    assert np.array_equal(recorded, thinned[record_at - 1])
    tail = thinned[stats_from - 1:]
    assert np.array_equal(stats[0], tail.min(axis=0))
    assert np.array_equal(stats[1], tail.max(axis=0))
    np.testing.assert_allclose(stats[2], tail.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats[3], tail.std(axis=0), rtol=1e-10, atol=1e-12)
    assert np.all(stats[3] > 0.1)  # a real, moving trajectory (n = 8, F = 5 is chaotic)


def test_spinup_run_thinning_and_nonfinite_flag():
    """thin = k keeps the state after every k-th step; an exploding run reports finite=False."""
    x0 = np.array([1.0, 1.0, 20.0])
    rec = np.array([10, 20], dtype=np.int64)
    _, full, _, ok1 = spinup_run(x0.copy(), LORENZ63, RK4, L63_PARAMS, 0.01, 100, rec, 1, 1)
    _, thin5, _, ok2 = spinup_run(x0.copy(), LORENZ63, RK4, L63_PARAMS, 0.01, 100, rec, 5, 1)
    assert ok1 and ok2
    assert np.array_equal(thin5, full[4::5])
    _, _, stats, ok = spinup_run(x0.copy(), LORENZ63, EULER, L63_PARAMS, 1.0, 100, rec, 1, 1)
    assert not ok and np.all(np.isnan(stats))
