"""The pointwise agent: every grid point of every path is an agent with its own reward.

The local agent (rl/agents/policy.py) shares one network over the grid points but receives one scalar
reward per cycle for n simultaneous decisions, so PPO cannot tell which point's choice made the
reward better or worse. Here the closed-loop env is re-read as a multi-agent problem with
parameter sharing (as PettingZoo/SuperSuit vectorise it): PointwiseVecEnv is an SB3 VecEnv of
M paths x n points = M n agents, stepped together,

    agent (path slot m, point i)
    observation  the window (W, k (2S+1)) of the k per-variable features of variables
                 i-S .. i+S (cyclic), gathered from the path's AssimilationEnv observation
    action       the point's normalised analysis (increment or absolute, as env.action_mode)
    reward       r_i = 1 - clip(|norm(xa_rl)_i - norm(xa_target)_i|, 0, reward.clip)

so plain SB3 PPO with one small network (an LSTM over the point's window, or an MLP) learns
from M n credit signals per cycle. The global reward 1 - clip(RMSE) is still computed by the
env and reported (info["reward_global"], the episode return in info["episode"]), so runs of every
agent kind are comparable. All n agents of a path end their episode together; only point 0 of
a path carries the path's episode (info["episode_owner"]) so the curriculum and the episode
statistics count path-episodes, not agent-episodes.

Evaluation drives the ordinary AssimilationEnv: rl.agents.actors.pointwise_actor gathers the same per-point
windows from its observation (gather_points), so the deployed policy sees exactly what it saw in
training.
"""
from __future__ import annotations

import time
from typing import Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from rl.config import Config
from rl.envs.assimilation import AssimilationEnv, feature_sizes
from rl.envs.normalisation import Normaliser


def stencil_neighbours(n: int, stencil: int) -> np.ndarray:
    """(n, 2S+1) indices of variables i-S .. i+S on the ring."""
    return (np.arange(n)[:, None] + np.arange(-stencil, stencil + 1)[None, :]) % n


def gather_points(obs: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Env observation(s) (..., W, k n) -> per-point windows (..., n, W, k (2S+1)).

    Point i's row w holds, feature block after feature block, the values of variables
    neighbours[i] in window row w: the same order as rl.agents.policy.LocalLstmExtractor."""
    *lead, W, F = obs.shape
    n = neighbours.shape[0]
    k = F // n
    x = obs.reshape(*lead, W, k, n)[..., neighbours]               # (..., W, k, n, 2S+1)
    x = np.moveaxis(x, -2, -4)                                      # (..., n, W, k, 2S+1)
    return x.reshape(*lead, n, W, k * neighbours.shape[1])


def point_observation_space(cfg: Config) -> gym.spaces.Box:
    k = sum(feature_sizes(cfg)[f] for f in cfg.env.features) // cfg.model.n
    b = cfg.env.obs_bound
    return gym.spaces.Box(-b, b, (cfg.env.window, k * (2 * cfg.agent.stencil + 1)), np.float32)


def point_action_space(cfg: Config) -> gym.spaces.Box:
    b = cfg.env.obs_bound
    return gym.spaces.Box(-b, b, (1,), np.float32)


def point_rewards(point_error: np.ndarray, clip: float) -> np.ndarray:
    """r_i = 1 - clip(|error_i|, 0, clip), in [1 - clip, 1]."""
    return 1.0 - np.minimum(np.abs(point_error), clip)


class PointwiseVecEnv(VecEnv):
    """M closed-loop paths x n grid points as one SB3 VecEnv of M n agents (parameter sharing).

    Agent j is point j % n of path slot j // n. Each slot holds an AssimilationEnv; a slot whose
    path ends (halt or last cycle) starts a new path from the active set at once (SB3's
    auto-reset: the terminal observation goes into the info of each of its agents).
    """

    def __init__(self, cfg: Config, data: dict, normaliser: Normaliser, paths: Sequence[int],
                 n_paths: int, seed: int):
        self.n = cfg.model.n
        self.n_slots = n_paths
        self.clip = cfg.reward.clip
        self.neighbours = stencil_neighbours(self.n, cfg.agent.stencil)
        self.envs = [AssimilationEnv(cfg, data, normaliser, paths) for _ in range(n_paths)]
        for m, env in enumerate(self.envs):
            env.reset(seed=seed + m)  # seeds each slot's path choice
        self.render_mode = None
        super().__init__(n_paths * self.n, point_observation_space(cfg), point_action_space(cfg))
        self._obs = np.zeros((n_paths, self.n) + self.observation_space.shape, np.float32)
        self._returns = np.zeros(n_paths)
        self._lengths = np.zeros(n_paths, dtype=int)
        self._t0 = [time.perf_counter()] * n_paths
        self._actions = None
        self.step_seconds = 0.0

    # ---- what the curriculum and the diagnostics call (through env_method) ---------------------
    def set_active_paths(self, paths: Sequence[int]) -> None:
        for env in self.envs:
            env.set_active_paths(paths)

    def pop_step_seconds(self) -> float:
        s, self.step_seconds = self.step_seconds, 0.0
        return s

    # ---- VecEnv API ---------------------------------------------------------------------------
    def reset(self):
        for m, env in enumerate(self.envs):
            self._reset_slot(m)
        return self._obs.reshape(self.num_envs, *self.observation_space.shape).copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.n_slots, self.n)

    def step_wait(self):
        t0 = time.perf_counter()
        rewards = np.zeros((self.n_slots, self.n), np.float32)
        dones = np.zeros((self.n_slots, self.n), bool)
        infos: list[dict] = []
        for m, env in enumerate(self.envs):
            obs, reward_global, terminated, truncated, info = env.step(self._actions[m])
            rewards[m] = point_rewards(info["point_error"], self.clip)
            self._returns[m] += reward_global
            self._lengths[m] += 1
            done = terminated or truncated
            dones[m] = done
            owner = {"path": info["path"], "cycle": info["cycle"], "halted": info["halted"],
                     "reward_global": reward_global, "episode_owner": True}
            for key in ("rmse_vs_enkf", "rmse_vs_online", "rmse_vs_truth", "enkf_rmse_vs_truth"):
                owner[key] = info[key]
            slot_infos = [owner] + [{"episode_owner": False} for _ in range(self.n - 1)]
            if done:
                terminal = gather_points(obs, self.neighbours)
                owner["episode"] = {"r": float(self._returns[m]), "l": int(self._lengths[m]),
                                    "t": round(time.perf_counter() - self._t0[m], 6)}
                for i, d in enumerate(slot_infos):
                    d["terminal_observation"] = terminal[i]
                    d["TimeLimit.truncated"] = bool(truncated and not terminated)
                self._reset_slot(m)
            else:
                self._obs[m] = gather_points(obs, self.neighbours)
            infos.extend(slot_infos)
        self.step_seconds += time.perf_counter() - t0
        return (self._obs.reshape(self.num_envs, *self.observation_space.shape).copy(),
                rewards.reshape(-1), dones.reshape(-1), infos)

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name, *method_args, indices=None, **method_kwargs):
        """Called once on the whole vectorised env (its agents share the paths): a list of one
        result, so a sum over the returned list counts the env once."""
        return [getattr(self, method_name)(*method_args, **method_kwargs)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False for _ in self._get_indices(indices)]

    # ---- internals ------------------------------------------------------------------------------
    def _reset_slot(self, m: int) -> None:
        obs, _ = self.envs[m].reset()
        self._obs[m] = gather_points(obs, self.neighbours)
        self._returns[m], self._lengths[m] = 0.0, 0
        self._t0[m] = time.perf_counter()
