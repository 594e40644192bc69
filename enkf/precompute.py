"""The reference EnKF run from every start state: truth, observations, forecast and analysis."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import numpy as np
from tqdm import tqdm

from enkf.config import DAConfig
from enkf.config import data_hash, data_settings, spinup_hash, stale_keys
from enkf.filters import ensemble_spread
from enkf.io import DataError, atomic_h5, check_arrays, code_version, put, read_all
from enkf.system import System, rmse


def run_path(system: System, x0: np.ndarray, path: int, n_cycles: int,
             store_ensembles: bool = False) -> dict:
    """Twin experiment from the start state x0 (n,) for n_cycles cycles.

    Cycle k forecasts truth and ensemble over t_obs, observes the truth, and analyses.
    Returns arrays indexed by cycle: truth (K, n) at the analysis time, obs (K, p),
    forecast_mean / forecast_spread / analysis_mean / analysis_spread (K, n),
    initial_ensemble (N, n); with store_ensembles also forecast_ensemble / analysis_ensemble
    (K, N, n). The spreads are per-variable member standard deviations (ddof 1), the forecast
    one before any forecast-stage inflation.
    """
    N, n, p = system.n_ens, x0.shape[0], system.n_obs
    E0 = system.initial_ensemble(x0, path)
    # truth and members advance together as columns [truth | members]: one kernel call a cycle
    X = np.empty((n, N + 1))
    X[:, 0] = x0
    X[:, 1:] = E0.T
    out = {k: np.empty((n_cycles, n)) for k in
           ("truth", "forecast_mean", "forecast_spread", "analysis_mean", "analysis_spread")}
    out["obs"] = np.empty((n_cycles, p))
    if store_ensembles:
        out["forecast_ensemble"] = np.empty((n_cycles, N, n))
        out["analysis_ensemble"] = np.empty((n_cycles, N, n))
    for k in range(n_cycles):
        system.forecast_columns(X)
        truth = X[:, 0].copy()
        Ef = np.ascontiguousarray(X[:, 1:].T)
        y = system.observe(truth, path, k)
        xa, Aa = system.analyse(Ef, y, path, k)
        Ea = xa + Aa
        X[:, 1:] = Ea.T
        out["truth"][k] = truth
        out["obs"][k] = y
        out["forecast_mean"][k] = Ef.mean(axis=0)
        out["forecast_spread"][k] = ensemble_spread(Ef)
        out["analysis_mean"][k] = xa
        out["analysis_spread"][k] = ensemble_spread(Ea)
        if store_ensembles:
            out["forecast_ensemble"][k] = Ef
            out["analysis_ensemble"][k] = Ea
    out["initial_ensemble"] = E0
    return out


def _run_one(args):
    cfg, x0, path = args
    return path, run_path(System.from_config(cfg), x0, path, cfg.paths.n_cycles,
                          cfg.paths.store_ensembles)


def die_with_parent(parent: int) -> None:
    """Worker initialiser: the worker ends when its parent process dies, however it dies (kill -9
    included): Linux delivers SIGKILL through prctl(PR_SET_PDEATHSIG); elsewhere a thread polls
    the parent id."""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def watch():
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def precompute(cfg: DAConfig, starts: np.ndarray, progress: bool = True) -> dict:
    """run_path from every start, in parallel over paths. Returns stacked arrays (P, ...)."""
    P = cfg.paths.n_paths
    workers = cfg.paths.workers or os.cpu_count() or 1
    jobs = [(cfg, starts[p], p) for p in range(P)]
    results: list = [None] * P
    bar = tqdm(total=P, desc=f"precompute {cfg.experiment}", unit="path", disable=not progress)
    if workers == 1:
        for job in jobs:
            p, res = _run_one(job)
            results[p] = res
            bar.update()
    else:  # leaving the block (an error, Ctrl-C) terminates the workers; a killed parent takes them along
        with multiprocessing.Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            for p, res in pool.imap_unordered(_run_one, jobs, chunksize=1):
                results[p] = res
                bar.update()
    bar.close()
    stacked = {k: np.stack([r[k] for r in results]) for k in results[0]}
    stacked["forecast_rmse"] = rmse(stacked["forecast_mean"], stacked["truth"])
    stacked["analysis_rmse"] = rmse(stacked["analysis_mean"], stacked["truth"])
    obs_index = System.from_config(cfg).obs_index
    stacked["obs_rmse"] = rmse(stacked["obs"], stacked["truth"][..., obs_index])
    return stacked


_MEANING = {
    "truth": ("true state at the analysis time of cycle k", "(n_paths, n_cycles, n)"),
    "obs": ("observation y = H x_true + eps, eps ~ N(0, r I)", "(n_paths, n_cycles, p)"),
    "forecast_mean": ("forecast (background) ensemble mean xb", "(n_paths, n_cycles, n)"),
    "forecast_spread": ("per-variable std of the forecast ensemble (before inflation)",
                        "(n_paths, n_cycles, n)"),
    "analysis_mean": ("analysis ensemble mean xa", "(n_paths, n_cycles, n)"),
    "analysis_spread": ("per-variable std of the analysis ensemble", "(n_paths, n_cycles, n)"),
    "initial_ensemble": ("ensemble before cycle 0: start + N(0, init_spread^2)",
                         "(n_paths, n_ens, n)"),
    "forecast_ensemble": ("forecast ensemble (members as rows)", "(n_paths, n_cycles, n_ens, n)"),
    "analysis_ensemble": ("analysis ensemble (members as rows)", "(n_paths, n_cycles, n_ens, n)"),
    "forecast_rmse": ("RMSE(forecast_mean, truth) over variables", "(n_paths, n_cycles)"),
    "analysis_rmse": ("RMSE(analysis_mean, truth) over variables", "(n_paths, n_cycles)"),
    "obs_rmse": ("RMSE(obs, H truth) over observed variables", "(n_paths, n_cycles)"),
}


def write_paths(cfg: DAConfig, data: dict, starts: np.ndarray, path) -> None:
    import yaml
    with atomic_h5(path) as f:
        f.attrs["experiment"] = cfg.experiment
        f.attrs["config"] = yaml.safe_dump(data_settings(cfg), sort_keys=False)
        f.attrs["data_hash"] = data_hash(cfg)
        f.attrs["spinup_hash"] = spinup_hash(cfg)
        f.attrs["seed"] = cfg.seed
        f.attrs["seeds"] = ("every draw is numpy PCG64(SeedSequence([seed, stream, path, cycle])); "
                            "streams: see enkf/rng.py")
        f.attrs["code_version"] = code_version()
        f.attrs["obs_index"] = np.array(cfg.obs_index)
        put(f, "starts", starts, "start state of path p (from spinup.h5)", shape="(n_paths, n)")
        for k, (meaning, shape) in _MEANING.items():
            if k in data:
                put(f, k, data[k], meaning, shape=shape)


def read_paths(cfg: DAConfig, path, config_file="config.yaml") -> dict:
    """The arrays of paths.h5, refused (DataError, one line) when the file is stale for cfg (read
    from config_file), or has a wrong shape or a non-finite value."""
    import yaml
    hint = f"run `enkfrl precompute --exp {cfg.experiment}` first"
    stored = [k for k in _MEANING if k not in ("forecast_ensemble", "analysis_ensemble")
              or cfg.paths.store_ensembles]  # what precompute always writes
    data, attrs = read_all(path, hint, ["starts"] + stored)
    rerun = f"rerun `enkfrl precompute --exp {cfg.experiment}`"
    if "config" in attrs:
        changed = stale_keys(yaml.safe_load(attrs["config"]), data_settings(cfg))
    else:
        changed = [] if attrs.get("data_hash") == data_hash(cfg) else ["data settings"]
    if changed:
        raise DataError(f"{path} was made with other settings than {config_file} has now "
                        f"({', '.join(changed)}): {rerun}")
    P, K, n, p, N = (cfg.paths.n_paths, cfg.paths.n_cycles, cfg.model.n, len(cfg.obs_index),
                     cfg.filter.n_ens)
    shapes = {"truth": (P, K, n), "obs": (P, K, p), "forecast_mean": (P, K, n),
              "forecast_spread": (P, K, n), "analysis_mean": (P, K, n), "analysis_spread": (P, K, n),
              "initial_ensemble": (P, N, n), "starts": (P, n), "forecast_rmse": (P, K),
              "analysis_rmse": (P, K), "obs_rmse": (P, K), "forecast_ensemble": (P, K, N, n),
              "analysis_ensemble": (P, K, N, n)}
    check_arrays(path, data, shapes, rerun)
    return data


def summary(data: dict, burn_in: int) -> dict:
    """Time-mean (after burn-in) RMSEs per path, then mean and std over paths."""
    out = {}
    for k in ("forecast_rmse", "analysis_rmse", "obs_rmse"):
        per_path = data[k][:, burn_in:].mean(axis=1)
        out[k] = (float(per_path.mean()), float(per_path.std()))
    return out
