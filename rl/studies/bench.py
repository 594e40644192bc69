"""The RL part of `enkfrl bench`, measured in the same run as the kernels:

    e. closed-loop env steps/s (one process, oracle actions) on the experiment's data
    f. the pointwise agent: env-only path-steps/s of its vectorised env, PPO path-steps/s (LSTM and
       MLP per point), where its wall time goes; one batched numba forecast of all paths' members
       against one call per path; the local agent's PPO steps/s (its env.step share)
    g. RecurrentPPO steps/s with upstream's RecurrentActorCriticPolicy against ours
       (FastRecurrentPolicy), same config and seed, on L96_1 (1000-cycle episodes) and on
       smoke (60-cycle episodes: many episode starts per minibatch, upstream's slow case)

Data: data/<E>/ when it matches the config, else computed in memory (rl.studies.ablate.reference_data).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch as th
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from rl.config import load_config
from rl.studies.ablate import reference_data
from enkf.system import System
from rl.envs.assimilation import AssimilationEnv
from rl.envs.pointwise import PointwiseVecEnv
from rl.agents.policy import FastRecurrentPolicy, build_model


def _env_steps_per_s(cfg, data, norm, steps: int) -> float:
    env = AssimilationEnv(cfg, data, norm, [cfg.paths.train_paths[0]])
    path = cfg.paths.train_paths[0]
    env.reset(options={"path": path})
    t0 = time.perf_counter()
    for i in range(steps):
        k = env.cycle
        _, _, term, trunc, _ = env.step(env.action_for(data["analysis_mean"][path, k]))
        if term or trunc:
            env.reset(options={"path": path})
    return steps / (time.perf_counter() - t0)


def _ppo_speed(cfg, data, norm, steps: int, policy_class=None) -> tuple[float, float]:
    """(steps/s, share of wall time inside env.step) of model.learn(steps), one agent per env."""
    first = cfg.paths.train_paths[0]
    envs = [AssimilationEnv(cfg, data, norm, [first]) for _ in range(cfg.train.n_envs)]
    venv = DummyVecEnv([lambda e=e: e for e in envs])
    if policy_class is None:
        model = build_model(cfg, venv, None, "cpu", cfg.train.seed)
    else:
        a = cfg.agent
        model = RecurrentPPO(policy_class, venv, seed=cfg.train.seed, device="cpu", n_steps=cfg.ppo.n_steps,
                             batch_size=cfg.ppo.batch_size, n_epochs=cfg.ppo.n_epochs,
                             policy_kwargs=dict(lstm_hidden_size=a.lstm_hidden, n_lstm_layers=a.lstm_layers,
                                                net_arch=dict(pi=a.pi_arch, vf=a.vf_arch),
                                                log_std_init=-3.5))
    for e in envs:
        e.pop_step_seconds()
    t0 = time.perf_counter()
    model.learn(steps)
    wall = time.perf_counter() - t0
    return model.num_timesteps / wall, sum(e.pop_step_seconds() for e in envs) / wall


class _Phases(BaseCallback):
    """Wall time of the rollouts (env + policy forward) vs the PPO updates."""

    def __init__(self):
        super().__init__()
        self.rollout_s, self._t = 0.0, None

    def _on_rollout_start(self) -> None:
        self._t = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.rollout_s += time.perf_counter() - self._t

    def _on_step(self) -> bool:
        return True


def pointwise_speed(cfg, data, norm, rollouts: int, env_seconds: float, device: str = "cpu") -> dict:
    """The pointwise agent on its vectorised env (M = train.paths_per_env paths x n points):
    the env-only limit (fixed zero action), PPO path-steps/s over `rollouts` rollouts, and
    where PPO's wall time goes (env.step, policy forward while collecting, PPO updates)."""
    M, n = cfg.train.paths_per_env, cfg.model.n
    paths = list(range(cfg.paths.train_paths[0], cfg.paths.train_paths[0] + M))
    venv = PointwiseVecEnv(cfg, data, norm, paths, M, cfg.train.seed)
    venv.reset()
    action = np.zeros((venv.num_envs, 1), np.float32)
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < env_seconds:
        venv.step(action)
        k += 1
    env_only = k * M / (time.perf_counter() - t0)
    model = build_model(cfg, venv, None, device, cfg.train.seed)
    phases = _Phases()
    venv.pop_step_seconds()
    t0 = time.perf_counter()
    model.learn(rollouts * cfg.ppo.n_steps * M * n, callback=phases)
    wall = time.perf_counter() - t0
    env_s = venv.pop_step_seconds()
    ppo = model.num_timesteps / n / wall
    return {"paths_per_env": M, "point_net": cfg.agent.point_net, "env_only_path_steps_per_s": env_only,
            "ppo_path_steps_per_s": ppo, "ratio_to_env_only": ppo / env_only,
            "share_env_step": env_s / wall, "share_policy_forward_in_rollouts": (phases.rollout_s - env_s) / wall,
            "share_ppo_updates": (wall - phases.rollout_s) / wall, "torch_threads": th.get_num_threads(),
            "device": device}


def batched_forecast(cfg, data, norm, M: int, repeats: int) -> dict:
    """One numba call advancing M paths x N members (columns side by side) against M calls of N."""
    system = System.from_config(cfg)
    ens = [data["initial_ensemble"][p] for p in range(1, 1 + M)]
    blocks = [np.ascontiguousarray(e.T) for e in ens]
    wide = np.ascontiguousarray(np.concatenate(blocks, axis=1))
    system.forecast_columns(wide.copy())  # compiled / warm
    t0 = time.perf_counter()
    for _ in range(repeats):
        for b in blocks:
            system.forecast_columns(b.copy())
    separate = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    for _ in range(repeats):
        system.forecast_columns(wide.copy())
    batched = (time.perf_counter() - t0) / repeats
    return {"paths": M, "separate_s": separate, "batched_s": batched, "speedup": separate / batched}


def run_rl_bench(config_path: str, quick: bool, echo, data_root: Path = Path("data")) -> dict:
    th.set_num_threads(1)
    res, rows = {}, []
    cfg = load_config(config_path, "L96_1")
    data, norm = reference_data(cfg, data_root)
    res["env_steps_per_s"] = _env_steps_per_s(cfg, data, norm, 500 if quick else 3000)
    rows.append(("L96_1 closed-loop env.step, 1 process", f"{res['env_steps_per_s']:,.0f}", "steps/s"))

    pw = pointwise_speed(cfg, data, norm, rollouts=1 if quick else 4, env_seconds=1 if quick else 5)
    res["pointwise"] = pw
    rows.append((f"L96_1 pointwise env, {pw['paths_per_env']} paths x 20 points, fixed action (env-only limit)",
                 f"{pw['env_only_path_steps_per_s']:,.0f}", "path-steps/s"))
    rows.append((f"L96_1 pointwise PPO ({pw['point_net']}, {pw['torch_threads']} torch thread)",
                 f"{pw['ppo_path_steps_per_s']:,.0f} ({pw['ratio_to_env_only']:.0%} of env-only)", "path-steps/s"))
    rows.append(("  its wall time: env.step / policy forward / PPO updates",
                 f"{pw['share_env_step']:.0%} / {pw['share_policy_forward_in_rollouts']:.0%} / {pw['share_ppo_updates']:.0%}", ""))
    mlp = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, point_net="mlp"))
    pw_mlp = pointwise_speed(mlp, data, norm, rollouts=1 if quick else 4, env_seconds=1 if quick else 5)
    res["pointwise_mlp"] = pw_mlp
    rows.append(("L96_1 pointwise PPO (mlp)", f"{pw_mlp['ppo_path_steps_per_s']:,.0f} "
                 f"({pw_mlp['ratio_to_env_only']:.0%} of env-only)", "path-steps/s"))
    bf = batched_forecast(cfg, data, norm, cfg.train.paths_per_env, 3 if quick else 20)
    res["pointwise_batched_forecast"] = bf
    rows.append((f"forecast of {bf['paths']} paths: one numba call of all columns vs {bf['paths']} calls",
                 f"{bf['speedup']:.2f}x", "speed-up"))

    local = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="local", log_std_init=-3.5),
                                ppo=dataclasses.replace(cfg.ppo, n_steps=1024, batch_size=256, n_epochs=10))
    steps = 2 * local.ppo.n_steps * local.train.n_envs
    sps, share = _ppo_speed(local, data, norm, steps // 2 if quick else steps)
    res["ppo_local"] = {"agent": "local", "steps_per_s": sps, "env_step_share": share}
    rows.append((f"L96_1 PPO, local agent (one reward per cycle), {local.train.n_envs} envs", f"{sps:,.0f}", "path-steps/s"))
    rows.append(("  share of its wall time inside env.step", f"{share:.0%}", ""))

    for exp in ("L96_1", "smoke"):
        base = load_config(config_path, exp)
        rcfg = dataclasses.replace(
            base, env=dataclasses.replace(base.env, window=1),
            agent=dataclasses.replace(base.agent, kind="recurrent", lstm_hidden=256, pi_arch=[256, 256],
                                      vf_arch=[256, 256], log_std_init=-3.5),
            ppo=dataclasses.replace(base.ppo, n_steps=128, batch_size=128, n_epochs=4),
            train=dataclasses.replace(base.train, n_envs=4))
        d, nm = reference_data(rcfg, data_root)
        n = 512 if quick else 2048
        up, _ = _ppo_speed(rcfg, d, nm, n, RecurrentActorCriticPolicy)
        ours, _ = _ppo_speed(rcfg, d, nm, n, FastRecurrentPolicy)
        res[f"recurrent_{exp}"] = {"upstream_steps_per_s": up, "ours_steps_per_s": ours, "ratio": ours / up}
        rows.append((f"RecurrentPPO LSTM 256, 4 envs, {exp}: upstream / ours",
                     f"{up:,.0f} / {ours:,.0f} ({ours / up:.1f}x)", "steps/s"))
    width = max(len(r[0]) for r in rows) + 2
    for name, value, unit in rows:
        echo(f"{name:<{width}}{value:>24}  {unit}")
    return res
