"""P closed-loop paths stepped together: the batched twin of rl.envs.assimilation.AssimilationEnv.

AssimilationEnv is the readable reference (one path, one cycle at a time). BatchedLoop does
the same for P slots at once, each slot holding one path, with every piece of state an array
whose first axis is the slot:

    ensemble        (P, N, n)   forecast ensemble of the slot's current cycle
    xb, spread      (P, n)      its mean and spread
    xa_online, Aa   (P, n), (P, N, n)  the filter's analysis of that forecast (the 'online'
                                target and the anomalies that carry the next ensemble)
    history         (P, W, F)   the window of features (float32), the agent's observation
    path, cycle     (P,)

step(actions (P, n)) does what AssimilationEnv.step does, for the slots in `active`:
    xa = the action's analysis; reward and per-point errors against the target; then the
    forecast of all continuing slots in one parallel kernel (enkf.batch.forecast_ensembles),
    their analyses in another (enkf.batch.enkf_analyses / etkf_analyses), the features, halts
    and truncations as array operations. No Python loop runs over slots or points; each
    (path, cycle)'s observation perturbations are drawn the first time a slot reaches it and kept
    (enkf.system.KeptDraws: a draw is keyed by path and cycle, so the batch uses exactly the
    stored run's draws, however often a path is replayed).

The loop never picks paths itself: reset(slots, paths) starts the given paths, so the
vectorised envs (rl.envs.pointwise) own the path choice (the curriculum) and the evaluation
(rl.training.evaluate) owns its list of paths. With the same actions, P batched paths equal P
AssimilationEnvs to the last bit on the CPU (tests/test_batched.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from rl.config import Config
from enkf.io import DataError
from enkf.system import KeptDraws, System, rmse
from rl.envs.assimilation import (DATA_KEYS, build_features, clip_features, feature_sizes, next_obs_error,
                                  reward_of)
from rl.envs.normalisation import Normaliser


def forecast_on_gpu(device: str) -> bool:
    """train.device cuda, or auto where numba sees a CUDA GPU: the forecast runs there
    (enkf/cuda.py); the analyses, features and rewards stay on the CPU."""
    if device == "cpu":
        return False
    from enkf import cuda
    if device == "cuda" and not cuda.available():
        raise DataError("train.device is cuda but numba sees no CUDA device")
    return cuda.available()


@dataclass
class BatchStep:
    """What one step of the active slots gave, one entry per slot (NaN / False elsewhere)."""
    reward: np.ndarray          # (P,) 1 - clip(RMSE_norm vs the target) (next_obs: NaN on a last cycle)
    point_error: np.ndarray     # (P, n) |norm(xa) - norm(target)|, the pointwise credit (next_obs:
                                # |norm(xb(k+1)) - norm(y(k+1))| on the observed points)
    terminated: np.ndarray      # (P,) halted: non-finite action, or the forecast left the bounds
    truncated: np.ndarray       # (P,) the path's last cycle was assimilated
    rmse_vs_enkf: np.ndarray    # (P,) normalised RMSE vs the stored analysis
    rmse_vs_online: np.ndarray  # (P,) normalised RMSE vs the filter's analysis of this forecast
    rmse_vs_truth: np.ndarray   # (P,) RMSE of xa vs the truth, model units
    enkf_rmse_vs_truth: np.ndarray  # (P,) the stored analysis' RMSE vs the truth
    analysis: np.ndarray        # (P, n) xa (NaN where the action was not finite)
    path: np.ndarray            # (P,) the path and cycle this step assimilated
    cycle: np.ndarray


class BatchedLoop:
    """P slots of the closed loop over the paths of `data` (arrays of paths.h5)."""

    def __init__(self, cfg: Config, data: dict, normaliser: Normaliser, n_slots: int):
        self.system = System.from_config(cfg.ensemble_config())  # the env's own ensemble filter
        self.env_cfg, self.reward_cfg = cfg.env, cfg.reward
        self.lags = cfg.agent.stencil  # of the correlation feature
        self.block_columns = cfg.train.block_columns
        self.gpu = forecast_on_gpu(cfg.train.device)
        self.data = {k: data[k] for k in DATA_KEYS}
        self.norm = normaliser
        self.n_cycles = self.data["obs"].shape[1]
        self.draws = KeptDraws(self.system, self.data["obs"].shape[0], self.n_cycles)  # paths are replayed
        self.n = cfg.model.n
        self.n_slots = P = n_slots
        self.burn_in = cfg.paths.burn_in
        N, n, W = cfg.filter.n_ens, cfg.model.n, cfg.env.window
        F = sum(feature_sizes(cfg)[f] for f in cfg.env.features)
        self.path = np.zeros(P, dtype=np.int64)
        self.cycle = np.zeros(P, dtype=np.int64)
        self.ensemble = np.zeros((P, N, n))
        self.xb = np.zeros((P, n))
        self.spread = np.zeros((P, n))
        self.xa_online = np.zeros((P, n))
        self.Aa = np.zeros((P, N, n))
        self.prev = np.zeros((P, n))
        self.history = np.zeros((P, W, F), np.float32)

    # ---- what actors and the evaluation read (AssimilationEnv's names, one row per slot) ---------
    @property
    def forecast_mean(self) -> np.ndarray:
        return self.xb

    @property
    def current_obs(self) -> np.ndarray:
        return self.data["obs"][self.path, np.minimum(self.cycle, self.n_cycles - 1)]

    @property
    def online_analysis(self) -> np.ndarray:
        return self.xa_online

    def action_for(self, xa: np.ndarray, dtype=np.float32) -> np.ndarray:
        """The normalised actions (P, n) that ask for the analyses xa (P, n)."""
        if self.env_cfg.action_mode == "absolute":
            a = self.norm.norm(xa)
        else:
            a = self.norm.diff_norm(xa - self.xb)
        return a.astype(dtype)

    def enkf_rmse_vs_truth(self, path: int) -> np.ndarray:
        return rmse(self.data["analysis_mean"][path], self.data["truth"][path])

    def observations(self, slots=slice(None)) -> np.ndarray:
        return self.history[slots].copy()

    # ---- the loop ---------------------------------------------------------------------------------
    def reset(self, slots, paths) -> None:
        """Start `paths` at cycle 0 in `slots` (index arrays of equal length)."""
        slots, paths = np.atleast_1d(np.asarray(slots, np.int64)), np.atleast_1d(np.asarray(paths, np.int64))
        if not len(slots):
            return
        self.path[slots], self.cycle[slots] = paths, 0
        self._forecast_from(slots, self.data["initial_ensemble"][paths])
        self.prev[slots] = self.xb[slots]  # no analysis yet: the features' prev_analysis is xb
        features = self._features(slots)
        self.history[slots] = features[:, None, :]  # the window starts as W copies

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> BatchStep:
        """Assimilate the current cycle of the active slots (default: all) with `actions` (P, n)."""
        P, n = self.n_slots, self.n
        idx = np.arange(P) if active is None else np.flatnonzero(active)
        clip, b = self.reward_cfg.clip, self.env_cfg.obs_bound
        out = BatchStep(reward=np.full(P, np.nan), point_error=np.full((P, n), np.nan),
                        terminated=np.zeros(P, bool), truncated=np.zeros(P, bool),
                        rmse_vs_enkf=np.full(P, np.nan), rmse_vs_online=np.full(P, np.nan),
                        rmse_vs_truth=np.full(P, np.nan), enkf_rmse_vs_truth=np.full(P, np.nan),
                        analysis=np.full((P, n), np.nan), path=self.path.copy(), cycle=self.cycle.copy())
        a = np.asarray(actions, dtype=np.float64).reshape(P, n)[idx]
        path, k = self.path[idx], self.cycle[idx]
        stored_xa = self.data["analysis_mean"][path, k]
        truth = self.data["truth"][path, k]
        out.enkf_rmse_vs_truth[idx] = rmse(stored_xa, truth)

        # a broken policy output ends the slot's episode with the lowest reward
        finite = np.all(np.isfinite(a), axis=1)
        broken = idx[~finite]
        out.reward[broken], out.point_error[broken], out.terminated[broken] = 1.0 - clip, clip, True

        ok = idx[finite]
        a, path, k, stored_xa, truth = a[finite], path[finite], k[finite], stored_xa[finite], truth[finite]
        a = np.clip(a, -b, b)
        xa = self.norm.unnorm(a) if self.env_cfg.action_mode == "absolute" else self.xb[ok] + self.norm.diff_unnorm(a)
        z = self.norm.norm(xa)
        target = self.reward_cfg.target
        if target != "next_obs":  # next_obs: after the forecast below
            xa_target = {"stored": stored_xa, "online": self.xa_online[ok], "truth": truth}[target]
            out.point_error[ok] = np.abs(z - self.norm.norm(xa_target))
        out.rmse_vs_enkf[ok] = rmse(z, self.norm.norm(stored_xa))
        out.rmse_vs_online[ok] = rmse(z, self.norm.norm(self.xa_online[ok]))
        out.rmse_vs_truth[ok] = rmse(xa, truth)
        out.analysis[ok] = xa

        self.prev[ok] = xa
        self.cycle[ok] = k + 1
        last = self.cycle[ok] == self.n_cycles
        out.truncated[ok[last]] = True
        go = ~last
        cont = ok[go]
        if len(cont):
            self._forecast_from(cont, xa[go][:, None, :] + self.Aa[cont])
            if target == "next_obs":  # the forecast from xa_rl against the next cycle's y
                y_next = self.data["obs"][self.path[cont], self.cycle[cont]]
                out.point_error[cont] = next_obs_error(self.norm, self.system.obs_index, self.xb[cont], y_next, clip)
            with np.errstate(all="ignore"):
                zb = self.norm.norm(self.xb[cont])
                inside = np.all(np.isfinite(zb), axis=1) & np.all(np.abs(zb) <= self.env_cfg.halt_bound, axis=1)
            out.terminated[cont[~inside]] = True
            self.history[cont, :-1] = self.history[cont, 1:]
            self.history[cont, -1] = self._features(cont)
        out.reward[ok] = reward_of(out.point_error[ok], clip)  # NaN on a last cycle under next_obs
        return out

    # ---- internals ----------------------------------------------------------------------------------
    def _forecast_from(self, slots: np.ndarray, EE: np.ndarray) -> None:
        """Forecast the slots' ensembles EE to their current cycle and run the filter's analysis
        of every finite forecast (a diverging ensemble is a halt, not a crash)."""
        y = self.data["obs"][self.path[slots], self.cycle[slots]]
        with np.errstate(all="ignore"):
            Ef, spread, xa, Aa = self.system.cycle_batch(np.ascontiguousarray(EE), y, self.path[slots],
                                                         self.cycle[slots], self.block_columns, self.gpu,
                                                         self.draws)
            self.xb[slots] = Ef.mean(axis=1)
        self.ensemble[slots], self.spread[slots] = Ef, spread
        self.xa_online[slots], self.Aa[slots] = xa, Aa

    def _features(self, slots: np.ndarray) -> np.ndarray:
        y = self.data["obs"][self.path[slots], self.cycle[slots]]
        with np.errstate(all="ignore"):
            f = build_features(self.env_cfg.features, self.norm, self.system.obs_index, self.xb[slots], y,
                               self.spread[slots], self.prev[slots], self.ensemble[slots], self.lags)
        return clip_features(f, self.env_cfg.obs_bound).astype(np.float32)


class PathVecEnv(VecEnv):
    """The batched loop as an SB3 VecEnv: n_slots paths, one agent per path (the window, local
    and recurrent agents). A slot whose path ends (halt or last cycle) starts a path drawn from
    the active set (the curriculum) at once, SB3's auto-reset: the terminal observation goes into
    the info of its agents. rl.envs.pointwise.PointwiseVecEnv re-reads the same slots as n
    agents each."""

    agents_per_slot = 1

    def __init__(self, cfg: Config, data: dict, normaliser: Normaliser, paths: Sequence[int],
                 n_slots: int, seed: int):
        self.loop = BatchedLoop(cfg, data, normaliser, n_slots)
        # training episodes end where the last reward is known: a path's last cycle has no next
        # observation under reward.target next_obs, so its episodes end one cycle before it
        self.horizon = self.loop.n_cycles - (cfg.reward.target == "next_obs")
        self.n, self.n_slots = cfg.model.n, n_slots
        self.active_paths = list(paths)
        self.path_rng = np.random.default_rng(seed)  # the slots' path choice
        self.render_mode = None
        super().__init__(n_slots * self.agents_per_slot, *self._spaces(cfg))
        self._returns = np.zeros(n_slots)
        self._lengths = np.zeros(n_slots, dtype=int)
        self._t0 = np.full(n_slots, time.perf_counter())
        self._actions = None
        self.step_seconds = 0.0

    # ---- what differs between one agent per path and one per point ---------------------------------
    def _spaces(self, cfg: Config):
        F = sum(feature_sizes(cfg)[f] for f in cfg.env.features)
        b = cfg.env.obs_bound
        return (gym.spaces.Box(-b, b, (cfg.env.window, F), np.float32),
                gym.spaces.Box(-b, b, (cfg.model.n,), np.float32))

    def _agent_observations(self, slot_obs: np.ndarray) -> np.ndarray:
        """(P, W, F) slot observations -> (num_envs, *observation_space.shape)."""
        return slot_obs

    def _rewards(self, res: BatchStep) -> np.ndarray:
        return res.reward.astype(np.float32)

    # ---- what the curriculum and the diagnostics call (through env_method) ---------------------------
    def set_active_paths(self, paths: Sequence[int]) -> None:
        self.active_paths = list(paths)

    def pop_step_seconds(self) -> float:
        s, self.step_seconds = self.step_seconds, 0.0
        return s

    # ---- VecEnv API ------------------------------------------------------------------------------------
    def reset(self):
        self._start(np.arange(self.n_slots))
        return self._agent_observations(self.loop.observations())

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.n_slots, self.n)

    def step_wait(self):
        t0 = time.perf_counter()
        res = self.loop.step(self._actions)
        k = self.agents_per_slot
        self._returns += res.reward
        self._lengths += 1
        truncated = res.truncated | ((self.loop.cycle >= self.horizon) & ~res.terminated)
        done = res.terminated | truncated
        obs = self._agent_observations(self.loop.observations())
        infos = self._infos(res, done, truncated, obs)
        ended = np.flatnonzero(done)
        if len(ended):
            self._start(ended)
            fresh = self._agent_observations(self.loop.observations(ended))
            obs.reshape(self.n_slots, k, *obs.shape[1:])[ended] = fresh.reshape(len(ended), k, *obs.shape[1:])
        self.step_seconds += time.perf_counter() - t0
        return obs, self._rewards(res), np.repeat(done, k), infos

    def _infos(self, res: BatchStep, done: np.ndarray, truncated: np.ndarray, obs: np.ndarray) -> list[dict]:
        """One dict per agent; the first agent of a slot carries the path's diagnostics and its
        episode (info["episode_owner"]), so episodes are counted per path."""
        k = self.agents_per_slot
        infos: list[dict] = []
        now = time.perf_counter()
        terminal = obs.reshape(self.n_slots, k, *obs.shape[1:])
        for m in range(self.n_slots):
            owner = {"path": int(res.path[m]), "cycle": int(res.cycle[m]), "halted": bool(res.terminated[m]),
                     "reward_global": float(res.reward[m]), "episode_owner": True,
                     "rmse_vs_enkf": float(res.rmse_vs_enkf[m]), "rmse_vs_online": float(res.rmse_vs_online[m]),
                     "rmse_vs_truth": float(res.rmse_vs_truth[m]),
                     "enkf_rmse_vs_truth": float(res.enkf_rmse_vs_truth[m])}
            slot = [owner] + [{"episode_owner": False} for _ in range(k - 1)]
            if done[m]:
                owner["episode"] = {"r": float(self._returns[m]), "l": int(self._lengths[m]),
                                    "t": round(now - self._t0[m], 6)}
                for i, d in enumerate(slot):
                    d["terminal_observation"] = terminal[m, i].copy()
                    d["TimeLimit.truncated"] = bool(truncated[m] and not res.terminated[m])
            infos.extend(slot)
        return infos

    def _start(self, slots: np.ndarray) -> None:
        paths = self.path_rng.choice(self.active_paths, size=len(slots))
        self.loop.reset(slots, paths)
        self._returns[slots], self._lengths[slots] = 0.0, 0
        self._t0[slots] = time.perf_counter()

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
        """Called once on the whole vectorised env (its agents share the slots): a list of one
        result, so a sum over the returned list counts the env once."""
        return [getattr(self, method_name)(*method_args, **method_kwargs)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False for _ in self._get_indices(indices)]


def ensemble_filter_runs(cfg: Config, data: dict, normaliser: Normaliser, paths: Sequence[int]) -> dict:
    """The env's own ensemble filter (env.ensemble_filter) run along `paths`, its own analysis mean
    as every action: that filter's run (tests/test_beyond.py), from the stored truth, observations
    and initial ensembles. Returns a copy of data's DATA_KEYS arrays whose forecast_mean,
    forecast_spread and analysis_mean on `paths` are that filter's (other paths: the stored run's),
    so that cloning (rl/agents/clone.py) reads the features the tuned ensemble hands out."""
    paths = np.asarray(list(paths), np.int64)
    out = {k: np.array(data[k], copy=True) for k in DATA_KEYS}
    loop = BatchedLoop(cfg, data, normaliser, len(paths))
    loop.reset(np.arange(len(paths)), paths)
    for k in range(loop.n_cycles):
        out["forecast_mean"][paths, k] = loop.xb
        out["forecast_spread"][paths, k] = loop.spread
        out["analysis_mean"][paths, k] = loop.xa_online
        res = loop.step(loop.action_for(loop.xa_online, np.float64))
        if res.terminated.any():
            raise DataError(f"env.ensemble_filter {cfg.env.ensemble_filter}: path "
                            f"{int(res.path[res.terminated][0])} left the halt bounds at cycle {k}: "
                            f"no run of that filter to clone")
    return out
