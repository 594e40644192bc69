"""Independent re-computations the RL tests compare the code's records with: a trained policy
stepped through the closed-loop env by hand, and a policy's error on the stored (oracle) pairs.

Written apart from rl/agents/actors.py and rl/training/evaluate.py on purpose: a record that
agrees with these was computed from the model and the data it claims, not merely by the same
code twice.
"""
from __future__ import annotations

import numpy as np

from rl.envs.assimilation import AssimilationEnv, reference_actions, reference_observations
from rl.envs.pointwise import gather_points, stencil_neighbours


def policy_steps(model, cfg):
    """obs -> the deterministic action (n,) of the model, one call per cycle of one episode (the
    recurrent agent's LSTM state carried from call to call)."""
    memory = {"state": None, "start": True}
    neighbours = stencil_neighbours(cfg.model.n, cfg.agent.stencil)

    def act(obs):
        if cfg.agent.kind == "pointwise":
            a, _ = model.predict(gather_points(obs, neighbours), deterministic=True)
            return a.reshape(-1)
        if cfg.agent.kind == "recurrent":
            a, memory["state"] = model.predict(obs[None], state=memory["state"],
                                               episode_start=np.array([memory["start"]]), deterministic=True)
            memory["start"] = False
            return a[0]
        a, _ = model.predict(obs, deterministic=True)
        return a
    return act


def closed_loop(model, cfg, data, norm, path: int, burn_in: int) -> dict:
    """The deterministic policy on one path, stepped by hand: cycles completed, total reward
    (every step, the halting one too), and cycle means after burn_in over the completed cycles
    (all of them when it halted within the burn-in) of the reward, the normalised RMSE against
    the stored EnKF analysis and the RMSE against the truth, both recomputed from the analyses."""
    env = AssimilationEnv(cfg, data, norm, [path])
    obs, _ = env.reset(options={"path": path})
    act = policy_steps(model, cfg)
    rewards, vs_enkf, vs_truth = [], [], []
    for k in range(env.n_cycles):
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        rewards.append(reward)
        if terminated:
            break
        xa = env.last_analysis
        vs_enkf.append(np.sqrt(np.mean((norm.norm(xa) - norm.norm(data["analysis_mean"][path, k])) ** 2)))
        vs_truth.append(np.sqrt(np.mean((xa - data["truth"][path, k]) ** 2)))
    c = len(vs_enkf)
    b = burn_in if c > burn_in else 0
    return {"cycles_completed": c, "total_reward": float(np.sum(rewards)),
            "mean_reward": float(np.mean(rewards[b:max(c, 1)])),
            "rmse_norm_vs_enkf": float(np.mean(vs_enkf[b:c])), "rmse_vs_truth": float(np.mean(vs_truth[b:c]))}


def oracle_rmse(model, cfg, norm, data, paths: list[int]) -> float:
    """RMSE (normalised units) of the model's deterministic actions against the actions that ask
    for the stored analysis, along the stored runs of `paths` (what behaviour cloning fits)."""
    sq = []
    for p in paths:
        act = policy_steps(model, cfg)
        obs = reference_observations(cfg, norm, data, p)
        actions = np.stack([act(o) for o in obs])
        sq.append(np.mean((actions - reference_actions(cfg, norm, data, p)) ** 2))
    return float(np.sqrt(np.mean(sq)))


def copy_obs_error(cfg, norm, data, paths: list[int], target: str = "analysis_mean") -> float:
    """RMSE (normalised) of xa = y where observed, xb elsewhere, against data[target] along the
    stored runs of `paths`."""
    idx = np.array(cfg.obs_index)
    sq = []
    for p in paths:
        xa = data["forecast_mean"][p].copy()
        xa[:, idx] = data["obs"][p]
        sq.append(np.mean(((xa - data[target][p]) / norm.half_range) ** 2))
    return float(np.sqrt(np.mean(sq)))
