"""The RL part of `enkfrl bench`, measured in the same run as the kernels:

    e. closed-loop env steps/s (one process, oracle actions) on the experiment's data
    f. PPO training steps/s with the experiment's config, and the share of its wall time spent
       inside env.step
    g. RecurrentPPO steps/s with upstream's RecurrentActorCriticPolicy against ours
       (FastRecurrentPolicy), same config and seed, on L96_1 (1000-cycle episodes) and on
       smoke (60-cycle episodes: many episode starts per minibatch, upstream's slow case)

Data: data/<E>/ when it matches the config, else computed in memory (rl.ablate.reference_data).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch as th
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv

from enkf.config import load_config
from rl.ablate import reference_data
from rl.env import AssimilationEnv
from rl.policy import FastRecurrentPolicy, build_model


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
    """(steps/s, share of wall time inside env.step) of model.learn(steps)."""
    first = cfg.paths.train_paths[0]
    envs = [AssimilationEnv(cfg, data, norm, [first]) for _ in range(cfg.train.n_envs)]
    venv = DummyVecEnv([lambda e=e: e for e in envs])
    if policy_class is None:
        model = build_model(cfg, venv, None, "cpu", cfg.seed)
    else:
        a = cfg.agent
        model = RecurrentPPO(policy_class, venv, seed=cfg.seed, device="cpu", n_steps=cfg.ppo.n_steps,
                             batch_size=cfg.ppo.batch_size, n_epochs=cfg.ppo.n_epochs,
                             policy_kwargs=dict(lstm_hidden_size=a.lstm_hidden, n_lstm_layers=a.lstm_layers,
                                                net_arch=dict(pi=a.pi_arch, vf=a.vf_arch),
                                                log_std_init=a.log_std_init))
    for e in envs:
        e.pop_step_seconds()
    t0 = time.perf_counter()
    model.learn(steps)
    wall = time.perf_counter() - t0
    return model.num_timesteps / wall, sum(e.pop_step_seconds() for e in envs) / wall


def run_rl_bench(config_path: str, quick: bool, echo, data_root: Path = Path("data")) -> dict:
    th.set_num_threads(1)
    res, rows = {}, []
    cfg = load_config(config_path, "L96_1")
    data, norm = reference_data(cfg, data_root)
    res["env_steps_per_s"] = _env_steps_per_s(cfg, data, norm, 500 if quick else 3000)
    rows.append(("L96_1 closed-loop env.step, 1 process", f"{res['env_steps_per_s']:,.0f}", "steps/s"))

    steps = 2 * cfg.ppo.n_steps * cfg.train.n_envs
    sps, share = _ppo_speed(cfg, data, norm, steps // 2 if quick else steps)
    res["ppo"] = {"agent": cfg.agent.kind, "steps_per_s": sps, "env_step_share": share}
    rows.append((f"L96_1 PPO training ({cfg.agent.kind} agent, {cfg.train.n_envs} envs)", f"{sps:,.0f}", "steps/s"))
    rows.append(("  share of its wall time inside env.step", f"{share:.0%}", ""))

    for exp in ("L96_1", "smoke"):
        base = load_config(config_path, exp)
        rcfg = dataclasses.replace(
            base, env=dataclasses.replace(base.env, window=1),
            agent=dataclasses.replace(base.agent, kind="recurrent", lstm_hidden=256, pi_arch=[256, 256],
                                      vf_arch=[256, 256]),
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
