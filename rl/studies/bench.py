"""The RL part of `enkfrl bench`, measured in the same run as the kernels:

    e. closed-loop env steps/s (one process, oracle actions) on the experiment's data
    f. the closed loop, env only: a per-path loop of AssimilationEnvs against the batched loop
       (rl.envs.batched) at P = 4, 32 and 99 slots, on 1 core and on all; the batched forecast
       kernel alone as the physics limit. The pointwise agent: env-only path-steps/s of its
       vectorised env, PPO path-steps/s with the configured network and threads, where its wall
       time goes; the same for each from-scratch variant on every core (3 interleaved repeats,
       the median recorded with all repeats beside it); what one PPO update of the fastest
       fit-keeping variant spends its time on (torch's profiler: the LSTM's kernels, the dense
       layers, the optimiser, other ops, outside torch); the policy's LSTM kernels alone at each
       setting's batch sizes (lstm_kernel_limit: with a free env, PPO could go no faster, so
       PPO's share of the env-only rate has a bound); the work of a path-step counted from the
       config (work_per_path_step) and the arithmetic rates the measured shares imply, beside
       one large matrix product's rate on the same cores (matmul_rate); the local agent's PPO
       steps/s (its env.step share)
    g. RecurrentPPO steps/s with upstream's RecurrentActorCriticPolicy against ours
       (FastRecurrentPolicy), same config and seed, on L96_1 (1000-cycle episodes) and on
       smoke (60-cycle episodes: many episode starts per minibatch, upstream's slow case)

Data: data/<E>/ when it matches the config, else computed in memory (rl.studies.ablate.reference_data).
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numba
import numpy as np
import torch as th
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from rl.config import load_ablation, load_config
from rl.studies.ablate import reference_data
from enkf.system import System
from rl.envs.assimilation import AssimilationEnv
from rl.envs.batched import BatchedLoop
from rl.envs.pointwise import PointwiseVecEnv, point_observation_space
from rl.agents.policy import FastRecurrentPolicy, WindowLstmExtractor, build_model


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


def per_path_loop_speed(cfg, data, norm, P: int, seconds: float) -> float:
    """Env-only path-steps/s of P AssimilationEnvs stepped one after the other (a per-path loop,
    the single-path reference), fixed zero action."""
    first = cfg.paths.train_paths[0]
    envs = [AssimilationEnv(cfg, data, norm, [first + q]) for q in range(P)]
    for e in envs:
        e.reset()
    action = np.zeros(cfg.model.n, np.float32)
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for e in envs:
            _, _, term, trunc, _ = e.step(action)
            if term or trunc:
                e.reset()
        k += 1
    return k * P / (time.perf_counter() - t0)


def batched_loop_speed(cfg, data, norm, P: int, seconds: float) -> float:
    """Env-only path-steps/s of the batched loop (rl.envs.batched) with P slots, zero action."""
    first, last = cfg.paths.train_paths
    paths = first + np.arange(P) % (last - first + 1)
    loop = BatchedLoop(cfg, data, norm, P)
    loop.reset(np.arange(P), paths)
    action = np.zeros((P, cfg.model.n), np.float32)
    loop.step(action)  # compiled and warm
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        res = loop.step(action)
        ended = np.flatnonzero(res.terminated | res.truncated)
        loop.reset(ended, paths[ended])
        k += 1
    return k * P / (time.perf_counter() - t0)


def kernel_limit(cfg, data, P: int, repeats: int) -> float:
    """Path-steps/s of the batched forecast kernel alone (P paths' members, the loop's column
    blocks): the physics limit of the closed loop on the cores numba uses."""
    system = System.from_config(cfg)
    EE = np.ascontiguousarray(data["initial_ensemble"][:P])
    system.forecast_batch(EE, cfg.train.block_columns)
    t0 = time.perf_counter()
    for _ in range(repeats):
        system.forecast_batch(EE, cfg.train.block_columns)
    return repeats * P / (time.perf_counter() - t0)


def _pointwise_venv(cfg, data, norm) -> PointwiseVecEnv:
    """The pointwise agent's vectorised env on the first train.paths_per_env training paths."""
    M = cfg.train.paths_per_env
    first, last = cfg.paths.train_paths
    paths = list(range(first, min(last, first + M - 1) + 1))
    return PointwiseVecEnv(cfg, data, norm, paths, M, cfg.train.seed)


L96_RK4_FLOP_PER_VARIABLE = 4 * 4 + 3 * 2 + 7
"""Floating-point operations of one Lorenz-96 RK4 step per variable: four right-hand sides
((x[i+1] - x[i-2]) x[i-1] - x[i] + F: 4 each), three stage states (x + c k: 2 each) and the step
(x + dt/6 (k1 + 2 k2 + 2 k3 + k4): 7)."""


def _dense_flop(sizes: list[int]) -> int:
    return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def work_per_path_step(cfg) -> dict:
    """Floating-point operations of one path-step of pointwise PPO on a Lorenz-96 RK4 experiment,
    counted from the config: the forecast (N members x steps_per_cycle RK4 steps x n variables),
    the policy's forward pass over the path-step's n agent-steps in the rollout (the window LSTM's
    matrix products over its W cycles, the policy and value heads), and PPO's update of them
    (n_epochs passes of forward and backward, the backward counted as two forwards). Left out:
    the analysis (a few kflop against the forecast's millions), the features, gates and losses."""
    if (cfg.model.name, cfg.model.integrator) != ("lorenz96", "rk4") or cfg.agent.kind != "pointwise":
        raise ValueError("work_per_path_step counts the pointwise agent on a Lorenz-96 RK4 experiment")
    from rl.envs.pointwise import point_observation_space
    a = cfg.agent
    W, F = point_observation_space(cfg).shape
    if a.point_net == "lstm":
        h = a.lstm_hidden
        extractor = W * sum(4 * _dense_flop([(F if layer == 0 else h) + h, h]) for layer in range(a.lstm_layers))
    else:
        h, extractor = W * F, 0
    heads = _dense_flop([h, *a.pi_arch, 1]) + _dense_flop([h, *a.vf_arch, 1])
    forward = cfg.model.n * (extractor + heads)
    update = cfg.ppo.n_epochs * 3 * forward
    return {"flop_forecast_per_path_step": cfg.filter.n_ens * cfg.steps_per_cycle * cfg.model.n * L96_RK4_FLOP_PER_VARIABLE,
            "flop_policy_rollout_per_path_step": forward, "flop_policy_update_per_path_step": update,
            "flop_policy_per_path_step": forward + update}


def cpu_model() -> str:
    """The CPU's name as the kernel reports it (/proc/cpuinfo's first `model name`), else
    platform.processor(): the bench's rates belong to it."""
    import platform
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def lstm_kernel_limit(cfg, seconds: float) -> dict:
    """The pointwise policy's LSTM alone (WindowLstmExtractor of the config's network and
    agent.lstm_dtype, on random windows of the agent's shape), timed as PPO calls it: forward
    without gradients on a rollout step's train.paths_per_env x n windows, forward and backward
    on a ppo.batch_size minibatch, each for about `seconds`. A path-step costs n windows forward
    plus ppo.n_epochs x n forward and backward; `lstm_kernels_path_steps_per_s` is the rate PPO
    would reach if the env were free and the policy were only these kernels. With env-only rate E
    and this rate L, PPO runs at most at 1 / (1/E + 1/L): a share L / (E + L) of E
    (`ratio_bound_lstm_kernels`, with this measurement's E)."""
    if cfg.agent.point_net != "lstm":
        raise ValueError("lstm_kernel_limit times the pointwise agent's LSTM (agent.point_net: lstm)")
    a, n = cfg.agent, cfg.model.n
    space = point_observation_space(cfg)
    lstm = WindowLstmExtractor(space, a.lstm_hidden, a.lstm_layers, a.lstm_dtype)
    gen = th.Generator().manual_seed(0)
    rollout = th.randn(cfg.train.paths_per_env * n, *space.shape, generator=gen)
    minibatch = th.randn(cfg.ppo.batch_size, *space.shape, generator=gen)

    def forward():
        with th.no_grad():
            lstm(rollout)

    def forward_backward():
        lstm.zero_grad(set_to_none=True)
        lstm(minibatch).square().sum().backward()

    def per_call(fn) -> float:
        fn()
        fn()  # warm: oneDNN builds its primitives on the first calls
        t0, k = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds or k < 3:
            fn()
            k += 1
        return (time.perf_counter() - t0) / k

    fwd, fwd_bwd = per_call(forward), per_call(forward_backward)
    s = n * fwd / rollout.shape[0] + cfg.ppo.n_epochs * n * fwd_bwd / minibatch.shape[0]
    return {"lstm_forward_s_per_rollout_step": fwd, "lstm_forward_backward_s_per_minibatch": fwd_bwd,
            "lstm_kernels_path_steps_per_s": 1.0 / s}


def pointwise_speed(cfg, data, norm, rollouts: int, env_seconds: float, device: str = "cpu") -> dict:
    """The pointwise agent on its vectorised env (M = train.paths_per_env path slots of the batched
    loop x n points): the env-only limit (fixed zero action), PPO path-steps/s over `rollouts`
    rollouts, and where PPO's wall time goes (env.step, policy forward while collecting, PPO
    updates)."""
    M, n = cfg.train.paths_per_env, cfg.model.n
    venv = _pointwise_venv(cfg, data, norm)
    venv.reset()
    action = np.zeros((venv.num_envs, 1), np.float32)
    venv.step(action)
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < env_seconds:
        venv.step(action)
        k += 1
    env_only = k * M / (time.perf_counter() - t0)
    limit = {}
    if cfg.agent.point_net == "lstm" and device == "cpu":
        limit = lstm_kernel_limit(cfg, env_seconds / 4)
        L = limit["lstm_kernels_path_steps_per_s"]
        limit["ratio_bound_lstm_kernels"] = L / (env_only + L)
    model = build_model(cfg, venv, None, device, cfg.train.seed)
    phases = _Phases()
    venv.pop_step_seconds()
    t0 = time.perf_counter()
    model.learn(rollouts * cfg.ppo.n_steps * M * n, callback=phases)
    wall = time.perf_counter() - t0
    env_s = venv.pop_step_seconds()
    ppo = model.num_timesteps / n / wall
    work = work_per_path_step(cfg)
    rates = {"gflop_per_s_forecast_in_env_step": work["flop_forecast_per_path_step"] * ppo * wall / env_s / 1e9,
             "gflop_per_s_policy": work["flop_policy_per_path_step"] * ppo * wall / (wall - env_s) / 1e9}
    return {**work, **rates, **limit, "paths_per_env": M, "point_net": cfg.agent.point_net, "env_only_path_steps_per_s": env_only,
            "ppo_path_steps_per_s": ppo, "ratio_to_env_only": ppo / env_only,
            "share_env_step": env_s / wall, "share_policy_forward_in_rollouts": (phases.rollout_s - env_s) / wall,
            "share_ppo_updates": (wall - phases.rollout_s) / wall, "torch_threads": th.get_num_threads(),
            "env_threads": numba.get_num_threads(), "n_steps": cfg.ppo.n_steps,
            "batch_size": cfg.ppo.batch_size, "n_epochs": cfg.ppo.n_epochs, "lstm_dtype": cfg.agent.lstm_dtype,
            "device": device}


SCRATCH_VARIANTS = ("scratch", "scratch_1epoch", "scratch_1epoch_b1024", "scratch_p32", "scratch_p32_bf16")
"""The pointwise study's from-scratch PPO settings the bench measures (results/bench.json:
batched_<variant>_all_cores): scratch (16 paths x 32 cycles a rollout, 2 epochs of 2048-sample
minibatches), scratch_1epoch (32 paths, 1 epoch of 2048), scratch_1epoch_b1024 (32 paths, 1 epoch
of 1024: the gradient steps per sample of scratch), scratch_p32 (scratch's rollout size and epochs
as 32 paths x 16 cycles) and scratch_p32_bf16 (that, the LSTM in bfloat16)."""


SCRATCH_REPEATS = 3

PROFILED_VARIANT = "scratch_1epoch_b1024"
"""The variant whose PPO update `update_profile` takes apart: the training settings of the
from-scratch run that keeps the fit at the bench's speed (scratch_1epoch_b1024_avg trains as this
row and averages its last checkpoints at the end), whose fit the pointwise study shows."""

LSTM_OPS = ("rnn", "lstm")      # aten::lstm and its kernels (oneDNN's mkldnn_rnn_layer[_backward] on the CPU)
DENSE_OPS = ("addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul")


def update_profile(cfg, data, norm, device: str = "cpu") -> dict:
    """Where one PPO update of the pointwise agent spends its wall time: one rollout is collected,
    then `model.train()` (one pass over that rollout's minibatches) runs under torch's profiler.
    Shares of the update's wall time: the LSTM's kernels (forward and backward), the dense layers
    (matrix products of the heads and their gradients), the optimiser step (all its ops), every
    other torch op (elementwise, copies, the loss), and outside torch ops (Python: SB3's loop,
    the rollout buffer's sampling)."""
    from torch.profiler import ProfilerActivity, profile

    M, n = cfg.train.paths_per_env, cfg.model.n
    venv = _pointwise_venv(cfg, data, norm)
    model = build_model(cfg, venv, None, device, cfg.train.seed)
    model.learn(cfg.ppo.n_steps * M * n)  # one rollout and its update: compiled, warm, the buffer full
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        model.train()
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    self_us = {e.key: e.self_cpu_time_total for e in events}
    ops_s = sum(self_us.values()) / 1e6

    def self_s(names):
        return sum(t for k, t in self_us.items() if any(p in k.lower() for p in names)) / 1e6
    lstm, dense = self_s(LSTM_OPS), self_s(DENSE_OPS)
    optimiser = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step")) / 1e6
    other = max(0.0, ops_s - lstm - dense - optimiser)
    outside = max(0.0, wall - ops_s)
    total = lstm + dense + optimiser + other + outside
    minibatches = cfg.ppo.n_epochs * -(-cfg.ppo.n_steps * M * n // cfg.ppo.batch_size)
    return {"minibatches": minibatches,
            "batch_size": cfg.ppo.batch_size, "wall_s": wall, "torch_threads": th.get_num_threads(),
            "share_lstm_kernels": lstm / total, "share_dense_layers": dense / total,
            "share_optimizer_step": optimiser / total, "share_other_ops": other / total,
            "share_outside_torch_ops": outside / total}


def matmul_rate(dtype: th.dtype, size: int, repeats: int) -> float:
    """GFLOP/s of one large square matrix product (size x size) in dtype with torch's current
    threads: what the cores' dense arithmetic reaches, the reference for the policy's rate."""
    a, b = th.randn(size, size).to(dtype), th.randn(size, size).to(dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - t0) / 1e9


def median_repeat(measured: list[dict]) -> dict:
    """The measurement of median PPO path-steps/s among repeats (the lower middle of an even count)."""
    order = sorted(measured, key=lambda m: m["ppo_path_steps_per_s"])
    return order[(len(order) - 1) // 2]


def run_rl_bench(config_path: str, quick: bool, echo, data_root: Path = Path("data")) -> dict:
    res, rows = {"load_average_before": list(os.getloadavg()), "cpu_model": cpu_model()}, []
    # what bfloat16 (agent.lstm_dtype) runs on here: AMX tiles, or AVX-512's bf16 dot products
    res["cpu_bfloat16"] = {"amx_tile": bool(th.cpu._is_amx_tile_supported()),
                           "avx512_bf16": bool(th.cpu._is_avx512_bf16_supported())}
    cfg = load_config(config_path, "L96_1")
    data, norm = reference_data(cfg, data_root)
    res["env_steps_per_s"] = _env_steps_per_s(cfg, data, norm, 500 if quick else 3000)
    rows.append((f"CPU: {res['cpu_model']}, {os.cpu_count()} cores", "", ""))
    rows.append(("L96_1 closed-loop env.step, 1 process", f"{res['env_steps_per_s']:,.0f}", "steps/s"))

    # the closed loop: a per-path loop vs the batched loop, env only; 1 core, then all cores
    cores = os.cpu_count() or 1
    secs = 1 if quick else 4
    numba.set_num_threads(1)
    limit1 = kernel_limit(cfg, data, 99, 2 if quick else 10)
    env_only = {"per_path_loop_P4": per_path_loop_speed(cfg, data, norm, 4, secs), "kernel_limit_1_core": limit1}
    for threads in sorted({1, cores}):
        numba.set_num_threads(threads)
        for P in (4, 32, 99):
            env_only[f"batched_P{P}_threads{threads}"] = batched_loop_speed(cfg, data, norm, P, secs)
    env_only["kernel_limit_all_cores"] = kernel_limit(cfg, data, 99, 2 if quick else 10)
    forecast_flop = work_per_path_step(cfg)["flop_forecast_per_path_step"]
    env_only["kernel_limit_gflop_per_s_1_core"] = limit1 * forecast_flop / 1e9
    env_only["kernel_limit_gflop_per_s_all_cores"] = env_only["kernel_limit_all_cores"] * forecast_flop / 1e9
    res["batched_env_only"] = dict(env_only, cores=cores)
    rows.append(("L96_1 physics limit: batched forecast kernel alone, 99 paths, 1 core / all cores",
                 f"{limit1:,.0f} / {env_only['kernel_limit_all_cores']:,.0f}", "path-steps/s"))
    rows.append(("  its arithmetic (RK4 flop counted per path-step), 1 core / all cores",
                 f"{env_only['kernel_limit_gflop_per_s_1_core']:.1f} / {env_only['kernel_limit_gflop_per_s_all_cores']:.1f}",
                 "GFLOP/s"))
    rows.append(("L96_1 env only, per-path loop of 4 AssimilationEnvs, 1 core",
                 f"{env_only['per_path_loop_P4']:,.0f}", "path-steps/s"))
    for P in (4, 32, 99):
        rows.append((f"L96_1 env only, batched loop, P = {P}: 1 core / {cores} cores",
                     f"{env_only[f'batched_P{P}_threads1']:,.0f} / {env_only[f'batched_P{P}_threads{cores}']:,.0f}",
                     "path-steps/s"))

    # pointwise PPO on the batched loop, the configured network and threads
    numba.set_num_threads(cfg.train.env_threads)
    th.set_num_threads(cfg.train.torch_threads)
    pw = pointwise_speed(cfg, data, norm, rollouts=1 if quick else 4, env_seconds=1 if quick else 4)
    res["batched"] = pw
    rows.append((f"L96_1 pointwise env, {pw['paths_per_env']} paths x 20 points, fixed action (env-only limit)",
                 f"{pw['env_only_path_steps_per_s']:,.0f}", "path-steps/s"))
    rows.append((f"L96_1 pointwise PPO ({pw['point_net']}, {pw['torch_threads']} torch / {pw['env_threads']} env threads)",
                 f"{pw['ppo_path_steps_per_s']:,.0f} ({pw['ratio_to_env_only']:.0%} of env-only)", "path-steps/s"))
    rows.append(("  its wall time: env.step / policy forward / PPO updates",
                 f"{pw['share_env_step']:.0%} / {pw['share_policy_forward_in_rollouts']:.0%} / {pw['share_ppo_updates']:.0%}", ""))
    # the from-scratch study's PPO settings on every core (config.yaml: ablations.pointwise.variants),
    # measured SCRATCH_REPEATS times, interleaved (A B C A B C ...), each row the repeat of median
    # PPO speed: this machine's speed drifts over minutes, and a slow minute then hits every row alike
    numba.set_num_threads(cores)
    th.set_num_threads(cores)
    scfgs = {r.variant: r.cfg for r in load_ablation(config_path, "pointwise")[1]
             if r.experiment == "L96_1" and r.variant in SCRATCH_VARIANTS and r.seed == cfg.train.seed}
    repeats = {v: [] for v in SCRATCH_VARIANTS}
    for _ in range(1 if quick else SCRATCH_REPEATS):
        for variant in SCRATCH_VARIANTS:
            repeats[variant].append(pointwise_speed(scfgs[variant], data, norm, rollouts=1 if quick else 12,
                                                    env_seconds=1 if quick else 8))
    for variant, measured in repeats.items():
        sc = median_repeat(measured)
        res[f"batched_{variant}_all_cores"] = dict(sc, variant=variant,
                                                   repeats_ppo_path_steps_per_s=[m["ppo_path_steps_per_s"] for m in measured])
        rows.append((f"L96_1 pointwise PPO, {variant} ({sc['paths_per_env']} paths, n_steps {sc['n_steps']}, batch "
                     f"{sc['batch_size']}, {sc['n_epochs']} epoch(s), LSTM {sc['lstm_dtype']}), {cores} torch / "
                     f"{cores} env threads",
                     f"{sc['ppo_path_steps_per_s']:,.0f} ({sc['ratio_to_env_only']:.0%} of env-only)", "path-steps/s"))
        rows.append((f"  its env-only limit; wall time: env.step / policy forward / PPO updates; {len(measured)} repeats",
                     f"{sc['env_only_path_steps_per_s']:,.0f}; {sc['share_env_step']:.0%} / "
                     f"{sc['share_policy_forward_in_rollouts']:.0%} / {sc['share_ppo_updates']:.0%}; "
                     + " ".join(f"{m['ppo_path_steps_per_s']:,.0f}" for m in measured), ""))
        rows.append(("  its LSTM kernels alone (a free env): path-steps/s; so at most this share of env-only",
                     f"{sc['lstm_kernels_path_steps_per_s']:,.0f}; {sc['ratio_bound_lstm_kernels']:.0%}", ""))
        rows.append(("  its work per path-step, forecast / policy (rollout + update); achieved in env.step / policy",
                     f"{sc['flop_forecast_per_path_step'] / 1e6:.1f} / "
                     f"{sc['flop_policy_per_path_step'] / 1e6:.1f}"
                     f" Mflop; {sc['gflop_per_s_forecast_in_env_step']:.0f} / {sc['gflop_per_s_policy']:.0f} GFLOP/s", ""))
    res["matmul_gflop_per_s_all_cores"] = {"float32": matmul_rate(th.float32, 2048, 2 if quick else 20),
                                            "bfloat16": matmul_rate(th.bfloat16, 2048, 2 if quick else 20)}
    mm = res["matmul_gflop_per_s_all_cores"]
    rows.append((f"  one 2048 x 2048 matrix product, {cores} torch threads: float32 / bfloat16",
                 f"{mm['float32']:.0f} / {mm['bfloat16']:.0f}", "GFLOP/s"))
    bf = res["cpu_bfloat16"]
    rows.append(("  this CPU's bfloat16 units (agent.lstm_dtype): AMX tiles / AVX-512 BF16",
                 f"{'yes' if bf['amx_tile'] else 'no'} / {'yes' if bf['avx512_bf16'] else 'no'}", ""))
    prof = update_profile(scfgs[PROFILED_VARIANT], data, norm)
    res["batched_update_profile"] = dict(prof, variant=PROFILED_VARIANT)
    rows.append((f"  one PPO update of {PROFILED_VARIANT} ({prof['minibatches']} minibatches of {prof['batch_size']}): "
                 "LSTM kernels / dense layers / optimiser / other ops / outside torch",
                 " / ".join(f"{prof[k]:.0%}" for k in ("share_lstm_kernels", "share_dense_layers", "share_optimizer_step",
                                                      "share_other_ops", "share_outside_torch_ops")), ""))
    th.set_num_threads(1)
    numba.set_num_threads(1)

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
    res["load_average_after"] = list(os.getloadavg())
    width = max(len(r[0]) for r in rows) + 2
    for name, value, unit in rows:
        echo(f"{name:<{width}}{value:>24}  {unit}")
    return res
