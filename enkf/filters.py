"""Ensemble analysis updates, as numba kernels: functions of (ensemble, obs, H, R).

Notation (DAPPER's): E is the ensemble, shape (N, n) with the N members as rows; ``x = mean(E)``,
``A = E - x`` the anomalies; H selects the observed variables ``obs_index`` (shape (p,)); R = r I.
Y = A[:, obs_index] are the observation-space anomalies (N, p).

Perturbed-observation EnKF (Burgers et al. 1998, Evensen 2009):
    C   = Y^T Y + (N - 1) R                      (p, p)  -- (N-1) (H P^f H^T + R)
    K   = A^T Y C^{-1}                           (n, p)  -- the Kalman gain with P^f = A^T A / (N-1)
    E_a = E + (y + D - H E) K^T,   D ~ N(0, R)   (N, p) one perturbed observation per member
optionally centred, D <- (D - mean(D)) sqrt(N / (N - 1)) (DAPPER's mean0: centring alone would
leave the perturbations a variance of (N - 1) / N r).

Deterministic square-root filter (ETKF, Hunt et al. 2007; DAPPER's 'Sqrt' without rotation):
    P_w = (Y R^{-1} Y^T + (N - 1) I)^{-1}        (N, N)  ensemble-space analysis covariance
    w   = (y - H x) R^{-1} Y^T P_w              (N,)    mean update weights
    T   = sqrt((N - 1) P_w)                      (N, N)  symmetric square root
    x_a = x + w A,   A_a = Q T A
with Q = I, or a random orthogonal Q with Q 1 = 1 (DAPPER's "random rotation"), which keeps the
analysis covariance and mean and spreads the update over the members.

Local ETKF (LETKF, Hunt et al. 2007, "R-localisation"): the ETKF above, solved once per state
variable i of the ring, with every observation's R^{-1} multiplied by a taper of its ring distance
to i, d(i, j) = min(|i - j|, n - |i - j|):
    R_i^{-1} = diag(rho(d(i, j_k) / c)) / r,    rho: Gaspari & Cohn (1999) eq. 4.10
    x_a[i] = x[i] + w_i A[:, i],   A_a[:, i] = T_i A[:, i]
with w_i, T_i the ETKF's weights and transform from R_i. rho is 1 at distance 0, 0 from 2c on;
observations with rho = 0 are left out. The half-width c = 1.82 loc_radius is DAPPER's
convention for its `loc_rad` (dapper/tools/localization.py, taper 'GC'), under which the taper
is about exp(-1/2) at distance loc_radius; so loc_radius means what DAPPER's loc_rad means. An
infinite loc_radius gives rho = 1 everywhere: the ETKF. DAPPER also drops observations whose
taper is below 1e-3 and, in its sakov2008 setup, analyses the ring in batches of 2 points; here
every point is its own batch and only the exact zeros of rho are dropped.

Both return the analysis mean and analysis anomalies separately: the caller recentres the
anomalies on a mean of its choice (the RL environment recentres them on the agent's analysis).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def ensemble_mean(E):
    N, n = E.shape
    x = np.zeros(n)
    for j in range(N):
        for i in range(n):
            x[i] += E[j, i]
    return x / N


@njit(cache=True)
def ensemble_spread(E):
    """Per-variable standard deviation across members (ddof = 1), shape (n,)."""
    N = E.shape[0]
    A = E - ensemble_mean(E)
    return np.sqrt((A * A).sum(axis=0) / (N - 1))


@njit(cache=True)
def inflate(E, factor):
    """x + factor (E - x): multiplicative inflation of the anomalies."""
    x = ensemble_mean(E)
    return x + factor * (E - x)


@njit(cache=True)
def enkf_analysis(E, y, obs_index, r, perturbations, centre):
    """Perturbed-observation EnKF update.

    E : (N, n) forecast ensemble; y : (p,) observation; obs_index : (p,) observed variables;
    r : observation error variance (R = r I); perturbations : (N, p) standard normal draws,
    scaled here by sqrt(r); centre : subtract their member mean and rescale by sqrt(N / (N - 1))
    (DAPPER's ``mean0``), so they do not shift the analysis mean and still have variance r.
    Returns (x_a (n,), A_a (N, n)).
    """
    N, n = E.shape
    p = obs_index.shape[0]
    x = ensemble_mean(E)
    A = E - x
    Y = np.empty((N, p))
    D = np.sqrt(r) * perturbations
    if centre:
        D = (D - ensemble_mean(D)) * np.sqrt(N / (N - 1))
    innov = np.empty((N, p))  # y + d_j - H e_j, one row per member
    for j in range(N):
        for k in range(p):
            Y[j, k] = A[j, obs_index[k]]
            innov[j, k] = y[k] + D[j, k] - E[j, obs_index[k]]
    C = Y.T @ Y + (N - 1) * r * np.eye(p)
    Z = np.linalg.solve(C, innov.T)  # (p, N): C^{-1} (y + d_j - H e_j)
    Ea = E + Z.T @ (Y.T @ A)         # e_j + A^T Y C^{-1} (...), no (N, N) intermediate
    xa = ensemble_mean(Ea)
    return xa, Ea - xa


@njit(cache=True)
def etkf_analysis(E, y, obs_index, r, rotation):
    """Deterministic square-root (ETKF) update with the symmetric square root.

    rotation : (N, N) orthogonal matrix with rotation @ 1 = 1 (identity: no rotation).
    Returns (x_a (n,), A_a (N, n)).
    """
    N, n = E.shape
    p = obs_index.shape[0]
    x = ensemble_mean(E)
    A = E - x
    Y = np.empty((N, p))
    dy = np.empty(p)
    for k in range(p):
        dy[k] = y[k] - x[obs_index[k]]
        for j in range(N):
            Y[j, k] = A[j, obs_index[k]]
    # eigen-decomposition of the symmetric (N, N) matrix Y R^{-1} Y^T + (N-1) I
    vals, vecs = np.linalg.eigh(Y @ Y.T / r + (N - 1) * np.eye(N))
    Pw = (vecs / vals) @ vecs.T
    T = (vecs * np.sqrt((N - 1) / vals)) @ vecs.T
    w = (dy / r) @ Y.T @ Pw
    xa = x + w @ A
    return xa, rotation @ T @ A


def mean_preserving_rotation(gen: np.random.Generator, N: int) -> np.ndarray:
    """A random (Haar) orthogonal (N, N) matrix Q with Q 1 = 1 (so member means are kept).

    Q = V diag(1, O) V^T, V an orthonormal basis whose first vector is 1/sqrt(N), O a Haar
    orthogonal (N-1, N-1) matrix.
    """
    V, _ = np.linalg.qr(np.column_stack([np.ones(N), np.eye(N)[:, 1:]]))
    Z = gen.standard_normal((N - 1, N - 1))
    O, R = np.linalg.qr(Z)
    O = O * np.sign(np.diag(R))  # sign fix makes O Haar-distributed
    B = np.eye(N)
    B[1:, 1:] = O
    return V @ B @ V.T


@njit(cache=True)
def gaspari_cohn(z):
    """The Gaspari-Cohn (1999, eq. 4.10) fifth-order piecewise rational taper at z = d / c >= 0:
    1 at 0, 0 for z >= 2, compactly supported and positive definite on the line and the circle."""
    if z >= 2.0:
        return 0.0
    if z <= 1.0:
        return (((-0.25 * z + 0.5) * z + 0.625) * z - 5.0 / 3.0) * z * z + 1.0
    return ((((z / 12.0 - 0.5) * z + 0.625) * z + 5.0 / 3.0) * z - 5.0) * z + 4.0 - 2.0 / (3.0 * z)


GC_HALF_WIDTH = 1.82
"""c = GC_HALF_WIDTH * loc_radius: DAPPER's scaling of its loc_rad for the 'GC' taper (~sqrt(10/3))."""


@njit(cache=True)
def ring_taper(n, obs_index, loc_radius):
    """(n, p): rho(d(i, obs_index[k]) / c) for every state variable i of a ring of n points."""
    p = obs_index.shape[0]
    c = GC_HALF_WIDTH * loc_radius
    taper = np.empty((n, p))
    for i in range(n):
        for k in range(p):
            d = abs(i - obs_index[k])
            d = min(d, n - d)
            taper[i, k] = gaspari_cohn(d / c)
    return taper


@njit(cache=True)
def letkf_analysis(E, y, obs_index, r, loc_radius, rotation):
    """Local ETKF update on a ring of n = E.shape[1] points (see the module docstring).

    E : (N, n) forecast ensemble; y : (p,) observation of the variables obs_index; r : R = r I;
    loc_radius : DAPPER's loc_rad (GC half-width 1.82 loc_radius; np.inf: no localisation);
    rotation : (N, N) orthogonal, rotation @ 1 = 1, applied to the analysis anomalies.
    Returns (x_a (n,), A_a (N, n)).
    """
    N, n = E.shape
    p = obs_index.shape[0]
    x = ensemble_mean(E)
    A = E - x
    Y = np.empty((N, p))
    dy = np.empty(p)
    for k in range(p):
        dy[k] = y[k] - x[obs_index[k]]
        for j in range(N):
            Y[j, k] = A[j, obs_index[k]]
    taper = ring_taper(n, obs_index, loc_radius)
    xa = x.copy()
    Aa = A.copy()  # a point with no observation in reach keeps its forecast
    for i in range(n):
        m = 0
        for k in range(p):
            if taper[i, k] > 0.0:
                m += 1
        if m == 0:
            continue
        Yl = np.empty((N, m))   # Y R_i^{-1/2} on the local observations
        dyl = np.empty(m)       # R_i^{-1/2} (y - H x)
        m = 0
        for k in range(p):
            if taper[i, k] > 0.0:
                s = np.sqrt(taper[i, k] / r)
                dyl[m] = s * dy[k]
                for j in range(N):
                    Yl[j, m] = s * Y[j, k]
                m += 1
        vals, vecs = np.linalg.eigh(Yl @ Yl.T + (N - 1) * np.eye(N))
        Pw = (vecs / vals) @ vecs.T
        T = (vecs * np.sqrt((N - 1) / vals)) @ vecs.T
        w = Pw @ (Yl @ dyl)
        Ai = A[:, i].copy()
        xa[i] = x[i] + w @ Ai
        Aa[:, i] = T @ Ai
    return xa, rotation @ Aa
