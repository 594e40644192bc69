"""Many ensembles at once: the forecast and the analysis of P paths as parallel numba kernels.

The closed loop of the RL environment advances P paths together (rl.envs.batched). Their
ensembles form one array EE of shape (P, N, n) (DAPPER's E per path, members as rows):

    forecast_ensembles   every member of every path, as column blocks of the model kernel
                         (enkf.models.integrate_columns); the blocks are spread over the cores
    analyse_ensembles    the analysis of each path (enkf.filters: the same kernels, the same
                         draws), one path per core at a time

Each member follows exactly the arithmetic of the single-path kernels (the columns of a block
never mix, and a path's analysis is the single-path call), so a batched forecast or analysis
equals the per-path one to the last bit; tests/test_batched.py checks it.

Why column blocks of many paths: the model kernel vectorises over the columns of a block, so
wider blocks run faster than one path's N columns (measured by `enkfrl bench`, env rows); a
block of `block_columns` columns still fits the caches.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from enkf.filters import enkf_analysis, ensemble_spread, etkf_analysis, inflate
from enkf.models import integrate_columns


@njit(parallel=True, cache=True)
def forecast_ensembles(EE, model_id, integrator_id, params, dt, n_steps, block_columns, threads):
    """Advance every member of EE (P, N, n) by n_steps model steps; returns a new (P, N, n).

    The P N members are cut into column blocks of whole paths, at most block_columns columns
    (at least one path) and at least one block per thread (`threads`: numba's thread count),
    integrated in parallel.
    """
    P, N, n = EE.shape
    paths_per_block = max(1, min(block_columns // N, (P + threads - 1) // threads))
    n_blocks = (P + paths_per_block - 1) // paths_per_block
    out = np.empty_like(EE)
    for b in prange(n_blocks):
        first = b * paths_per_block
        last = min(P, first + paths_per_block)
        m = (last - first) * N
        X = np.empty((n, m))
        for p in range(first, last):
            for j in range(N):
                for i in range(n):
                    X[i, (p - first) * N + j] = EE[p, j, i]
        scratch = np.empty((5, n, m))
        integrate_columns(X, model_id, integrator_id, params, dt, n_steps, scratch)
        for p in range(first, last):
            for j in range(N):
                for i in range(n):
                    out[p, j, i] = X[i, (p - first) * N + j]
    return out


@njit(parallel=True, cache=True)
def enkf_analyses(EE, yy, obs_index, r, perturbations, centre, inflation, stage_forecast):
    """Perturbed-observation EnKF analysis of each path (enkf.filters.enkf_analysis).

    EE (P, N, n) forecast ensembles, yy (P, p) observations, perturbations (P, N, p) standard
    normal draws; inflation multiplies the forecast anomalies first (stage_forecast) or the
    analysis anomalies after. Returns (xa (P, n), Aa (P, N, n)).
    """
    P, N, n = EE.shape
    xa = np.empty((P, n))
    Aa = np.empty((P, N, n))
    for q in prange(P):
        E = EE[q]
        if stage_forecast and inflation != 1.0:
            E = inflate(E, inflation)
        x, A = enkf_analysis(E, yy[q], obs_index, r, perturbations[q], centre)
        if not stage_forecast and inflation != 1.0:
            A = inflation * A
        xa[q] = x
        Aa[q] = A
    return xa, Aa


@njit(parallel=True, cache=True)
def etkf_analyses(EE, yy, obs_index, r, rotations, inflation, stage_forecast):
    """Square-root (ETKF) analysis of each path (enkf.filters.etkf_analysis); rotations (P, N, N)."""
    P, N, n = EE.shape
    xa = np.empty((P, n))
    Aa = np.empty((P, N, n))
    for q in prange(P):
        E = EE[q]
        if stage_forecast and inflation != 1.0:
            E = inflate(E, inflation)
        x, A = etkf_analysis(E, yy[q], obs_index, r, rotations[q])
        if not stage_forecast and inflation != 1.0:
            A = inflation * A
        xa[q] = x
        Aa[q] = A
    return xa, Aa


@njit(parallel=True, cache=True)
def spreads(EE):
    """Per-variable ensemble standard deviation (ddof = 1) of each path, (P, n)."""
    P, N, n = EE.shape
    out = np.empty((P, n))
    for q in prange(P):
        for i in range(n):
            s = 0.0
            for j in range(N):
                s += EE[q, j, i]
            mean = s / N
            ss = 0.0
            for j in range(N):
                d = EE[q, j, i] - mean
                ss += d * d
            out[q, i] = np.sqrt(ss / (N - 1))
    return out


ENKF, ETKF = 0, 1
ANALYSIS_IDS = {"enkf": ENKF, "etkf": ETKF}


@njit(parallel=True, cache=True)
def cycle_ensembles(EE, model_id, integrator_id, params, dt, n_steps, block_columns, threads,
                    method_id, yy, obs_index, r, perturbations, centre, rotations, inflation,
                    stage_forecast):
    """forecast_ensembles, then each path's analysis (enkf_analyses / etkf_analyses) and spread,
    in ONE parallel region: a block's paths are analysed by the thread that forecast them, so a
    cycle of the batched loop wakes the worker threads once.

    Returns (Ef (P, N, n), spread (P, n), xa (P, n), Aa (P, N, n)); a path whose forecast is not
    finite gets NaN analyses.
    """
    P, N, n = EE.shape
    paths_per_block = max(1, min(block_columns // N, (P + threads - 1) // threads))
    n_blocks = (P + paths_per_block - 1) // paths_per_block
    Ef = np.empty_like(EE)
    spread = np.empty((P, n))
    xa = np.full((P, n), np.nan)
    Aa = np.full((P, N, n), np.nan)
    for b in prange(n_blocks):
        first = b * paths_per_block
        last = min(P, first + paths_per_block)
        m = (last - first) * N
        X = np.empty((n, m))
        for p in range(first, last):
            for j in range(N):
                for i in range(n):
                    X[i, (p - first) * N + j] = EE[p, j, i]
        scratch = np.empty((5, n, m))
        integrate_columns(X, model_id, integrator_id, params, dt, n_steps, scratch)
        for p in range(first, last):
            finite = True
            for j in range(N):
                for i in range(n):
                    v = X[i, (p - first) * N + j]
                    Ef[p, j, i] = v
                    finite = finite and np.isfinite(v)
            spread[p] = ensemble_spread(Ef[p])
            if not finite:
                continue
            E = Ef[p]
            if stage_forecast and inflation != 1.0:
                E = inflate(E, inflation)
            if method_id == ENKF:
                x, A = enkf_analysis(E, yy[p], obs_index, r, perturbations[p], centre)
            else:
                x, A = etkf_analysis(E, yy[p], obs_index, r, rotations[p])
            if not stage_forecast and inflation != 1.0:
                A = inflation * A
            xa[p] = x
            Aa[p] = A
    return Ef, spread, xa, Aa
