"""Analysis updates of enkf/filters.py against the Kalman filter in the linear-Gaussian case."""
from __future__ import annotations

import numpy as np
import pytest

from enkf.filters import (GC_HALF_WIDTH, enkf_analysis, ensemble_mean, ensemble_spread, etkf_analysis,
                          gaspari_cohn, inflate, letkf_analysis, mean_preserving_rotation, ring_taper)

N_STATE = 5
R_VAR = 0.5


# ---- helpers -------------------------------------------------------------------------------------
def linear_model(n=N_STATE, seed=0):
    """A fixed, mildly unstable linear model M (spectral radius ~1.05) and a prior (x0, P0)."""
    g = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(g.standard_normal((n, n)))
    M = Q @ np.diag(np.linspace(1.05, 0.8, n)) @ Q.T + 0.1 * g.standard_normal((n, n))
    L = np.tril(g.standard_normal((n, n))) + 2 * np.eye(n)
    return M, g.standard_normal(n), L @ L.T


def ensemble_with_moments(x, P, N, g):
    """(N, n) ensemble whose sample mean is x and sample covariance (ddof 1) is P, exactly:
    x + sqrt(N-1) Q L^T with Q orthonormal columns orthogonal to 1 and P = L L^T."""
    n = x.shape[0]
    Z = g.standard_normal((N, n))
    Z -= Z.mean(axis=0)
    Q, _ = np.linalg.qr(Z)
    return x + np.sqrt(N - 1) * Q @ np.linalg.cholesky(P).T


def sample_cov(A):
    return A.T @ A / (A.shape[0] - 1)


def kf_analysis(xf, Pf, y, obs_index, r):
    """The Kalman filter analysis with H = rows obs_index of I, R = r I."""
    n = xf.shape[0]
    H = np.eye(n)[obs_index]
    S = H @ Pf @ H.T + r * np.eye(len(obs_index))
    K = Pf @ H.T @ np.linalg.inv(S)
    return xf + K @ (y - H @ xf), (np.eye(n) - K @ H) @ Pf, K


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ---- ETKF = KF -------------------------------------------------------------------------------------
@pytest.mark.parametrize("obs_index", [[0, 2, 4], [0, 1, 2, 3, 4], [3]], ids=["subset", "all", "one"])
@pytest.mark.parametrize("N", [6, 9])
@pytest.mark.parametrize("rotate", [False, True], ids=["identity", "rotation"])
def test_etkf_equals_kalman_filter_linear_gaussian(obs_index, N, rotate):
    """Linear model, no model noise, N > n: ETKF analysis mean and sample covariance equal the
    Kalman filter's (to 1e-8) for 20 forecast/analysis cycles, with or without a rotation;
    the analysis anomalies have zero member mean."""
    obs_index = np.array(obs_index, dtype=np.int64)
    M, x, P = linear_model()
    g = np.random.default_rng(N + len(obs_index))
    E = ensemble_with_moments(x, P, N, g)
    np.testing.assert_allclose(ensemble_mean(E), x, atol=1e-12)
    np.testing.assert_allclose(sample_cov(E - x), P, atol=1e-12)
    truth = x + np.linalg.cholesky(P) @ g.standard_normal(N_STATE)
    for k in range(20):
        # forecast: E @ M^T maps the sample mean to M x and the sample covariance to M P M^T
        E = E @ M.T
        x, P = M @ x, M @ P @ M.T
        truth = M @ truth
        y = truth[obs_index] + np.sqrt(R_VAR) * g.standard_normal(len(obs_index))
        x, P, _ = kf_analysis(x, P, y, obs_index, R_VAR)
        Q = mean_preserving_rotation(g, N) if rotate else np.eye(N)
        xa, Aa = etkf_analysis(E, y, obs_index, R_VAR, Q)
        scale = max(1.0, np.abs(x).max())
        assert np.abs(xa - x).max() < 1e-8 * scale, k
        assert np.abs(sample_cov(Aa) - P).max() < 1e-8 * max(1.0, np.abs(P).max()), k
        np.testing.assert_allclose(Aa.mean(axis=0), 0.0, atol=1e-10)
        E = xa + Aa
    assert rel(P, M @ P @ M.T) > 1e-3  # the covariance is not trivially stationary


def test_etkf_rotation_changes_members_not_moments():
    """A mean-preserving rotation Q gives anomalies Q T A: different members, same mean and
    same sample covariance as no rotation."""
    g = np.random.default_rng(5)
    E = 3 + g.standard_normal((12, 7))
    obs_index = np.array([0, 3, 6], dtype=np.int64)
    y = g.standard_normal(3)
    x1, A1 = etkf_analysis(E, y, obs_index, 0.3, np.eye(12))
    Q = mean_preserving_rotation(g, 12)
    x2, A2 = etkf_analysis(E, y, obs_index, 0.3, Q)
    assert np.array_equal(x1, x2)
    np.testing.assert_allclose(A2, Q @ A1, atol=1e-12)
    np.testing.assert_allclose(sample_cov(A2), sample_cov(A1), atol=1e-12)
    assert np.abs(A2 - A1).max() > 0.1


# ---- perturbed-observation EnKF ----------------------------------------------------------------
def test_enkf_with_zero_perturbations_is_kf_mean_and_joseph_without_R():
    """With D = 0 and an exact prior the analysis mean is the KF mean, and the sample covariance
    is (I - KH) Pf (I - KH)^T (the Joseph form minus its K R K^T term)."""
    M, x, P = linear_model()
    g = np.random.default_rng(7)
    obs_index = np.array([1, 2, 4], dtype=np.int64)
    E = ensemble_with_moments(x, P, 11, g)
    y = g.standard_normal(3)
    xa_kf, _, K = kf_analysis(x, P, y, obs_index, R_VAR)
    xa, Aa = enkf_analysis(E, y, obs_index, R_VAR, np.zeros((11, 3)), False)
    np.testing.assert_allclose(xa, xa_kf, atol=1e-10)
    IKH = np.eye(N_STATE) - K @ np.eye(N_STATE)[obs_index]
    np.testing.assert_allclose(sample_cov(Aa), IKH @ P @ IKH.T, atol=1e-10)


@pytest.mark.parametrize("centre", [False, True])
def test_enkf_mean_shift_is_gain_times_mean_perturbation(centre):
    """Exact prior: x_a = x_KF + K sqrt(r) mean(D) without centring; with centring the
    perturbations have zero mean, so x_a = x_KF exactly."""
    M, x, P = linear_model()
    g = np.random.default_rng(8)
    obs_index = np.array([0, 4], dtype=np.int64)
    N = 15
    E = ensemble_with_moments(x, P, N, g)
    y = g.standard_normal(2)
    pert = 1.0 + g.standard_normal((N, 2))  # a large mean, so not centring would show
    xa_kf, _, K = kf_analysis(x, P, y, obs_index, R_VAR)
    xa, Aa = enkf_analysis(E, y, obs_index, R_VAR, pert, centre)
    shift = 0.0 if centre else K @ (np.sqrt(R_VAR) * pert.mean(axis=0))
    np.testing.assert_allclose(xa, xa_kf + shift, atol=1e-10)
    if not centre:
        assert np.abs(shift).max() > 0.1
    np.testing.assert_allclose(Aa.mean(axis=0), 0.0, atol=1e-10)


@pytest.mark.parametrize("centre", [False, True])
def test_enkf_step_equals_the_formula_written_out(centre):
    """One analysis step against numpy: P^f = A^T A / (N-1), K = P^f H^T (H P^f H^T + R)^{-1},
    D = sqrt(r) Z, centred as DAPPER's mean0 does (D - mean(D)) sqrt(N / (N-1)),
    E_a = E + (y + D - H E) K^T."""
    g = np.random.default_rng(11)
    N, n = 6, N_STATE
    obs_index = np.array([0, 2, 3], dtype=np.int64)
    E = 2.0 + g.standard_normal((N, n))
    y = g.standard_normal(3)
    Z = 0.7 + g.standard_normal((N, 3))
    H = np.eye(n)[obs_index]
    A = E - E.mean(axis=0)
    Pf = A.T @ A / (N - 1)
    K = Pf @ H.T @ np.linalg.inv(H @ Pf @ H.T + R_VAR * np.eye(3))
    D = np.sqrt(R_VAR) * Z
    if centre:
        raw = D
        D = (raw - raw.mean(axis=0)) * np.sqrt(N / (N - 1))
        # mean0's point: each centred perturbation has the unbiased variance of the raw ones
        # (E[d_j^2] = r), where centring alone would give (N - 1) / N r
        np.testing.assert_allclose((D ** 2).mean(axis=0), raw.var(axis=0, ddof=1))
    Ea = E + (y + D - E @ H.T) @ K.T
    xa, Aa = enkf_analysis(E, y, obs_index, R_VAR, Z, centre)
    np.testing.assert_allclose(xa, Ea.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(Aa, Ea - Ea.mean(axis=0), atol=1e-12)


def test_enkf_approaches_kalman_filter_as_ensemble_grows():
    """One perturbed-obs analysis from an exact prior: the mean and covariance errors against
    the KF, averaged over 3 seeds, shrink as N goes 10 -> 100 -> 1000 -> 10000 (like 1/sqrt(N));
    at N = 10000 the covariance is within 5% and the mean within 2% of the prior spread."""
    M, x, P = linear_model()
    obs_index = np.array([0, 2, 3], dtype=np.int64)
    y = np.array([0.5, -1.0, 2.0])
    xa_kf, Pa_kf, _ = kf_analysis(x, P, y, obs_index, R_VAR)
    mean_err, cov_err = [], []
    for N in (10, 100, 1000, 10000):
        me, ce = [], []
        for seed in range(3):
            g = np.random.default_rng([N, seed])
            E = ensemble_with_moments(x, P, N, g)
            xa, Aa = enkf_analysis(E, y, obs_index, R_VAR, g.standard_normal((N, 3)), False)
            me.append(np.linalg.norm(xa - xa_kf) / np.sqrt(np.trace(P)))
            ce.append(rel(sample_cov(Aa), Pa_kf))
        mean_err.append(np.mean(me))
        cov_err.append(np.mean(ce))
    assert all(a > b for a, b in zip(mean_err, mean_err[1:])), mean_err
    assert all(a > b for a, b in zip(cov_err, cov_err[1:])), cov_err
    assert cov_err[0] > 0.1 and cov_err[-1] < 0.05, cov_err
    assert mean_err[-1] < 0.02, mean_err


# ---- rotation, inflation, spread -------------------------------------------------------------
@pytest.mark.parametrize("N", [2, 3, 10, 40])
def test_mean_preserving_rotation_orthogonal_and_fixes_ones(N):
    """Q Q^T = I and Q 1 = 1 (so Q A keeps zero-mean anomalies zero-mean); Q is not I."""
    g = np.random.default_rng(N)
    Q = mean_preserving_rotation(g, N)
    np.testing.assert_allclose(Q @ Q.T, np.eye(N), atol=1e-12)
    np.testing.assert_allclose(Q @ np.ones(N), np.ones(N), atol=1e-12)
    np.testing.assert_allclose(np.ones(N) @ Q, np.ones(N), atol=1e-12)
    if N > 2:
        assert np.abs(Q - np.eye(N)).max() > 1e-3
    Q2 = mean_preserving_rotation(np.random.default_rng(N), N)
    assert np.array_equal(Q, Q2)  # a function of the generator's state only


@pytest.mark.parametrize("factor", [1.0, 1.06, 0.5, 5.0])
def test_inflate_keeps_mean_and_scales_anomalies(factor):
    """inflate(E, a) = x + a (E - x): same member mean, anomalies times a, spread times a."""
    E = 2.0 + np.random.default_rng(9).standard_normal((20, 8))
    x = E.mean(axis=0)
    Ei = inflate(E, factor)
    np.testing.assert_allclose(Ei.mean(axis=0), x, atol=1e-12)
    np.testing.assert_allclose(Ei - Ei.mean(axis=0), factor * (E - x), atol=1e-12)
    np.testing.assert_allclose(ensemble_spread(Ei), factor * E.std(axis=0, ddof=1), rtol=1e-12)


def test_ensemble_mean_and_spread_match_numpy():
    """ensemble_mean = mean over members (rows); ensemble_spread = std over members, ddof 1."""
    E = np.random.default_rng(10).standard_normal((7, 5)) * 3 + 1
    np.testing.assert_allclose(ensemble_mean(E), E.mean(axis=0), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ensemble_spread(E), E.std(axis=0, ddof=1), rtol=1e-13)


# ---- LETKF ----------------------------------------------------------------------------------------
def gc_reference(z):
    """Gaspari & Cohn (1999) eq. 4.10 written out, with c = 1 (z = |d| / c)."""
    z = abs(z)
    if z <= 1:
        return -z**5 / 4 + z**4 / 2 + 5 * z**3 / 8 - 5 * z**2 / 3 + 1
    if z <= 2:
        return z**5 / 12 - z**4 / 2 + 5 * z**3 / 8 + 5 * z**2 / 3 - 5 * z + 4 - 2 / (3 * z)
    return 0.0


def test_gaspari_cohn_is_the_published_function():
    """The kernel's Horner form equals eq. 4.10 term by term; 1 at 0, continuous at 1, 0 from 2 on,
    decreasing; under DAPPER's scaling (c = 1.82 loc_radius) it is about exp(-1/2) at loc_radius."""
    zs = np.linspace(0, 2.5, 251)
    got = np.array([gaspari_cohn(z) for z in zs])
    np.testing.assert_allclose(got, [gc_reference(z) for z in zs], atol=1e-13)
    assert got[0] == 1.0 and np.all(got[zs >= 2] == 0.0) and np.all(np.diff(got[zs < 2]) < 0)
    assert abs(gaspari_cohn(1 - 1e-12) - gaspari_cohn(1 + 1e-12)) < 1e-10
    assert abs(gaspari_cohn(1 / GC_HALF_WIDTH) - np.exp(-0.5)) < 0.03


def test_ring_taper_uses_the_ring_distance():
    """On a ring of 10 the distance from point 0 to point 9 is 1 (not 9); the taper is symmetric
    in i - j and zero beyond 2c = 3.64 loc_radius."""
    obs_index = np.arange(10, dtype=np.int64)
    taper = ring_taper(10, obs_index, 1.0)
    z = np.array([min(k, 10 - k) for k in range(10)]) / GC_HALF_WIDTH
    np.testing.assert_allclose(taper[0], [gc_reference(v) for v in z], atol=1e-13)
    np.testing.assert_allclose(taper[3], np.roll(taper[0], 3), atol=1e-13)
    assert taper[0, 9] == taper[0, 1] > 0.5 and taper[0, 4] == 0.0


def l96_like_ensemble(N, n, seed):
    g = np.random.default_rng(seed)
    return 2.0 + 3.0 * g.standard_normal(n) + g.standard_normal((N, n)), g


@pytest.mark.parametrize("obs_index", [np.arange(12), np.arange(0, 12, 3)], ids=["all", "every3"])
@pytest.mark.parametrize("N", [5, 15])
@pytest.mark.parametrize("rotate", [False, True], ids=["identity", "rotation"])
def test_letkf_with_infinite_radius_is_the_etkf(obs_index, N, rotate):
    """loc_radius = inf tapers nothing: every local analysis is the global ETKF's, so the LETKF's
    mean and anomalies equal the ETKF's (to 1e-10), with or without a rotation."""
    obs_index = np.asarray(obs_index, dtype=np.int64)
    E, g = l96_like_ensemble(N, 12, N)
    y = E.mean(axis=0)[obs_index] + g.standard_normal(len(obs_index))
    Q = mean_preserving_rotation(g, N) if rotate else np.eye(N)
    xa, Aa = letkf_analysis(E, y, obs_index, 0.7, np.inf, Q)
    xe, Ae = etkf_analysis(E, y, obs_index, 0.7, Q)
    np.testing.assert_allclose(xa, xe, atol=1e-10, rtol=0)
    np.testing.assert_allclose(Aa, Ae, atol=1e-10, rtol=0)
    assert np.abs(xa - E.mean(axis=0)).max() > 0.1  # the update is not trivial


def test_letkf_local_analysis_is_the_kalman_filter_with_tapered_R():
    """N > n, an exact prior: the local analysis at each point i is the Kalman filter's with
    R_i = diag(r / rho_ik) on the observations in reach (rho_ik > 0), at i: the analysis mean
    x_a[i] and the variance of A_a[:, i] (to 1e-9). A finite radius changes the analysis."""
    n, N, r, radius = 9, 14, 0.5, 1.0
    obs_index = np.array([0, 1, 3, 4, 6, 8], dtype=np.int64)
    g = np.random.default_rng(3)
    L = np.tril(g.standard_normal((n, n))) + 2 * np.eye(n)
    P = L @ L.T
    x = g.standard_normal(n)
    E = ensemble_with_moments(x, P, N, g)
    y = g.standard_normal(len(obs_index))
    xa, Aa = letkf_analysis(E, y, obs_index, r, radius, np.eye(N))
    taper = ring_taper(n, obs_index, radius)
    for i in range(n):
        near = taper[i] > 0
        assert 0 < near.sum() < len(obs_index)  # the radius matters at every point
        H = np.eye(n)[obs_index[near]]
        S = H @ P @ H.T + np.diag(r / taper[i, near])
        K = P @ H.T @ np.linalg.inv(S)
        assert abs(xa[i] - (x + K @ (y[near] - H @ x))[i]) < 1e-9
        Pa = (np.eye(n) - K @ H) @ P
        assert abs(Aa[:, i] @ Aa[:, i] / (N - 1) - Pa[i, i]) < 1e-9 * P[i, i]
    xe, _ = etkf_analysis(E, y, obs_index, r, np.eye(N))
    assert np.abs(xa - xe).max() > 1e-2


def test_letkf_ignores_observations_out_of_reach():
    """An observation further than 2c = 3.64 loc_radius from every point of a stretch leaves that
    stretch untouched; a point with no observation in reach keeps its forecast."""
    N, n = 8, 20
    obs_index = np.array([0, 10], dtype=np.int64)
    E, g = l96_like_ensemble(N, n, 4)
    y = g.standard_normal(2)
    xa, Aa = letkf_analysis(E, y, obs_index, 1.0, 1.0, np.eye(N))
    y2 = y.copy()
    y2[1] += 5.0
    xb, Ab = letkf_analysis(E, y2, obs_index, 1.0, 1.0, np.eye(N))
    far = [i for i in range(n) if min(abs(i - 10), n - abs(i - 10)) >= 2 * GC_HALF_WIDTH]
    np.testing.assert_array_equal(xa[far], xb[far])
    assert np.abs(xa[10] - xb[10]) > 0.1
    x, A = E.mean(axis=0), E - E.mean(axis=0)
    for i in (5, 15):  # 5 points from both observations: out of reach
        assert xa[i] == x[i] and np.array_equal(Aa[:, i], A[:, i])


def test_system_dispatches_letkf_with_the_configured_radius_and_inflation():
    """System.analyse with filter.method letkf is letkf_analysis with filter.loc_radius, its
    anomalies times the analysis-stage inflation; with a radius far beyond the ring, the ETKF's."""
    import dataclasses
    from conftest import CONFIG
    from enkf.config import load_config
    from enkf.system import System
    cfg = load_config(CONFIG, "L96_sakov2008")
    E, g = l96_like_ensemble(10, cfg.model.n, 6)
    y = E.mean(axis=0) + g.standard_normal(cfg.model.n)

    def analyse(method, loc_radius):
        f = dataclasses.replace(cfg.filter, method=method, n_ens=10, loc_radius=loc_radius,
                                inflation=1.3, inflation_stage="analysis", rotate=False)
        return System.from_config(dataclasses.replace(cfg, filter=f)).analyse(E, y, 0, 0)

    xa, Aa = analyse("letkf", 4.0)
    xk, Ak = letkf_analysis(E, y, np.arange(cfg.model.n), cfg.obs.error_var, 4.0, np.eye(10))
    np.testing.assert_array_equal(xa, xk)
    np.testing.assert_allclose(Aa, 1.3 * Ak, rtol=1e-14)
    xe, Ae = analyse("etkf", None)
    assert np.abs(xa - xe).max() > 1e-2
    xl, Al = analyse("letkf", 1e12)
    np.testing.assert_allclose(xl, xe, atol=1e-10, rtol=0)
    np.testing.assert_allclose(Al, Ae, atol=1e-10, rtol=0)
