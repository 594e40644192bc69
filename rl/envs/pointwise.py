"""The pointwise agent: every grid point of every path is an agent with its own reward.

The local agent (rl/agents/policy.py) shares one network over the grid points but receives one scalar
reward per cycle for n simultaneous decisions, so PPO cannot tell which point's choice made the
reward better or worse. Here the closed-loop env is re-read as a multi-agent problem with
parameter sharing (as PettingZoo/SuperSuit vectorise it): PointwiseVecEnv is an SB3 VecEnv of
M paths x n points = M n agents, stepped together,

    agent (path slot m, point i)
    observation  the window (W, k (2S+1)) of the k per-variable features of variables
                 i-S .. i+S (cyclic), gathered from its path slot's observation (rl.envs.batched)
    action       the point's normalised analysis (increment or absolute, as env.action_mode)
    reward       r_i = 1 - clip(|norm(xa_rl)_i - norm(xa_target)_i|, 0, reward.clip)

so plain SB3 PPO with one small network (an LSTM over the point's window, or an MLP) learns
from M n credit signals per cycle. The global reward 1 - clip(RMSE) is still computed by the
env and reported (info["reward_global"], the episode return in info["episode"]), so runs of every
agent kind are comparable. All n agents of a path end their episode together; only point 0 of
a path carries the path's episode (info["episode_owner"]) so the curriculum and the episode
statistics count path-episodes, not agent-episodes.

Evaluation drives the same batched loop: rl.agents.actors.pointwise_actor gathers the same
per-point windows from the slots' observations (gather_points), so the deployed policy sees
exactly what it saw in training.
"""
from __future__ import annotations

from typing import Sequence

import gymnasium as gym
import numpy as np

from rl.config import Config
from rl.envs.assimilation import feature_sizes
from rl.envs.batched import PathVecEnv
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


class PointwiseVecEnv(PathVecEnv):
    """M closed-loop paths x n grid points as one SB3 VecEnv of M n agents (parameter sharing).

    Agent j is point j % n of path slot j // n. The slots are those of the batched loop
    (rl.envs.batched.PathVecEnv: path choice, auto-reset, episode bookkeeping); here each slot's
    observation is cut into its n points' stencil windows and each point gets its own reward.
    """

    def __init__(self, cfg: Config, data: dict, normaliser: Normaliser, paths: Sequence[int],
                 n_paths: int, seed: int):
        self.agents_per_slot = cfg.model.n
        self.clip = cfg.reward.clip
        self.neighbours = stencil_neighbours(cfg.model.n, cfg.agent.stencil)
        super().__init__(cfg, data, normaliser, paths, n_paths, seed)

    def _spaces(self, cfg: Config):
        return point_observation_space(cfg), point_action_space(cfg)

    def _agent_observations(self, slot_obs: np.ndarray) -> np.ndarray:
        x = gather_points(slot_obs, self.neighbours)  # (P, n, W, k (2S+1))
        return x.reshape(-1, *x.shape[2:])

    def _rewards(self, res) -> np.ndarray:
        return point_rewards(res.point_error, self.clip).reshape(-1).astype(np.float32)
