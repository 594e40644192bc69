"""Behaviour cloning warm start: fit the policy mean to the stored EnKF analyses.

Inputs are the observations the env hands out along each stored training path when the agent
emits the stored xa (rl.envs.assimilation.reference_observations), targets the actions that ask for the stored
xa (rl.envs.assimilation.reference_actions); the loss is the MSE of the Gaussian policy's mean, in normalised
units. The result, before any PPO, is the "supervised" policy the evaluation reports: the same
network and features as the RL agent, run in the same closed loop.

window/local agent: samples are single windows, shuffled. pointwise agent: the same cycles, each
cycle's n points' windows (rl.envs.pointwise) through the shared network, batch_size in cycles. recurrent agent: samples are whole paths,
the LSTM state starting at zero as in an episode.
"""
from __future__ import annotations

import numpy as np
import torch as th

from rl.config import Config
from rl.envs.assimilation import reference_actions, reference_observations
from rl.envs.normalisation import Normaliser
from rl.agents.policy import stencil_windows


def cloning_data(cfg: Config, norm: Normaliser, data: dict, paths: list[int]):
    """(obs (P, K, W, F), actions (P, K, n)) float32 arrays for the given paths."""
    obs = np.stack([reference_observations(cfg, norm, data, p) for p in paths])
    act = np.stack([reference_actions(cfg, norm, data, p) for p in paths]).astype(np.float32)
    return obs, act


def _policy_mean(policy, obs: th.Tensor, recurrent: bool, neighbours: th.Tensor | None = None) -> th.Tensor:
    """Mean action for obs (B, K, W, F) (recurrent: B whole sequences) or (B, W, F); with
    neighbours (pointwise agent) each cycle's n points' windows go through the policy: (B, n)."""
    if neighbours is not None:
        x = stencil_windows(obs, neighbours)
        return policy.get_distribution(x).distribution.mean.reshape(obs.shape[0], neighbours.shape[0])
    if not recurrent:
        return policy.get_distribution(obs).distribution.mean
    B, K = obs.shape[:2]
    flat = obs.reshape(B * K, *obs.shape[2:])  # sequence-major, as the recurrent buffer lays it out
    n_layers, hidden = policy.lstm_actor.num_layers, policy.lstm_actor.hidden_size
    zeros = th.zeros(n_layers, B, hidden, device=obs.device)
    starts = th.zeros(B, K, device=obs.device)
    starts[:, 0] = 1.0
    dist, _ = policy.get_distribution(flat, (zeros, zeros), starts.reshape(-1))
    return dist.distribution.mean.reshape(B, K, -1)


def split_training_paths(cfg: Config) -> tuple[list[int], list[int]]:
    """(fit paths, held-out paths): the last 10% of the training paths (at least one) are held out."""
    first, last = cfg.paths.train_paths
    paths = list(range(first, last + 1))
    n_val = max(1, len(paths) // 10) if len(paths) > 1 else 0
    return paths[:len(paths) - n_val], paths[len(paths) - n_val:] or paths


def copy_obs_rmse(cfg: Config, norm: Normaliser, data: dict, paths: list[int]) -> float:
    """RMSE_norm of xa = y (xb where unobserved) against the reward's target along the stored
    runs of `paths`: the error a policy that has learnt nothing yet has left. reward.target
    next_obs has no target state and trains without the truth: the stored analyses set the scale."""
    target = data["truth"] if cfg.reward.target == "truth" else data["analysis_mean"]
    obs_index = np.array(cfg.obs_index)
    sq = []
    for p in paths:
        xa = data["forecast_mean"][p].copy()
        xa[:, obs_index] = data["obs"][p]
        sq.append(np.mean((norm.norm(xa) - norm.norm(target[p])) ** 2))
    return float(np.sqrt(np.mean(sq)))


def behaviour_clone(model, cfg: Config, norm: Normaliser, data: dict, log=print) -> dict:
    """Train model.policy's mean on the stored pairs of the training paths, in place.

    The last 10% of the training paths (at least one) are held out to report a validation RMSE.
    Returns {"train_rmse": [...], "val_rmse": [...]} per epoch (normalised units).
    """
    pre = cfg.pretrain
    train_paths, val_paths = split_training_paths(cfg)
    if val_paths == train_paths:  # a single training path: nothing to hold out
        val_paths = []
    recurrent = cfg.agent.kind == "recurrent"
    policy, device = model.policy, model.device
    neighbours = None
    if cfg.agent.kind == "pointwise":
        from rl.envs.pointwise import stencil_neighbours
        neighbours = th.as_tensor(stencil_neighbours(cfg.model.n, cfg.agent.stencil), device=device)
    obs, act = cloning_data(cfg, norm, data, train_paths)
    if not recurrent:  # single windows
        obs, act = obs.reshape(-1, *obs.shape[2:]), act.reshape(-1, act.shape[-1])
    obs_t, act_t = th.as_tensor(obs, device=device), th.as_tensor(act, device=device)
    val = None
    if val_paths:
        vo, va = cloning_data(cfg, norm, data, val_paths)
        if not recurrent:
            vo, va = vo.reshape(-1, *vo.shape[2:]), va.reshape(-1, va.shape[-1])
        val = th.as_tensor(vo, device=device), th.as_tensor(va, device=device)
    optimiser = th.optim.Adam(policy.parameters(), lr=pre.learning_rate)
    rng = np.random.default_rng(cfg.train.seed)
    history = {"train_rmse": [], "val_rmse": []}
    batch = pre.batch_size if not recurrent else max(1, pre.batch_size // obs.shape[1])
    policy.set_training_mode(True)
    for epoch in range(pre.epochs):
        order = rng.permutation(len(obs_t))
        sq, count = 0.0, 0
        for i in range(0, len(order), batch):
            idx = th.as_tensor(order[i:i + batch], device=device)
            loss = th.mean((_policy_mean(policy, obs_t[idx], recurrent, neighbours) - act_t[idx]) ** 2)
            optimiser.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), cfg.ppo.max_grad_norm)
            optimiser.step()
            sq += loss.item() * len(idx)
            count += len(idx)
        history["train_rmse"].append((sq / count) ** 0.5)
        if val is not None:
            with th.no_grad():
                vmse = float(th.mean((_policy_mean(policy, val[0], recurrent, neighbours) - val[1]) ** 2))
            history["val_rmse"].append(vmse ** 0.5)
        log(f"pretrain epoch {epoch + 1}/{pre.epochs}: rmse train {history['train_rmse'][-1]:.5f}"
            + (f", held-out paths {history['val_rmse'][-1]:.5f}" if val is not None else ""))
    policy.set_training_mode(False)
    return history
