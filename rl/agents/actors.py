"""Actors: everything that can drive the closed loop, the learned policies and the baselines.

An actor maps (observations, loop) to normalised actions, so the learned policy and the
baselines run in the very same closed loop (rl.training.evaluate). Observations and actions
carry a leading slot axis when `loop` is the batched loop (rl.envs.batched: (P, W, F) -> (P, n))
and none on a single AssimilationEnv ((W, F) -> (n,)); the loop's forecast_mean, current_obs
and online_analysis have the same leading axes.
    rl            the deterministic policy (its LSTM state carried over the episode)
    no_da         xa = xb (no analysis)
    copy_obs      xa = y where observed, xb elsewhere
    enkf_replica  the EnKF analysis of the env's own forecast ensemble, sent through the same
                  float32 action path: the floor any imitator can reach against the stored xa
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from rl.config import Config
from rl.envs.assimilation import AssimilationEnv
from rl.envs.batched import BatchedLoop
from rl.envs.pointwise import gather_points, stencil_neighbours

Actor = Callable[[np.ndarray, "AssimilationEnv | BatchedLoop"], np.ndarray]


def policy_actor(model) -> Actor:
    """The deterministic policy; the recurrent state restarts with each reset (rl.training.evaluate
    resets the actor at the start of its paths)."""
    memory = {"state": None, "start": True}
    rank = len(model.observation_space.shape)

    def act(obs, env):
        batch = obs.shape[0] if obs.ndim > rank else 1
        action, memory["state"] = model.predict(
            obs, state=memory["state"], episode_start=np.full(batch, memory["start"]), deterministic=True)
        memory["start"] = False
        return action

    def reset():
        memory.update(state=None, start=True)

    act.reset = reset
    return act


def pointwise_actor(model, neighbours: np.ndarray):
    """Closed-loop actor for rl.training.evaluate: observation(s) (..., W, k n) -> the n points'
    windows -> the shared deterministic policy -> the analysis action(s) (..., n)."""
    def act(obs, env):
        points = gather_points(obs, neighbours)
        action, _ = model.predict(points.reshape(-1, *points.shape[-2:]), deterministic=True)
        return action.reshape(obs.shape[:-2] + (neighbours.shape[0],))
    return act


def actor_factory(cfg: Config):
    """model -> closed-loop actor on the AssimilationEnv."""
    if cfg.agent.kind == "pointwise":
        neighbours = stencil_neighbours(cfg.model.n, cfg.agent.stencil)
        return lambda model: pointwise_actor(model, neighbours)
    return policy_actor


def no_da_actor(obs, env):
    return env.action_for(env.forecast_mean)


def copy_obs_actor(obs, env):
    xa = env.forecast_mean.copy()
    xa[..., env.system.obs_index] = env.current_obs
    return env.action_for(xa)


def enkf_replica_actor(obs, env):
    return env.action_for(env.online_analysis)


BASELINES: dict[str, Actor] = {"no_da": no_da_actor, "copy_obs": copy_obs_actor,
                               "enkf_replica": enkf_replica_actor}
