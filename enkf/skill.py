"""The skill of a filter on stored twin-experiment data: the classical anchors of a data set.

A data set (paths.h5 or test_paths.h5) holds, per path, the truth and the observations of every
cycle and the initial ensemble. Any filter with the same ensemble size can be rerun on them: its
own ensembles from the same initial ensemble, assimilating the same y, with its own draws (the
streams of enkf/rng.py keyed by the same seed, path and cycle). Run with the settings the data
were made with, this reproduces the stored analyses (tests/test_filter_study.py).

    rmse_vs_truth   per path, the cycle mean of RMSE(x_a, truth) after burn_in
    diverged        per path, that mean above the observations' own (the analysis is worse than
                    y; the enkf_skill measure's rule), or the ensemble blew up (became non-finite)
"""
from __future__ import annotations

import numpy as np

from enkf.system import System, rmse


def filter_skill(system: System, data: dict, burn_in: int, block_columns: int) -> dict:
    """Run `system`'s filter on every path of data (truth (P, K, n), obs (P, K, p),
    initial_ensemble (P, N, n)): the forecast of all paths at once (System.forecast_batch, as the
    batched RL loop does), each path's analysis by System.analyse. A path whose ensemble or
    analysis stops being finite (or whose analysis fails on non-finite input) stops there.

    Returns per-path arrays: rmse_vs_truth (P,) (NaN where the ensemble blew up), obs_rmse (P,),
    finite (P,) bool, diverged (P,) bool, and the per-cycle analysis RMSE (P, K).
    """
    truth, obs, E0 = data["truth"], data["obs"], data["initial_ensemble"]
    P, K, _ = truth.shape
    if E0.shape[1] != system.n_ens:
        raise ValueError(f"the data's ensembles have {E0.shape[1]} members, the filter {system.n_ens}")
    EE = np.array(E0, dtype=np.float64)
    err = np.full((P, K), np.nan)
    alive = np.ones(P, dtype=bool)
    with np.errstate(all="ignore"):
        for k in range(K):
            if not alive.any():
                break
            live = np.flatnonzero(alive)
            Ef = system.forecast_batch(np.ascontiguousarray(EE[live]), block_columns)
            for j, p in enumerate(live):
                try:
                    if not np.all(np.isfinite(Ef[j])):
                        raise FloatingPointError("non-finite forecast")
                    xa, Aa = system.analyse(Ef[j], obs[p, k], p, k)
                    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(Aa))):
                        raise FloatingPointError("non-finite analysis")
                except (FloatingPointError, np.linalg.LinAlgError, ValueError, ZeroDivisionError):
                    alive[p] = False
                    continue
                EE[p] = xa + Aa
                err[p, k] = rmse(xa, truth[p, k])
    finite = alive
    per_path = np.where(finite, np.where(finite[:, None], err, 0.0)[:, burn_in:].mean(axis=1), np.nan)
    obs_rmse = rmse(obs, truth[..., system.obs_index])[:, burn_in:].mean(axis=1)
    return {"rmse_vs_truth": per_path, "obs_rmse": obs_rmse, "finite": finite,
            "diverged": ~finite | (per_path > obs_rmse), "analysis_rmse": err}
