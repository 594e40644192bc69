"""Model right-hand sides and integrators, as numba kernels.

A model is a right-hand side dx/dt = f(x; params). The kernels work on a *column* block
X of shape (n, n_members): the innermost loop then runs over members, contiguous in memory,
which numba vectorises.
The public ensemble convention is DAPPER's, E of shape (n_members, n) (members are rows);
``step_ensemble`` converts. Model and integrator are chosen by small integer ids so that one
compiled kernel serves every experiment (numba freezes globals when it compiles: parameters
are always arguments).

    Lorenz-96, params [F]:                 dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F  (cyclic)
    Lorenz-63, params [sigma, rho, beta]:  dx/dt = sigma (y - x), dy/dt = x (rho - z) - y,
                                           dz/dt = x y - beta z
"""
from __future__ import annotations

import numpy as np
from numba import njit

LORENZ96, LORENZ63 = 0, 1
RK4, EULER = 0, 1
MODEL_IDS = {"lorenz96": LORENZ96, "lorenz63": LORENZ63}
INTEGRATOR_IDS = {"rk4": RK4, "euler": EULER}


@njit(cache=True)
def lorenz96_rhs(X, forcing, out):
    """out = f(X) for a column block X (n, m) of Lorenz-96 states."""
    n, m = X.shape
    for i in range(n):
        ip1 = i + 1 if i + 1 < n else 0
        im1 = i - 1 if i >= 1 else n - 1
        im2 = i - 2 if i >= 2 else i - 2 + n
        for j in range(m):
            out[i, j] = (X[ip1, j] - X[im2, j]) * X[im1, j] - X[i, j] + forcing


@njit(cache=True)
def lorenz63_rhs(X, sigma, rho, beta, out):
    """out = f(X) for a column block X (3, m) of Lorenz-63 states."""
    for j in range(X.shape[1]):
        out[0, j] = sigma * (X[1, j] - X[0, j])
        out[1, j] = X[0, j] * (rho - X[2, j]) - X[1, j]
        out[2, j] = X[0, j] * X[1, j] - beta * X[2, j]


@njit(cache=True)
def rhs(model_id, params, X, out):
    """out = f(X) for the model ``model_id`` with parameter vector ``params``."""
    if model_id == LORENZ96:
        lorenz96_rhs(X, params[0], out)
    else:
        lorenz63_rhs(X, params[0], params[1], params[2], out)


@njit(cache=True)
def _axpy(out, X, a, K):
    n, m = X.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = X[i, j] + a * K[i, j]


@njit(cache=True)
def integrate_columns(X, model_id, integrator_id, params, dt, n_steps, scratch):
    """Advance the column block X (n, m) by n_steps steps of size dt, in place.

    scratch: (5, n, m) work space, so that long loops allocate nothing.
    """
    n, m = X.shape
    k1, k2, k3, k4, tmp = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    for _ in range(n_steps):
        rhs(model_id, params, X, k1)
        if integrator_id == EULER:
            for i in range(n):
                for j in range(m):
                    X[i, j] += dt * k1[i, j]
            continue
        _axpy(tmp, X, 0.5 * dt, k1)
        rhs(model_id, params, tmp, k2)
        _axpy(tmp, X, 0.5 * dt, k2)
        rhs(model_id, params, tmp, k3)
        _axpy(tmp, X, dt, k3)
        rhs(model_id, params, tmp, k4)
        for i in range(n):
            for j in range(m):
                X[i, j] += dt / 6.0 * (k1[i, j] + 2.0 * k2[i, j] + 2.0 * k3[i, j] + k4[i, j])


@njit(cache=True)
def step_columns(X, model_id, integrator_id, params, dt, n_steps):
    """integrate_columns with its own scratch space."""
    scratch = np.empty((5, X.shape[0], X.shape[1]))
    integrate_columns(X, model_id, integrator_id, params, dt, n_steps, scratch)


def step_ensemble(E: np.ndarray, model_id: int, integrator_id: int, params: np.ndarray,
                  dt: float, n_steps: int) -> np.ndarray:
    """Advance every member of E (n_members, n) by n_steps model steps; returns a new array."""
    X = np.ascontiguousarray(E.T, dtype=np.float64)
    step_columns(X, model_id, integrator_id, params, dt, n_steps)
    return np.ascontiguousarray(X.T)


@njit(cache=True)
def spinup_run(x, model_id, integrator_id, params, dt, n_steps, record_at, thin, stats_from):
    """One long trajectory from x (n,).

    Returns
    -------
    recorded : (len(record_at), n) the states after steps record_at[j] (sorted ascending)
    thinned  : (n_steps // thin, n) the state after every thin-th step
    stats    : (4, n) per-variable min, max, mean, std over steps >= stats_from
    finite   : False if the trajectory became non-finite (the outputs are then incomplete)
    """
    n = x.shape[0]
    X = np.empty((n, 1))
    X[:, 0] = x
    scratch = np.empty((5, n, 1))
    recorded = np.full((record_at.shape[0], n), np.nan)
    thinned = np.full((n_steps // thin, n), np.nan)
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    shift = np.zeros(n)
    total = np.zeros(n)
    total_sq = np.zeros(n)
    count = 0
    j = 0
    stats = np.full((4, n), np.nan)
    for step in range(1, n_steps + 1):
        integrate_columns(X, model_id, integrator_id, params, dt, 1, scratch)
        if not np.isfinite(X[0, 0]):
            return recorded, thinned, stats, False
        if step % thin == 0:
            thinned[step // thin - 1] = X[:, 0]
        while j < record_at.shape[0] and record_at[j] == step:
            recorded[j] = X[:, 0]
            j += 1
        if step >= stats_from:
            if count == 0:
                shift[:] = X[:, 0]  # sums of (x - shift) keep the variance accurate over 1e6 steps
            for i in range(n):
                v = X[i, 0]
                lo[i] = min(lo[i], v)
                hi[i] = max(hi[i], v)
                total[i] += v - shift[i]
                total_sq[i] += (v - shift[i]) ** 2
            count += 1
    if not np.all(np.isfinite(X)):
        return recorded, thinned, stats, False
    stats[0] = lo
    stats[1] = hi
    for i in range(n):
        mean_shifted = total[i] / count
        stats[2, i] = shift[i] + mean_shifted
        stats[3, i] = np.sqrt(max(total_sq[i] / count - mean_shifted**2, 0.0))
    return recorded, thinned, stats, True


def params_of(model_cfg) -> np.ndarray:
    """Parameter vector for ``rhs`` from a ModelConfig."""
    if model_cfg.name == "lorenz96":
        return np.array([model_cfg.forcing])
    return np.array([model_cfg.sigma, model_cfg.rho, model_cfg.beta])
