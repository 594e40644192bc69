"""Training: read top to bottom, like a CleanRL script, but on SB3's PPO / RecurrentPPO (or, for
the pointwise agent with train.algo sac | td3, SB3's off-policy SAC / TD3: the same steps).

    1. run folder logs/<E>/<run_id>/ with the resolved config, command and code version
    2. reference data and the normaliser (spin-up climatology)
    3. n_envs closed-loop environments (curriculum decides their paths)
    4. the model (rl/agents/policy.py), or the last checkpoint when resuming; optionally warm-started by
       behaviour cloning (rl/agents/clone.py), saved as pretrained_model.zip
    5. callbacks: curriculum, checkpoints, evaluation on the held-out path, diagnostics, progress
    6. model.learn(...)
    7. final_model.zip: the last weights, or the mean of the last checkpoints' (train.average_checkpoints)

A SAC/TD3 run does not resume (rl/training/runs.py check_resumable): its replay buffer is not kept.

Everything is logged through SB3's logger (TensorBoard + CSV under tb/), nothing else writes
TensorBoard files.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch as th
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import SubprocVecEnv
from tqdm import tqdm

from enkf.config import dump_config
from rl.config import LOG_STD_RANGE, Config, agents_per_path, load_run_config
from enkf.io import (DataError, atomic_path, atomic_write_json, atomic_write_text, code_version,
                     installed_versions, remove_stale_temps)
from rl.training.curriculum import Curriculum, CurriculumCallback
from rl.envs.assimilation import AssimilationEnv
from rl.envs.batched import BatchedLoop, PathVecEnv, ensemble_filter_runs
from rl.agents.actors import actor_factory
from rl.training.evaluate import run_paths, summarise
from rl.envs.normalisation import Normaliser
from rl.envs.pointwise import PointwiseVecEnv
from rl.agents.policy import build_model, lstm_modules, set_offpolicy_exploration
from rl.agents.clone import behaviour_clone, copy_obs_rmse, split_training_paths
from rl.training.runs import (RUN_JSON, RunAbandoned, Timing, check_no_links, check_resumable, inferred_run_info, is_recorded, keep_progress_csv,
                              load_for_resume, newest_checkpoint, read_run_info, run_info,
                              save_checkpoint, save_model, average_checkpoints)

log = logging.getLogger("enkfrl.train")


# ---- callbacks ----------------------------------------------------------------------------------
class CheckpointCallback(BaseCallback):
    """Every `freq` path-steps: curriculum state and model (the normaliser and config sit in the
    run folder already) under checkpoints/ (rl/training/runs.py), so --resume can continue from the newest
    complete one. timing.json is brought up to date with each checkpoint and rollout (a killed
    segment's time counts too). SB3 counts agent-steps: `agents_per_path` of them make one
    path-step (n for the pointwise agent); checkpoints and timing count path-steps. SAC/TD3 end a
    "rollout" every vec-step: there timing.json is written at most every timing_every_s seconds
    (two fsyncs a vec-step slowed training tenfold on a busy disk)."""

    def __init__(self, run_dir: Path, freq: int, curriculum: Curriculum, timing: Timing,
                 last_saved: int = -1, agents_per_path: int = 1, timing_every_s: float = 0.0):
        super().__init__()
        self.run_dir, self.freq, self.curriculum, self.timing = run_dir, freq, curriculum, timing
        self.unit, self.timing_every_s = agents_per_path, timing_every_s
        self._next = None
        self._next_timing = 0.0
        self.last_saved = last_saved

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.unit // self.freq + 1) * self.freq

    def _on_step(self) -> bool:
        if self.num_timesteps // self.unit >= self._next:
            self.save(self.model)
            self._next += self.freq
        return True

    def _on_rollout_end(self) -> None:
        now = time.monotonic()
        if now >= self._next_timing:
            self._next_timing = now + self.timing_every_s
            self.timing.update(self.num_timesteps // self.unit)

    def save(self, model) -> None:
        step = model.num_timesteps // self.unit
        if step == self.last_saved:
            return
        self.last_saved = step
        save_checkpoint(model, self.curriculum.state_dict(), self.run_dir, step)
        self.timing.update(step)
        log.info("checkpoint at %d steps (%d paths active)", step, self.curriculum.n_active)


class EvalCallback(BaseCallback):
    """Every `freq` path-steps: the deterministic policy over the whole eval path in closed loop;
    best_model.zip is the one with the highest total reward (completing the path counts)."""

    def __init__(self, env: BatchedLoop, path: int, freq: int, run_dir: Path, make_actor,
                 agents_per_path: int = 1):
        super().__init__()
        self.env, self.path, self.freq, self.run_dir = env, path, freq, run_dir
        self.make_actor, self.unit = make_actor, agents_per_path
        self.best = -np.inf
        self._next = None

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.unit // self.freq + 1) * self.freq
        best_file = self.run_dir / "best.json"
        if best_file.exists() and is_recorded(self.run_dir / "best_model.zip", self.run_dir):
            self.best = json.loads(best_file.read_text())["total_reward"]

    def _on_step(self) -> bool:
        if self.num_timesteps // self.unit >= self._next:
            self.evaluate()
            self._next += self.freq
        return True

    def evaluate(self) -> dict:
        ep = run_paths(self.env, self.make_actor(self.model), [self.path])[self.path]
        s = summarise(ep)
        self.logger.record("eval/path_steps", self.num_timesteps // self.unit)
        for key in ("mean_reward", "total_reward", "cycles_completed", "rmse_norm_vs_enkf", "rmse_vs_truth"):
            self.logger.record(f"eval/{key.replace('rmse_norm_vs_enkf', 'rmse_vs_enkf')}", s[key])
        c = max(s["cycles_completed"], 1)
        self.logger.record("eval/enkf_rmse_vs_truth", float(np.mean(ep["enkf_rmse_vs_truth"][:c])))
        log.info("eval at %d path-steps: %d/%d cycles, reward %.4f, rmse vs EnKF %.4f, vs truth %.4f",
                 self.num_timesteps // self.unit, s["cycles_completed"], self.env.n_cycles, s["mean_reward"],
                 s["rmse_norm_vs_enkf"], s["rmse_vs_truth"])
        if isinstance(self.model, OffPolicyAlgorithm):  # SAC/TD3 write their logs per path-episode, not
            self.logger.dump(self.num_timesteps)         # per rollout: the evaluation gets its own row now
        if s["total_reward"] > self.best:
            self.best = s["total_reward"]
            save_model(self.model, self.run_dir / "best_model.zip", self.run_dir, self.num_timesteps // self.unit)
            atomic_write_json(self.run_dir / "best.json", dict(s, steps=self.num_timesteps // self.unit))
        return s


class DiagnosticsCallback(BaseCallback):
    """Per rollout: policy std, LSTM gradient norm, RMSEs of the training episodes, and the
    share of wall time spent inside env.step (summed over envs). The RMSEs are read from the
    first agent of every path (`agents_per_path` infos a path: the pointwise agent's point 0
    carries its path's diagnostics)."""

    def __init__(self, agents_per_path: int = 1):
        super().__init__()
        self.unit = agents_per_path
        self._rmse_enkf: list[float] = []
        self._rmse_truth: list[float] = []
        self._t_last = None

    def _on_training_start(self) -> None:
        self.training_env.env_method("pop_step_seconds")
        self._t_last = time.perf_counter()

    def _on_step(self) -> bool:
        for info in self.locals["infos"][::self.unit]:
            if np.isfinite(info.get("rmse_vs_enkf", np.nan)):
                self._rmse_enkf.append(info["rmse_vs_enkf"])
                self._rmse_truth.append(info["rmse_vs_truth"])
        return True

    def _on_rollout_end(self) -> None:
        policy = self.model.policy
        if hasattr(policy, "log_std"):
            std = th.exp(policy.log_std.detach())
            self.logger.record("policy/std_mean", float(std.mean()))
            self.logger.record("policy/std_min", float(std.min()))
            self.logger.record("policy/std_max", float(std.max()))
        # gradients of the last minibatch of the previous update (after clipping)
        grads = [p.grad.detach().norm() ** 2 for m in lstm_modules(policy) for p in m.parameters()
                 if p.grad is not None]
        if grads:
            self.logger.record("train/lstm_grad_norm", float(th.stack(grads).sum().sqrt()))
        if self._rmse_enkf:
            self.logger.record("rollout/rmse_vs_enkf", float(np.mean(self._rmse_enkf)))
            self.logger.record("rollout/rmse_vs_truth", float(np.mean(self._rmse_truth)))
            self._rmse_enkf, self._rmse_truth = [], []
        now = time.perf_counter()
        env_seconds = sum(self.training_env.env_method("pop_step_seconds"))
        self.logger.record("time/env_step_share", env_seconds / max(now - self._t_last, 1e-9))
        self._t_last = now


OFF_POLICY_TIMING_S = 10.0
"""SAC/TD3: seconds between two updates of timing.json outside checkpoints (CheckpointCallback)."""
OWNER_CHECK_S = 1.0
"""Seconds between two checks that the process that started a run is still there."""


class OwnerCallback(BaseCallback):
    """Every `interval_s` seconds of training: is the process that started this run still there
    (owner_alive(), e.g. a Ray trial's driver)? If not, the run stops at once, before it writes
    anything more (RunAbandoned): an orphaned trial never overlaps the rerun that follows."""

    def __init__(self, owner_alive, interval_s: float | None = None):
        super().__init__()
        self.owner_alive = owner_alive
        self.interval_s = OWNER_CHECK_S if interval_s is None else interval_s
        self._next = 0.0

    def check(self) -> None:
        if not self.owner_alive():
            raise RunAbandoned("the process that started this run is gone: stopped without writing more")

    def _on_step(self) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self.interval_s
            self.check()
        return True


class ProgressCallback(BaseCallback):
    def __init__(self, total: int, agents_per_path: int = 1):
        super().__init__()
        self.total, self.unit = total, agents_per_path
        self.bar = None

    def _on_training_start(self) -> None:
        self._last = self.num_timesteps // self.unit
        self.bar = tqdm(total=self.total, initial=self._last, unit="path-step", desc="train",
                        disable=not sys.stderr.isatty())

    def _on_step(self) -> bool:
        now = self.num_timesteps // self.unit
        self.bar.update(now - self._last)
        self._last = now
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


def set_exploration(model, cfg: Config, normaliser: Normaliser, data: dict, history: dict | None) -> dict:
    """agent.log_std_init auto: the policy's std := the error left at the start of PPO (the clone's
    held-out RMSE; without cloning, copy-obs' RMSE vs the reward's target on the same paths), so
    exploration has the scale of what is left to learn in every experiment. SAC/TD3: the same with
    offpolicy.exploration_std (rl.agents.policy.set_offpolicy_exploration)."""
    if cfg.train.algo != "ppo":
        std = cfg.offpolicy.exploration_std
        if std != "auto":  # set by build_model
            return {"exploration_std": std, "source": "config"}
        std, source = copy_obs_rmse(cfg, normaliser, data, split_training_paths(cfg)[1]), "copy-obs RMSE"
        if not std > 0:
            raise DataError(f"offpolicy.exploration_std auto: the {source} is {std:.3g}: set a number > 0")
        return {"exploration_std": float(std), "source": source, "auto": True,
                **set_offpolicy_exploration(model, cfg, float(std))}
    if cfg.agent.log_std_init != "auto":
        return {"log_std_init": cfg.agent.log_std_init, "source": "config"}
    if history and history["val_rmse"]:
        scale, source = history["val_rmse"][-1], "cloned policy's held-out RMSE"
    else:
        scale, source = copy_obs_rmse(cfg, normaliser, data, split_training_paths(cfg)[1]), "copy-obs RMSE"
    lo, hi = LOG_STD_RANGE
    if not (scale > 0 and lo <= np.log(scale) <= hi):
        raise DataError(f"agent.log_std_init auto: the {source} is {scale:.3g}, a log std outside [{lo}, {hi}]: "
                        f"set agent.log_std_init to a number in that range")
    with th.no_grad():
        model.policy.log_std.fill_(float(np.log(scale)))
    return {"log_std_init": float(np.log(scale)), "std": scale, "source": source, "auto": True}


# ---- set-up helpers ---------------------------------------------------------------------------
def make_env_fn(cfg: Config, data: dict, normaliser: Normaliser, paths: list[int], seed: int):
    def make():
        env = AssimilationEnv(cfg, data, normaliser, paths)
        if cfg.reward.target == "next_obs":  # the last cycle has no next y: episodes end before it
            env = TimeLimit(env, env.n_cycles - 1)
        env = Monitor(env)
        env.reset(seed=seed)
        return env
    return make


def make_vec_env(cfg: Config, data: dict, normaliser: Normaliser, paths: list[int]):
    """The training envs on the batched loop (rl.envs.batched): M paths x n points (pointwise),
    or n_envs paths with one agent each; with train.subproc, AssimilationEnvs in subprocesses."""
    if cfg.agent.kind == "pointwise":
        return PointwiseVecEnv(cfg, data, normaliser, paths, cfg.train.paths_per_env, cfg.train.seed)
    if cfg.train.subproc and cfg.train.n_envs > 1:
        fns = [make_env_fn(cfg, data, normaliser, paths, cfg.train.seed + i) for i in range(cfg.train.n_envs)]
        return SubprocVecEnv(fns, start_method="fork")
    return PathVecEnv(cfg, data, normaliser, paths, cfg.train.n_envs, cfg.train.seed)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if th.cuda.is_available() else "cpu"
    if name == "cuda" and not th.cuda.is_available():
        raise DataError("train.device is cuda but torch sees no CUDA device")
    return name


def setup_logging(run_dir: Path) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    for h in (logging.FileHandler(run_dir / "train.log"), logging.StreamHandler(sys.stdout)):
        h.setFormatter(fmt)
        log.addHandler(h)


# ---- the training run --------------------------------------------------------------------------
def train(cfg: Config, data: dict, normaliser: Normaliser, run_dir: Path,
          resume: bool = False, command: str = "", trust: bool = False, owner_alive=None) -> Path:
    """Train a new run in run_dir (new and empty: rl/training/runs.py create_run_dir), or with resume
    continue the run in run_dir from its newest complete checkpoint (trust: accept model zips
    whose checksum is not the recorded one). owner_alive: a check that the process that started
    the run is still there (a Ray trial's driver); when it fails the run stops without writing
    more. The caller holds the run's lock (rl/training/runs.py RunLock). Returns run_dir."""
    # 1. run folder: the resolved config is the run's config from now on
    if resume:
        cfg = load_run_config(run_dir / "config.yaml")
        check_resumable(run_dir, cfg)  # a changed network or PPO setting: refused, before any write
        check_no_links(run_dir)
        for folder in (run_dir, run_dir / "checkpoints", run_dir / "tb"):
            remove_stale_temps(folder)  # left by a killed segment
        if read_run_info(run_dir) is None:  # a run made before run.json was kept
            atomic_write_json(run_dir / RUN_JSON, inferred_run_info(run_dir, cfg))
    else:
        if read_run_info(run_dir) is None:  # a folder not made by runs.create_run_dir
            atomic_write_json(run_dir / RUN_JSON, run_info(cfg))
        dump_config(cfg, run_dir / "config.yaml")
        with atomic_path(run_dir / "normaliser.npz") as tmp, open(tmp, "wb") as f:
            normaliser.save(f)
        atomic_write_text(run_dir / "command.txt", command + "\n")
        atomic_write_text(run_dir / "code_version.txt", code_version() + "\n")
        atomic_write_json(run_dir / "versions.json", installed_versions())
    setup_logging(run_dir)
    th.set_num_threads(cfg.train.torch_threads)
    numba.set_num_threads(min(cfg.train.env_threads, numba.config.NUMBA_NUM_THREADS))
    device = resolve_device(cfg.train.device)
    unit = agents_per_path(cfg)
    envs = (f"{cfg.train.paths_per_env} paths x {cfg.model.n} points" if cfg.agent.kind == "pointwise"
            else f"{cfg.train.n_envs} envs")
    log.info("%s %s: %s agent, %s, %d path-steps, device %s, config %s", "resume" if resume else "train",
             cfg.experiment, cfg.agent.kind, envs, cfg.train.total_steps, device, cfg.hash())

    # 2-3. environments: training paths from the curriculum, a separate env for the eval path
    first, last = cfg.paths.train_paths
    curriculum = Curriculum(first, last, cfg.curriculum.episodes_k)
    if resume:
        model_path, curriculum_state, step = newest_checkpoint(run_dir, trust)
        curriculum = Curriculum.from_state_dict(curriculum_state)
    venv = make_vec_env(cfg, data, normaliser, curriculum.active_paths)
    eval_env = BatchedLoop(cfg, data, normaliser, 1)

    # 4. model
    if resume:
        model = load_for_resume(cfg, model_path, run_dir, venv, device, trust)
        keep_progress_csv(run_dir, step)  # SB3 reopens progress.csv with "w": keep the earlier rows
        log.info("resumed from %s (%d path-steps, %d paths active)", model_path.name, step, curriculum.n_active)
    logger = configure(str(run_dir / "tb"), ["tensorboard", "csv"])
    if not resume:
        model = build_model(cfg, venv, tensorboard_log=None, device=device, seed=cfg.train.seed)
    model.set_logger(logger)

    # 4b. optional warm start: behaviour cloning of the stored analyses (the "supervised" policy)
    if not resume and cfg.pretrain.epochs > 0:
        t0 = time.perf_counter()
        clone_data = data
        if cfg.env.ensemble_filter is not None:  # pretrain.target truth: along the env's own filter's runs
            clone_data = ensemble_filter_runs(cfg, data, normaliser, range(first, last + 1))
            log.info("cloning along env.ensemble_filter's own runs of the training paths (%.0f s)",
                     time.perf_counter() - t0)
        history = behaviour_clone(model, cfg, normaliser, clone_data, log=log.info)
        for epoch, (tr, va) in enumerate(zip(history["train_rmse"], history["val_rmse"] or history["train_rmse"])):
            logger.record("clone/train_rmse", tr)
            logger.record("clone/heldout_rmse", va)
            logger.dump(step=epoch)
        save_model(model, run_dir / "pretrained_model.zip", run_dir, 0)
        atomic_write_json(run_dir / "pretrain.json", dict(history, wall_s=time.perf_counter() - t0))
    # 4c. exploration at the scale of the error left (agent.log_std_init: auto), recorded
    if not resume:
        exploration = set_exploration(model, cfg, normaliser, data,
                                      history if cfg.pretrain.epochs > 0 else None)
        atomic_write_json(run_dir / "exploration.json", exploration)
        scale = exploration.get("exploration_std") or math.exp(exploration["log_std_init"])
        log.info("exploration: std %.4g (%s)", scale, exploration["source"])

    # 5. callbacks (steps in path-steps; SB3 counts agent-steps)
    timing = Timing(run_dir, model.num_timesteps // unit)  # this segment, after the earlier ones
    checkpoints = CheckpointCallback(run_dir, cfg.train.checkpoint_freq, curriculum, timing,
                                     last_saved=step if resume else -1, agents_per_path=unit,
                                     timing_every_s=0.0 if cfg.train.algo == "ppo" else OFF_POLICY_TIMING_S)
    owner = OwnerCallback(owner_alive or (lambda: True))
    callbacks = CallbackList([
        owner,  # first: nothing below writes once the owner is gone
        CurriculumCallback(curriculum),
        checkpoints,
        EvalCallback(eval_env, cfg.paths.eval_path, cfg.train.eval_freq, run_dir, actor_factory(cfg), unit),
        DiagnosticsCallback(unit),
        ProgressCallback(cfg.train.total_steps, unit),
    ])

    # 6. learn (nothing left when resuming a run killed after its last checkpoint); SAC/TD3 count
    #    log_interval in agent-episodes: n of them end together in one path-episode
    remaining = cfg.train.total_steps - model.num_timesteps // unit
    log_interval = cfg.train.log_interval * (unit if cfg.train.algo != "ppo" else 1)
    if remaining > 0:
        model.learn(remaining * unit, callback=callbacks, log_interval=log_interval,
                    reset_num_timesteps=not resume)
    owner.check()
    checkpoints.save(model)
    # 7. the final policy: the last weights, or the mean of the last checkpoints' (train.average_checkpoints)
    averaged = average_checkpoints(cfg, model.policy, run_dir) if cfg.train.average_checkpoints > 1 else None
    if averaged:
        log.info("final policy: the mean of the checkpoints at %s path-steps", ", ".join(map(str, averaged)))
    save_model(model, run_dir / "final_model.zip", run_dir, model.num_timesteps // unit, averaged)
    record = timing.update(model.num_timesteps // unit)
    wall = record["segments"][-1]["wall_s"]
    record["path_steps_per_s"] = record["train_steps"] / max(record["train_wall_s"], 1e-9)
    atomic_write_json(run_dir / "timing.json", record)
    atomic_write_json(run_dir / "curriculum_final.json", curriculum.state_dict())
    log.info("done: %d path-steps in %.0f s (%.0f path-steps/s); %d paths active",
             model.num_timesteps // unit, wall, max(remaining, 0) / max(wall, 1e-9), curriculum.n_active)
    venv.close()
    return run_dir
