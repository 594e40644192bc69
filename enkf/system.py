"""The twin experiment as one object: model, observation operator, filter, and their random draws.

``System`` is what both the reference run (``enkf.precompute``) and the RL environment use, so
that a forecast or an analysis computed by either is the same computation on the same draws:

    cycle k (k = 0 .. K-1), starting from the analysis ensemble of cycle k-1 (or the initial one):
        E_f  = forecast(E)                       steps_per_cycle model steps per member
        y_k  = H x_true + sqrt(r) * eps          eps drawn from (seed, OBS_NOISE, path, k)
        x_a, A_a = analyse(E_f, y_k, path, k)    perturbations from (seed, OBS_PERTURBATION, path, k)
        E    = x_a + A_a                         (the RL env puts its own x_a here)
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from enkf import batch, rng
from enkf.config import DAConfig
from enkf.filters import enkf_analysis, etkf_analysis, inflate, letkf_analysis, mean_preserving_rotation
from enkf.models import INTEGRATOR_IDS, MODEL_IDS, params_of, step_columns


@dataclass(frozen=True)
class System:
    seed: int
    model_id: int
    integrator_id: int
    params: np.ndarray
    dt: float
    steps_per_cycle: int
    obs_index: np.ndarray
    obs_error_var: float
    method: str
    n_ens: int
    inflation: float
    inflation_stage: str
    centre_perturbations: bool
    rotate: bool
    loc_radius: float | None
    init_spread: float

    @classmethod
    def from_config(cls, cfg: DAConfig) -> "System":
        f = cfg.filter
        return cls(
            seed=cfg.seed, model_id=MODEL_IDS[cfg.model.name],
            integrator_id=INTEGRATOR_IDS[cfg.model.integrator], params=params_of(cfg.model),
            dt=cfg.model.dt, steps_per_cycle=cfg.steps_per_cycle,
            obs_index=np.array(cfg.obs_index, dtype=np.int64), obs_error_var=cfg.obs.error_var,
            method=f.method, n_ens=f.n_ens, inflation=f.inflation,
            inflation_stage=f.inflation_stage, centre_perturbations=f.centre_perturbations,
            rotate=f.rotate, loc_radius=f.loc_radius, init_spread=f.init_spread)

    @property
    def n_obs(self) -> int:
        return self.obs_index.shape[0]

    # ---- model -----------------------------------------------------------------------------
    def forecast_columns(self, X: np.ndarray) -> None:
        """Advance a column block X (n, m) by one cycle, in place (truth and members alike)."""
        step_columns(X, self.model_id, self.integrator_id, self.params, self.dt, self.steps_per_cycle)

    def forecast(self, E: np.ndarray) -> np.ndarray:
        """Advance the ensemble E (N, n) by one cycle; returns the forecast ensemble (N, n)."""
        X = np.ascontiguousarray(E.T)
        self.forecast_columns(X)
        return np.ascontiguousarray(X.T)

    # ---- draws -----------------------------------------------------------------------------
    def initial_ensemble(self, x0: np.ndarray, path: int) -> np.ndarray:
        """(N, n): truth start + N(0, init_spread^2) per member and variable."""
        noise = rng.standard_normal(self.seed, rng.ENSEMBLE_INIT, path, 0, (self.n_ens, x0.shape[0]))
        return x0 + self.init_spread * noise

    def observe(self, truth: np.ndarray, path: int, cycle: int) -> np.ndarray:
        """y = H x + eps, eps ~ N(0, r I), shape (p,)."""
        eps = rng.standard_normal(self.seed, rng.OBS_NOISE, path, cycle, self.n_obs)
        return truth[self.obs_index] + np.sqrt(self.obs_error_var) * eps

    def perturbations(self, path: int, cycle: int) -> np.ndarray:
        return rng.standard_normal(self.seed, rng.OBS_PERTURBATION, path, cycle, (self.n_ens, self.n_obs))

    # ---- analysis --------------------------------------------------------------------------
    def analyse(self, forecast_ensemble: np.ndarray, obs: np.ndarray, path: int, cycle: int):
        """The filter's analysis of the forecast ensemble (N, n) given y (p,).

        Returns (analysis_mean (n,), analysis_anomalies (N, n)); inflation is applied at the
        configured stage (forecast anomalies before the update, or analysis anomalies after).
        """
        E = forecast_ensemble
        if self.inflation_stage == "forecast" and self.inflation != 1.0:
            E = inflate(E, self.inflation)
        if self.method == "enkf":
            xa, Aa = enkf_analysis(E, obs, self.obs_index, self.obs_error_var,
                                   self.perturbations(path, cycle), self.centre_perturbations)
        else:
            rotation = (mean_preserving_rotation(rng.generator(self.seed, rng.ROTATION, path, cycle),
                                                 self.n_ens) if self.rotate else np.eye(self.n_ens))
            if self.method == "letkf":
                xa, Aa = letkf_analysis(E, obs, self.obs_index, self.obs_error_var, self.loc_radius, rotation)
            else:
                xa, Aa = etkf_analysis(E, obs, self.obs_index, self.obs_error_var, rotation)
        if self.inflation_stage == "analysis" and self.inflation != 1.0:
            Aa = self.inflation * Aa
        return xa, Aa


    # ---- many paths at once (enkf/batch.py) -------------------------------------------------
    def forecast_batch(self, EE: np.ndarray, block_columns: int, gpu: bool = False) -> np.ndarray:
        """Advance the ensembles EE (P, N, n) of P paths by one cycle; returns (P, N, n). On the
        CPU cores in column blocks of block_columns, or with gpu one CUDA thread per member."""
        if gpu:
            from enkf import cuda
            return cuda.forecast_ensembles(EE, self.model_id, self.integrator_id, self.params, self.dt,
                                           self.steps_per_cycle)
        return batch.forecast_ensembles(EE, self.model_id, self.integrator_id, self.params, self.dt,
                                        self.steps_per_cycle, block_columns, numba.get_num_threads())

    def analysis_draws(self, paths: np.ndarray, cycles: np.ndarray):
        """The analysis' random draws of each (path, cycle): observation perturbations (P, N, p)
        (enkf) and rotations (P, N, N) (etkf with rotate; identities otherwise)."""
        P, N, p = len(paths), self.n_ens, self.n_obs
        D = (np.stack([self.perturbations(q, k) for q, k in zip(paths, cycles)]) if self.method == "enkf"
             else np.zeros((P, N, p)))
        if self.method == "etkf" and self.rotate:
            Q = np.stack([mean_preserving_rotation(rng.generator(self.seed, rng.ROTATION, q, k), N)
                          for q, k in zip(paths, cycles)])
        else:
            Q = np.broadcast_to(np.eye(N), (P, N, N))
        return D, np.ascontiguousarray(Q)

    def analyse_batch(self, EE: np.ndarray, yy: np.ndarray, paths: np.ndarray, cycles: np.ndarray,
                      draws=None):
        """``analyse`` of P forecast ensembles EE (P, N, n) given yy (P, p), path and cycle of each
        (their draws): returns (xa (P, n), Aa (P, N, n)), each path's exactly as ``analyse``.
        draws: where the draws come from, a callable as ``analysis_draws`` (default: that;
        ``KeptDraws`` hands out the same numbers, drawn once)."""
        stage_forecast = self.inflation_stage == "forecast"
        if self.method in batch.ANALYSIS_IDS:
            D, Q = (draws or self.analysis_draws)(paths, cycles)
            if self.method == "enkf":
                return batch.enkf_analyses(EE, yy, self.obs_index, self.obs_error_var, D,
                                           self.centre_perturbations, self.inflation, stage_forecast)
            return batch.etkf_analyses(EE, yy, self.obs_index, self.obs_error_var, Q, self.inflation, stage_forecast)
        out = [self.analyse(E, y, p, k) for E, y, p, k in zip(EE, yy, paths, cycles)]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])

    def cycle_batch(self, EE: np.ndarray, yy: np.ndarray, paths: np.ndarray, cycles: np.ndarray,
                    block_columns: int, gpu: bool = False, draws=None):
        """Forecast EE (P, N, n) by one cycle and analyse each path's forecast with yy (P, p) and
        the draws of (paths, cycles) (from ``draws``, as analyse_batch): returns (Ef, spread (P, n),
        xa, Aa), NaN analyses where a forecast is not finite. On the CPU one parallel region
        (enkf.batch.cycle_ensembles)."""
        if gpu or self.method not in batch.ANALYSIS_IDS:
            Ef = self.forecast_batch(EE, block_columns, gpu)
            fin = np.all(np.isfinite(Ef), axis=(1, 2))
            xa, Aa = np.full((Ef.shape[0], Ef.shape[2]), np.nan), np.full(Ef.shape, np.nan)
            if fin.any():
                xa[fin], Aa[fin] = self.analyse_batch(np.ascontiguousarray(Ef[fin]), yy[fin], paths[fin],
                                                      cycles[fin], draws)
            return Ef, batch.spreads(Ef), xa, Aa
        D, Q = (draws or self.analysis_draws)(paths, cycles)
        return batch.cycle_ensembles(
            EE, self.model_id, self.integrator_id, self.params, self.dt, self.steps_per_cycle, block_columns,
            numba.get_num_threads(), batch.ANALYSIS_IDS[self.method], yy, self.obs_index, self.obs_error_var,
            D, self.centre_perturbations, Q, self.inflation, self.inflation_stage == "forecast")


class KeptDraws:
    """``System.analysis_draws`` with every (path, cycle)'s draws drawn once and kept.

    A closed loop that replays its paths (the RL env: every path many episodes) needs the same
    numbers each time, since a draw is keyed by (seed, stream, path, cycle) (enkf.rng). Drawing
    them costs ~30 us per (path, cycle) (a SeedSequence, a PCG64 and the normals), serial Python
    next to the parallel forecast; kept, a step's draws are one fancy index. The store is one
    array (n_paths, n_cycles, N, p) of observation perturbations (enkf) or rotations (etkf with
    rotate) made by numpy's zeros, whose memory pages are only taken for the cycles visited
    (at most n_paths x n_cycles x N x p x 8 bytes: 320 MB for 100 paths of L96_1). Other filters'
    draws are not kept (an identity, or none): those calls go to the System.
    """

    def __init__(self, system: System, n_paths: int, n_cycles: int):
        self.system = system
        N, p = system.n_ens, system.n_obs
        self.kind = ("perturbations" if system.method == "enkf"
                     else "rotations" if system.method == "etkf" and system.rotate else None)
        shape = {"perturbations": (N, p), "rotations": (N, N), None: (0,)}[self.kind]
        self.store = np.zeros((n_paths, n_cycles) + shape) if self.kind else None
        self.drawn = np.zeros((n_paths, n_cycles), bool)

    def __call__(self, paths: np.ndarray, cycles: np.ndarray):
        if self.kind is None:
            return self.system.analysis_draws(paths, cycles)
        paths, cycles = np.asarray(paths, np.int64), np.asarray(cycles, np.int64)
        new = ~self.drawn[paths, cycles]
        if new.any():
            qs, ks = np.unique(np.stack([paths[new], cycles[new]]), axis=1)  # a pair once per call
            D, Q = self.system.analysis_draws(qs, ks)
            self.store[qs, ks] = D if self.kind == "perturbations" else Q
            self.drawn[qs, ks] = True
        kept, P, N = self.store[paths, cycles], len(paths), self.system.n_ens
        if self.kind == "perturbations":
            return kept, np.ascontiguousarray(np.broadcast_to(np.eye(N), (P, N, N)))
        return np.zeros((P, N, self.system.n_obs)), kept


def rmse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spatial root-mean-square difference over the last axis."""
    return np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2, axis=-1))
