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
