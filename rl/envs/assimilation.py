"""The closed-loop assimilation environment: the agent replaces the EnKF analysis step.

One episode is one reference path (a start state of the spin-up), one step is one cycle k:

    the env holds its own forecast ensemble E_f(k) (N, n), forecast from its previous analysis
    observation      normalised features of (xb = mean E_f, y_k, spread, ...); never the truth
    action           normalised analysis: xa_rl = unnorm(a)  (absolute)
                                          xa_rl = xb + a * half_range  (increment)
    reward           1 - clip(RMSE(norm(xa_rl), norm(xa_target)), 0, clip), xa_target the stored
                     EnKF analysis (reward.target: stored), the EnKF analysis of the env's own
                     forecast ensemble (online) or the truth (truth: a study); info["point_error"]
                     holds |norm(xa_rl) - norm(xa_target)| per grid point (the pointwise credit).
                     next_obs: no target state; after the forecast to k+1 (done inside step k),
                     point_error_i = |norm(xb(k+1))_i - norm(y(k+1))_i| on the observed points,
                     the fit of the forecast started from xa_rl to the next observations (NaN on
                     the last cycle, which has no next y, and on unobserved points)
    next ensemble    E = xa_rl + A_a, A_a the EnKF analysis anomalies of the env's own forecast
                     ensemble with the reference run's perturbation draws for (path, k); then
                     E_f(k+1) = forecast(E). Whatever the reference derived from xa is derived
                     from xa_rl: feeding the stored xa reproduces the stored run.
    terminated       the normalised forecast mean leaves [-halt_bound, halt_bound] or is not
                     finite, or the action is not finite
    truncated        after the path's last cycle
"""
from __future__ import annotations

import time
import warnings
from collections import deque
from typing import Sequence

import gymnasium as gym
import numpy as np

from rl.config import Config
from enkf.filters import ensemble_spread
from enkf.system import System, rmse
from rl.envs.normalisation import Normaliser

# the arrays of paths.h5 the env reads (truth only for info, never for the observation)
DATA_KEYS = ("truth", "obs", "analysis_mean", "forecast_mean", "forecast_spread", "initial_ensemble")


def feature_sizes(cfg: Config) -> dict[str, int]:
    n, p = cfg.model.n, len(cfg.obs_index)
    return {"forecast_mean": n, "obs": p, "innovation": p, "spread": n, "prev_analysis": n,
            "ensemble": cfg.filter.n_ens * n, "correlation": cfg.agent.stencil * n}


def ring_correlations(ensemble: np.ndarray, lags: int) -> np.ndarray:
    """Ensemble correlations on the ring: (..., N, n) members -> (..., lags n), block d - 1
    (d = 1 .. lags) holding corr(x_j, x_{(j + d) mod n}) at variable j (NaN where a variable has
    no spread)."""
    A = ensemble - ensemble.mean(axis=-2, keepdims=True)
    norms = np.sqrt(np.sum(A * A, axis=-2))                                     # (..., n)
    blocks = [np.sum(A * np.roll(A, -d, axis=-1), axis=-2) / (norms * np.roll(norms, -d, axis=-1))
              for d in range(1, lags + 1)]
    return np.concatenate(blocks, axis=-1)


def build_features(names: Sequence[str], norm: Normaliser, obs_index: np.ndarray,
                   forecast_mean: np.ndarray, obs: np.ndarray, forecast_spread: np.ndarray,
                   prev_analysis: np.ndarray, forecast_ensemble: np.ndarray | None,
                   lags: int) -> np.ndarray:
    """The normalised feature vector of one cycle, in the order of ``names``; with leading
    batch axes (slots of rl.envs.batched) one vector per slot.

    Takes only what a filter knows at analysis time: no truth argument exists. Per-variable
    features are blocks of n values; the ensemble is n_ens such blocks, member after member;
    correlation is `lags` blocks (ring_correlations, dimensionless: not normalised further).
    """
    lead = forecast_mean.shape[:-1]
    parts = {
        "ensemble": lambda: norm.norm(forecast_ensemble).reshape(*lead, -1),
        "correlation": lambda: ring_correlations(forecast_ensemble, lags),
        "forecast_mean": lambda: norm.norm(forecast_mean),
        "obs": lambda: norm.norm(obs, obs_index),
        "innovation": lambda: norm.diff_norm(obs - forecast_mean[..., obs_index], obs_index),
        "spread": lambda: norm.diff_norm(forecast_spread),
        "prev_analysis": lambda: norm.norm(prev_analysis),
    }
    return np.concatenate([parts[name]() for name in names], axis=-1)


def next_obs_error(norm: Normaliser, obs_index: np.ndarray, next_forecast_mean: np.ndarray,
                   next_obs: np.ndarray, clip: float) -> np.ndarray:
    """reward.target next_obs: |norm(xb(k+1)) - norm(y(k+1))| on the observed points, NaN on the
    others, `clip` where the forecast is not finite (a diverged forecast earns the lowest reward);
    shape (..., n) like next_forecast_mean."""
    out = np.full(next_forecast_mean.shape, np.nan)
    with np.errstate(all="ignore"):
        d = np.abs(norm.diff_norm(next_forecast_mean[..., obs_index] - next_obs, obs_index))
    out[..., obs_index] = np.where(np.isfinite(d), d, clip)
    return out


def reward_of(point_error: np.ndarray, clip: float) -> np.ndarray:
    """1 - clip(RMSE over the points with an error, 0, clip), over the last axis (NaN where no
    point has one: the last cycle under next_obs)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN row
        return 1.0 - np.minimum(np.sqrt(np.nanmean(point_error ** 2, axis=-1)), clip)


def clip_features(f: np.ndarray, bound: float) -> np.ndarray:
    """Non-finite values to the bounds (NaN to 0), everything into [-bound, bound]."""
    return np.clip(np.nan_to_num(f, nan=0.0, posinf=bound, neginf=-bound), -bound, bound)


def reference_observations(cfg: Config, norm: Normaliser, data: dict, path: int) -> np.ndarray:
    """The observations the env hands out along the stored run of `path` when the agent emits
    the stored xa (the oracle), shape (n_cycles, window, n_features), float32: the inputs of
    behaviour cloning. Built with the env's own feature code from the stored forecast mean,
    spread, observations and (previous) analysis."""
    xb, y = data["forecast_mean"][path], data["obs"][path]
    spread, xa = data["forecast_spread"][path], data["analysis_mean"][path]
    members = {"ensemble", "correlation"} & set(cfg.env.features)
    ens = data["forecast_ensemble"][path] if members else [None] * len(xb)
    obs_index = np.array(cfg.obs_index)
    rows = np.stack([
        clip_features(build_features(cfg.env.features, norm, obs_index, xb[k], y[k], spread[k],
                                     xa[k - 1] if k > 0 else xb[0], ens[k], cfg.agent.stencil),
                      cfg.env.obs_bound)
        for k in range(xb.shape[0])])
    W = cfg.env.window
    padded = np.concatenate([np.repeat(rows[:1], W - 1, axis=0), rows])  # reset repeats row 0
    return np.stack([padded[k:k + W] for k in range(rows.shape[0])]).astype(np.float32)


def reference_actions(cfg: Config, norm: Normaliser, data: dict, path: int) -> np.ndarray:
    """The actions that ask for the stored xa along `path` (pretrain.target truth: for the truth),
    shape (n_cycles, n)."""
    xa = data["truth" if cfg.pretrain.target == "truth" else "analysis_mean"][path]
    if cfg.env.action_mode == "absolute":
        return norm.norm(xa)
    return norm.diff_norm(xa - data["forecast_mean"][path])


def path_spaces(cfg: Config) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """(observation space, action space) of one agent per path: the window (W, F) of feature
    vectors and the analysis (n,), both within env.obs_bound."""
    n_features = sum(feature_sizes(cfg)[f] for f in cfg.env.features)
    b = cfg.env.obs_bound
    return (gym.spaces.Box(-b, b, (cfg.env.window, n_features), np.float32),
            gym.spaces.Box(-b, b, (cfg.model.n,), np.float32))


class AssimilationEnv(gym.Env):
    """Closed-loop EnKF-analysis environment over the reference paths of one experiment.

    data: arrays of paths.h5 (at least DATA_KEYS), normaliser: from the spin-up climatology,
    paths: the paths reset() may choose from (set_active_paths changes them: the curriculum).
    """

    metadata = {"render_modes": []}

    def __init__(self, cfg: Config, data: dict, normaliser: Normaliser, paths: Sequence[int]):
        super().__init__()
        self.system = System.from_config(cfg.ensemble_config())  # the env's own ensemble filter
        self.env_cfg, self.reward_cfg = cfg.env, cfg.reward
        self.lags = cfg.agent.stencil  # of the correlation feature
        self.data = {k: data[k] for k in DATA_KEYS}
        self.norm = normaliser
        self.n_cycles = self.data["obs"].shape[1]
        self.n = cfg.model.n
        self.burn_in = cfg.paths.burn_in  # cycles the evaluation summaries leave out
        self.active_paths = list(paths)
        self.observation_space, self.action_space = path_spaces(cfg)
        self.step_seconds = 0.0  # time spent inside step(), read by the training diagnostics
        self.path = self.cycle = -1

    # ---- curriculum -----------------------------------------------------------------------
    def set_active_paths(self, paths: Sequence[int]) -> None:
        self.active_paths = list(paths)

    def pop_step_seconds(self) -> float:
        s, self.step_seconds = self.step_seconds, 0.0
        return s

    # ---- what baselines and the evaluation read ----------------------------------------------
    @property
    def forecast_mean(self) -> np.ndarray:
        return self._xb

    @property
    def current_obs(self) -> np.ndarray:
        return self.data["obs"][self.path, self.cycle]

    @property
    def online_analysis(self) -> np.ndarray:
        """The EnKF analysis mean of the env's own forecast ensemble at this cycle."""
        return self._xa_online

    @property
    def last_analysis(self) -> np.ndarray | None:
        """xa_rl of the last step (None right after reset)."""
        return self._prev_analysis

    def enkf_rmse_vs_truth(self, path: int) -> np.ndarray:
        """RMSE of the stored EnKF analysis against the truth per cycle, (n_cycles,)."""
        return rmse(self.data["analysis_mean"][path], self.data["truth"][path])

    def action_for(self, xa: np.ndarray, dtype=np.float32) -> np.ndarray:
        """The normalised action that asks for analysis xa (float32, as a policy emits it)."""
        if self.env_cfg.action_mode == "absolute":
            a = self.norm.norm(xa)
        else:
            a = self.norm.diff_norm(xa - self._xb)
        return a.astype(dtype)

    # ---- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if options and "path" in options:
            self.path = int(options["path"])
        else:
            self.path = int(self.np_random.choice(self.active_paths))
        self.cycle = 0
        self._prev_analysis = None
        self._forecast_from(self.data["initial_ensemble"][self.path])
        features = self._features()
        self._history = deque([features] * self.env_cfg.window, maxlen=self.env_cfg.window)
        return self._observation(), {"path": self.path, "cycle": 0}

    def step(self, action):
        t0 = time.perf_counter()
        a = np.asarray(action, dtype=np.float64).reshape(self.n)
        b = self.env_cfg.obs_bound
        k = self.cycle
        stored_xa = self.data["analysis_mean"][self.path, k]
        truth = self.data["truth"][self.path, k]
        clip = self.reward_cfg.clip
        if not np.all(np.isfinite(a)):
            # a broken policy output ends the episode with the lowest reward, the env survives
            info = self._info(k, True, stored_xa, truth, np.nan, np.nan, np.nan)
            info["point_error"] = np.full(self.n, clip)
            self.step_seconds += time.perf_counter() - t0
            return self._observation(), 1.0 - clip, True, False, info
        a = np.clip(a, -b, b)
        if self.env_cfg.action_mode == "absolute":
            xa = self.norm.unnorm(a)
        else:
            xa = self._xb + self.norm.diff_unnorm(a)
        z = self.norm.norm(xa)
        target = self.reward_cfg.target
        if target != "next_obs":
            xa_target = {"stored": stored_xa, "online": self._xa_online, "truth": truth}[target]
            point_error = np.abs(z - self.norm.norm(xa_target))  # per grid point: the pointwise agent's credit
        rmse_stored = float(rmse(z, self.norm.norm(stored_xa)))
        rmse_online = float(rmse(z, self.norm.norm(self._xa_online)))

        self._prev_analysis = xa
        self.cycle = k + 1
        terminated = truncated = False
        if self.cycle == self.n_cycles:
            truncated = True
            if target == "next_obs":  # no next observation: this step has no reward
                point_error = np.full(self.n, np.nan)
        else:
            self._forecast_from(xa + self._Aa)
            if target == "next_obs":  # the forecast from xa_rl against the next cycle's y
                point_error = next_obs_error(self.norm, self.system.obs_index, self._xb, self.current_obs, clip)
            with np.errstate(invalid="ignore"):
                z = self.norm.norm(self._xb)
            terminated = not (np.all(np.isfinite(z)) and np.all(np.abs(z) <= self.env_cfg.halt_bound))
            self._history.append(self._features())
        reward = float(reward_of(point_error, clip))
        info = self._info(k, terminated, stored_xa, truth, rmse_stored, rmse_online, float(rmse(xa, truth)))
        info["point_error"] = point_error
        self.step_seconds += time.perf_counter() - t0
        return self._observation(), reward, terminated, truncated, info

    # ---- internals --------------------------------------------------------------------------
    def _forecast_from(self, ensemble: np.ndarray) -> None:
        """Forecast to cycle self.cycle and run the EnKF analysis of that forecast (its anomalies
        carry the next ensemble, its mean is the online target and the replica baseline)."""
        with np.errstate(all="ignore"):  # a diverging ensemble is a halt, not a crash
            Ef = self.system.forecast(ensemble)
            self._ensemble = Ef
            self._xb = Ef.mean(axis=0)
            self._spread = ensemble_spread(Ef)
            if np.all(np.isfinite(Ef)):
                self._xa_online, self._Aa = self.system.analyse(
                    Ef, self.current_obs, self.path, self.cycle)
            else:
                self._xa_online, self._Aa = np.full(self.n, np.nan), np.full_like(Ef, np.nan)

    def _features(self) -> np.ndarray:
        prev = self._xb if self._prev_analysis is None else self._prev_analysis
        with np.errstate(all="ignore"):
            f = build_features(self.env_cfg.features, self.norm, self.system.obs_index,
                               self._xb, self.current_obs, self._spread, prev, self._ensemble, self.lags)
        return clip_features(f, self.env_cfg.obs_bound)

    def _observation(self) -> np.ndarray:
        return np.stack(self._history).astype(np.float32)

    def _info(self, k, halted, stored_xa, truth, rmse_stored, rmse_online, rmse_truth) -> dict:
        return {"path": self.path, "cycle": k, "halted": bool(halted),
                "rmse_vs_enkf": rmse_stored, "rmse_vs_online": rmse_online,
                "rmse_vs_truth": rmse_truth, "enkf_rmse_vs_truth": float(rmse(stored_xa, truth))}
