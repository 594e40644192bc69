"""The configuration schema: config.yaml is read, merged and validated here, and nowhere else.

config.yaml has a ``shared:`` block and an ``experiments:`` mapping. An experiment is the shared
block deep-merged with the experiment's own block (mappings merge key by key, anything else --
numbers, strings, lists -- replaces the shared value). The merged dict is turned into the typed
``Config`` below; every field has a docstring, no field has a default, so a key missing from the
yaml is an error just like an unknown one. Cross-field rules (``_check``) follow.

Every error is a ``ConfigError`` whose message names the offending key in dotted form; the CLI
prints it on one line and exits with code 2.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml


class ConfigError(ValueError):
    """A config problem, the message names the key (``filter.n_ens: must be >= 2, got 1``)."""


# --------------------------------------------------------------------------------------------
# Schema. Field order is the order of config.yaml; each docstring is the key's documentation.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    name: Literal["lorenz96", "lorenz63"]
    """Dynamical model."""
    n: int
    """State dimension (Lorenz-96: any n >= 4; Lorenz-63: 3)."""
    dt: float
    """Integrator time step (model time units)."""
    integrator: Literal["rk4", "euler"]
    """rk4 (default) or explicit euler (the old code's integrator, to reproduce old runs)."""
    forcing: float
    """Lorenz-96 forcing F (unused by Lorenz-63)."""
    sigma: float
    """Lorenz-63 sigma (unused by Lorenz-96)."""
    rho: float
    """Lorenz-63 rho."""
    beta: float
    """Lorenz-63 beta."""


@dataclass(frozen=True)
class ObsConfig:
    t_obs: float
    """Time between observations; must be a whole number of model.dt."""
    stride: int
    """Observe every stride-th variable starting at 0 (1: H = identity)."""
    error_var: float
    """Observation error variance r: R = r * I (must be > 0 so R is positive definite)."""


@dataclass(frozen=True)
class FilterConfig:
    method: Literal["enkf", "etkf", "letkf"]
    """enkf: perturbed-observation EnKF. etkf: deterministic square-root filter. letkf: the ETKF
    localised on the ring (Lorenz-96), one local analysis per variable (enkf/filters.py)."""
    n_ens: int
    """Ensemble size (>= 2)."""
    inflation: float
    """Multiplicative inflation of the anomalies (1.0: none)."""
    inflation_stage: Literal["forecast", "analysis"]
    """forecast: inflate forecast anomalies before the update (old code). analysis: after (DAPPER)."""
    centre_perturbations: bool
    """enkf only: subtract the member mean of the observation perturbations (DAPPER does)."""
    rotate: bool
    """etkf, letkf: apply a random mean-preserving rotation to the analysis anomalies."""
    loc_radius: float | Literal[None]
    """letkf only (null otherwise): localisation radius in grid points, DAPPER's loc_rad: the
    Gaspari-Cohn taper of R^{-1} has half-width 1.82 loc_radius and reaches 0 at 3.64 loc_radius."""
    init_spread: float
    """Initial ensemble = truth + N(0, init_spread^2) per member and variable."""


@dataclass(frozen=True)
class SpinupConfig:
    steps: int
    """Length of the one spin-up trajectory, in model steps."""
    init_scale: float
    """The spin-up starts from N(0, init_scale^2) per variable ("a random state near 0")."""
    sample_fraction: float
    """Start states are sampled, without replacement, from the last fraction of the spin-up."""
    thin: int
    """Keep every thin-th spin-up state in spinup.h5 (for plots only)."""


@dataclass(frozen=True)
class PathsConfig:
    n_paths: int
    """Number of start states / reference EnKF runs."""
    n_cycles: int
    """Assimilation cycles per path."""
    eval_path: int
    """The held-out evaluation path."""
    train_paths: list[int]
    """Inclusive range [first, last] of training paths; must not contain eval_path."""
    burn_in: int
    """Cycles left out of the time-mean RMSE summaries."""
    store_ensembles: bool
    """Also store the full forecast and analysis ensembles (large)."""
    workers: int
    """Processes for precompute (0: one per core)."""


@dataclass(frozen=True)
class TestConfig:
    seed: int
    """Master seed of the test split: its own spin-up and reference runs (test_split), apart from
    the training data, whose paths are overlapping windows of one spin-up trajectory."""
    n_paths: int
    """Paths of the test split (>= 2: path 0 is its eval path, paths 1.. fill train_paths)."""
    __test__ = False  # not a pytest test class


# ---- RL sections (validated here too: one schema for the whole run) --------------------------
FEATURES = ("forecast_mean", "obs", "innovation", "spread", "prev_analysis", "ensemble")


@dataclass(frozen=True)
class EnvConfig:
    features: list[str]
    """Named observation features, each normalised, concatenated in this order; any of
    forecast_mean (n), obs (p), innovation y - H xb (p), spread: forecast ensemble std (n),
    prev_analysis: the previous xa_rl (n), ensemble: every forecast member (n_ens n, the old
    code's flattened ensemble; behaviour cloning then needs paths.store_ensembles). Never the truth."""
    window: int
    """Stack the features of the last `window` cycles (window agent: the LSTM runs over them)."""
    action_mode: Literal["absolute", "increment"]
    """absolute: xa_rl = unnormalise(action). increment: xa_rl = xb + action * half_range."""
    obs_bound: float
    """Observation and action spaces are Box(-obs_bound, obs_bound); features are clipped to it."""
    halt_bound: float
    """Terminate when any normalised forecast-mean component leaves [-halt_bound, halt_bound]."""


@dataclass(frozen=True)
class RewardConfig:
    target: Literal["stored", "online", "truth"]
    """stored: the precomputed EnKF xa. online: the EnKF analysis of the env's own forecast.
    truth: the true state (a study: can an RL analysis beat the EnKF it imitated?)."""
    clip: float
    """reward = 1 - clip(RMSE_norm(xa_rl, target), 0, clip): in [1 - clip, 1]."""


@dataclass(frozen=True)
class CurriculumConfig:
    episodes_k: int
    """With N active paths, ceil(episodes_k / N) consecutive completed episodes add a path."""


@dataclass(frozen=True)
class AgentConfig:
    kind: Literal["window", "local", "pointwise", "recurrent"]
    """window: PPO with an LSTM over the last env.window observations. local: the same per grid
    point, one network shared by all points over a stencil, one reward per cycle (rl/agents/policy.py).
    pointwise: every grid point of every path is an agent with its own reward, one shared network
    (rl/envs/pointwise.py). recurrent: RecurrentPPO."""
    point_net: Literal["lstm", "mlp"]
    """pointwise agent: an LSTM over the point's window (the researcher's design) or an MLP of
    the flattened window."""
    stencil: int
    """local agent: point i sees variables i-stencil .. i+stencil (cyclic)."""
    lstm_hidden: int
    """LSTM hidden size."""
    lstm_layers: int
    """Stacked LSTM layers."""
    pi_arch: list[int]
    """Hidden layers of the policy head after the LSTM."""
    vf_arch: list[int]
    """Hidden layers of the value head after the LSTM."""
    activation: Literal["relu", "tanh"]
    """Activation of the heads."""
    ortho_init: bool
    """Orthogonal initialisation (SB3's ortho_init)."""
    log_std_init: float | Literal['auto']
    """Initial log std of the Gaussian policy (normalised action units). auto: the log of the
    error the policy has left at the start of PPO, measured on held-out training paths (the
    cloned policy's RMSE; without cloning, copy-obs' RMSE vs the target); recorded in the run
    folder (exploration.json)."""


@dataclass(frozen=True)
class PPOConfig:
    learning_rate: float
    n_steps: int
    """Rollout length per environment."""
    batch_size: int
    """Minibatch size (window agent: transitions; recurrent agent: transitions per minibatch)."""
    n_epochs: int
    gamma: float
    gae_lambda: float
    clip_range: float
    ent_coef: float
    vf_coef: float
    max_grad_norm: float


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int
    """Behaviour-cloning epochs on the stored (features -> xa) pairs before PPO (0: none)."""
    batch_size: int
    """Minibatch size in transitions (recurrent agent: rounded to whole paths)."""
    learning_rate: float


@dataclass(frozen=True)
class TrainConfig:
    seed: int
    """Training seed (network initialisation, PPO sampling, path choice); the data come from the
    master seed. `enkfrl train --seed S` picks one of train.seeds."""
    seeds: list[int]
    """The training seeds of the final multi-seed runs (scripts/train_concurrent.sh)."""
    total_steps: int
    """Environment steps summed over envs (pointwise agent: path-steps, each n agent-steps)."""
    n_envs: int
    """Parallel environments."""
    paths_per_env: int
    """pointwise agent: paths one vectorised env steps at once (M)."""
    subproc: bool
    """Environments in subprocesses (SubprocVecEnv) rather than in the training process."""
    checkpoint_freq: int
    """Save model + curriculum + normaliser every so many environment steps."""
    eval_freq: int
    """Evaluate on the eval path (deterministic, whole path) every so many environment steps."""
    log_interval: int
    """SB3 writes its rollout/ and train/ scalars every log_interval iterations."""
    device: Literal["auto", "cpu", "cuda"]
    torch_threads: int
    """torch.set_num_threads for the training process (small nets run slower with many)."""


@dataclass(frozen=True)
class Config:
    experiment: str
    """Experiment name (filled from the experiments: key, not written in the block)."""
    seed: int
    """Master seed; every draw derives from (seed, stream, path, cycle)."""
    model: ModelConfig
    obs: ObsConfig
    filter: FilterConfig
    spinup: SpinupConfig
    paths: PathsConfig
    test: TestConfig
    env: EnvConfig
    reward: RewardConfig
    curriculum: CurriculumConfig
    agent: AgentConfig
    ppo: PPOConfig
    pretrain: PretrainConfig
    train: TrainConfig

    # ---- derived values, computed in one place -----------------------------------------------
    @property
    def steps_per_cycle(self) -> int:
        """Model steps between two observations."""
        return int(round(self.obs.t_obs / self.model.dt))

    @property
    def obs_index(self) -> "list[int]":
        """Indices of the observed variables (H selects these)."""
        return list(range(0, self.model.n, self.obs.stride))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self, sections: "tuple[str, ...] | None" = None) -> str:
        """Short stable hash of the resolved config, or of some of its top-level sections."""
        from enkf.io import hash_of
        d = self.to_dict()
        return hash_of(d if sections is None else {k: d[k] for k in sections})

    def data_settings(self) -> dict:
        """The settings that determine the arrays of paths.h5 (DATA_SECTIONS less NO_DATA_EFFECT)."""
        return _without(self.to_dict(), DATA_SECTIONS)

    def spinup_settings(self) -> dict:
        """The settings that determine the arrays of spinup.h5 (SPINUP_SECTIONS less NO_DATA_EFFECT)."""
        return _without(self.to_dict(), SPINUP_SECTIONS)

    def data_hash(self) -> str:
        """Hash of what determines the reference data (paths.h5): not the RL settings."""
        from enkf.io import hash_of
        return hash_of(self.data_settings())


# ---- when data files are stale: the one rule (enkf/spinup.py and enkf/precompute.py apply it) ----
DATA_SECTIONS = ("seed", "model", "obs", "filter", "spinup", "paths")
"""Sections of the config that paths.h5 depends on."""
SPINUP_SECTIONS = ("seed", "model", "spinup", "paths.n_paths")
"""Sections (and single keys) that spinup.h5 depends on."""
NO_DATA_EFFECT = ("paths.workers", "paths.burn_in", "spinup.thin")
"""Keys of those sections that change no stored array the readers compare, so changing them never
makes data stale: processes used by precompute, cycles the printed summaries skip, and the
thinning of the plot-only spin-up states (spinup.h5 records their steps, thinned_steps)."""


def _without(d: dict, sections: tuple) -> dict:
    out = {}
    for key in sections:
        section, _, sub = key.partition(".")
        if sub:
            out.setdefault(section, {})[sub] = copy.deepcopy(d[section][sub])
        else:
            out[section] = copy.deepcopy(d[section])
    for key in NO_DATA_EFFECT:
        section, _, sub = key.partition(".")
        if isinstance(out.get(section), dict):
            out[section].pop(sub, None)
    return out


def stale_keys(stored: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose value differs between a file's stored settings and the config's (keys
    in NO_DATA_EFFECT ignored): empty when the file is up to date."""
    diff = []
    for k in sorted(set(stored) | set(current)):
        key = f"{prefix}{k}"
        if key in NO_DATA_EFFECT:
            continue
        a, b = stored.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diff += stale_keys(a, b, key + ".")
        elif a != b:
            diff.append(key)
    return diff


# --------------------------------------------------------------------------------------------
# Generic dict -> dataclass conversion with type checks.
# --------------------------------------------------------------------------------------------
def _type_name(value) -> str:
    return type(value).__name__


def _convert(value, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # float | Literal['auto']: the literal first
        options = typing.get_args(tp)
        literals = [o for o in options if typing.get_origin(o) is Literal]
        for o in literals:
            if value in typing.get_args(o):
                return value
        others = [o for o in options if typing.get_origin(o) is not Literal]
        try:
            return _convert(value, others[0], key)
        except ConfigError:
            allowed = [v for o in literals for v in typing.get_args(o)]
            raise ConfigError(f"{key}: expected a number or one of {allowed}, got "
                              f"{_type_name(value)} {value!r}") from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_type_name(value)}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_type_name(value)} {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {_type_name(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_type_name(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str) and "e" in value.lower():
                hint = " (YAML 1.1 reads 1e-5 as a string: write 1.0e-5)"
            raise ConfigError(f"{key}: expected a number, got {_type_name(value)} {value!r}{hint}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_type_name(value)} {value!r}")
        return value
    raise TypeError(f"schema type {tp} of {key} is not supported")  # a bug in the schema


def _build(cls, data: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            raise ConfigError(f"{prefix + '.' if prefix else ''}{k}: unknown key")
    kwargs = {}
    for name in names:
        key = f"{prefix + '.' if prefix else ''}{name}"
        if name not in data:
            raise ConfigError(f"{key}: missing")
        kwargs[name] = _convert(data[name], hints[name], key)
    return cls(**kwargs)


def deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key; any other value in ``override`` replaces the one in ``base``."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --------------------------------------------------------------------------------------------
# Cross-field rules.
# --------------------------------------------------------------------------------------------
def _check(cfg: Config, split: str = "train") -> None:
    m, o, f, s, p = cfg.model, cfg.obs, cfg.filter, cfg.spinup, cfg.paths

    def need(ok: bool, msg: str):
        if not ok:
            raise ConfigError(msg)

    need(cfg.seed >= 0, f"seed: must be >= 0, got {cfg.seed}")
    need(m.dt > 0, f"model.dt: must be > 0, got {m.dt}")
    if m.name == "lorenz96":
        need(m.n >= 4, f"model.n: Lorenz-96 needs n >= 4, got {m.n}")
    else:
        need(m.n == 3, f"model.n: Lorenz-63 has n = 3, got {m.n}")
    ratio = o.t_obs / m.dt
    need(o.t_obs > 0 and abs(ratio - round(ratio)) < 1e-9 * max(1.0, ratio) and round(ratio) >= 1,
         f"obs.t_obs: must be a whole number of model.dt = {m.dt}, got {o.t_obs} ({ratio:g} steps)")
    need(1 <= o.stride <= m.n, f"obs.stride: must be in [1, model.n = {m.n}], got {o.stride}")
    need(o.error_var > 0, f"obs.error_var: R = error_var * I must be positive definite, got {o.error_var}")
    need(f.n_ens >= 2, f"filter.n_ens: must be >= 2, got {f.n_ens}")
    need(f.inflation > 0, f"filter.inflation: must be > 0, got {f.inflation}")
    need(f.init_spread >= 0, f"filter.init_spread: must be >= 0, got {f.init_spread}")
    if f.method == "letkf":
        need(m.name == "lorenz96", f"filter.method: letkf localises on a ring, Lorenz-96 only (model.name is {m.name})")
        need(f.loc_radius is not None and f.loc_radius > 0,
             f"filter.loc_radius: letkf needs a radius > 0 (grid points), got {f.loc_radius}")
    else:
        need(f.loc_radius is None, f"filter.loc_radius: only letkf localises, must be null for method "
                                   f"{f.method}, got {f.loc_radius}")
    need(s.steps >= 2, f"spinup.steps: must be >= 2, got {s.steps}")
    need(s.init_scale > 0, f"spinup.init_scale: must be > 0, got {s.init_scale}")
    need(0 < s.sample_fraction <= 1, f"spinup.sample_fraction: must be in (0, 1], got {s.sample_fraction}")
    need(1 <= s.thin <= s.steps, f"spinup.thin: must be in [1, spinup.steps], got {s.thin}")
    need(p.n_paths >= 1, f"paths.n_paths: must be >= 1, got {p.n_paths}")
    pool = int(s.steps * s.sample_fraction)
    need(p.n_paths <= pool,
         f"paths.n_paths: {p.n_paths} distinct starts cannot come from the last "
         f"{s.sample_fraction:g} of a {s.steps}-step spin-up ({pool} states)")
    need(p.n_cycles >= 1, f"paths.n_cycles: must be >= 1, got {p.n_cycles}")
    need(0 <= p.burn_in < p.n_cycles, f"paths.burn_in: must be in [0, paths.n_cycles), got {p.burn_in}")
    need(0 <= p.eval_path < p.n_paths, f"paths.eval_path: must be in [0, {p.n_paths}), got {p.eval_path}")
    need(len(p.train_paths) == 2, f"paths.train_paths: must be [first, last], got {p.train_paths}")
    first, last = p.train_paths
    need(0 <= first <= last < p.n_paths,
         f"paths.train_paths: need 0 <= first <= last < n_paths = {p.n_paths}, got {p.train_paths}")
    need(not first <= p.eval_path <= last,
         f"paths.eval_path: {p.eval_path} lies inside paths.train_paths {p.train_paths}")
    need(p.workers >= 0, f"paths.workers: must be >= 0, got {p.workers}")
    if split == "train":  # the test split's own config has seed == test.seed by construction
        ts = cfg.test
        need(ts.seed >= 0, f"test.seed: must be >= 0, got {ts.seed}")
        need(ts.seed != cfg.seed, f"test.seed: must differ from the master seed {cfg.seed}, got {ts.seed}")
        need(2 <= ts.n_paths <= pool,
             f"test.n_paths: must be in [2, {pool}] (the sampled spin-up tail), got {ts.n_paths}")

    e, r, c, a, ppo, t = cfg.env, cfg.reward, cfg.curriculum, cfg.agent, cfg.ppo, cfg.train
    need(len(e.features) >= 1, "env.features: at least one feature")
    for i, name in enumerate(e.features):
        need(name in FEATURES, f"env.features[{i}]: unknown feature {name!r} (have {list(FEATURES)})")
    need(len(set(e.features)) == len(e.features), f"env.features: repeated feature in {e.features}")
    need("ensemble" not in e.features or cfg.pretrain.epochs == 0 or cfg.paths.store_ensembles,
         "env.features: cloning the 'ensemble' feature needs paths.store_ensembles: true")
    need(e.window >= 1, f"env.window: must be >= 1, got {e.window}")
    need(e.obs_bound > 0, f"env.obs_bound: must be > 0, got {e.obs_bound}")
    need(e.halt_bound > 0, f"env.halt_bound: must be > 0, got {e.halt_bound}")
    need(r.clip > 0, f"reward.clip: must be > 0, got {r.clip}")
    need(c.episodes_k >= 1, f"curriculum.episodes_k: must be >= 1, got {c.episodes_k}")
    if a.kind == "local":
        need(o.stride == 1, "agent.kind: local needs every variable observed (obs.stride = 1)")
        need(0 <= a.stencil and 2 * a.stencil + 1 <= m.n,
             f"agent.stencil: must be in [0, (model.n - 1) / 2], got {a.stencil}")
    if a.kind == "pointwise":
        need(m.name == "lorenz96" and o.stride == 1,
             "agent.kind: pointwise needs a ring of observed variables (Lorenz-96, obs.stride = 1)")
        need(0 <= a.stencil and 2 * a.stencil + 1 <= m.n,
             f"agent.stencil: must be in [0, (model.n - 1) / 2], got {a.stencil}")
        need("ensemble" not in e.features, "env.features: the pointwise agent takes per-variable features only")
    need(a.lstm_hidden >= 1, f"agent.lstm_hidden: must be >= 1, got {a.lstm_hidden}")
    need(a.lstm_layers >= 1, f"agent.lstm_layers: must be >= 1, got {a.lstm_layers}")
    need(all(h >= 1 for h in a.pi_arch + a.vf_arch), "agent.pi_arch/vf_arch: layer sizes must be >= 1")
    need(ppo.learning_rate > 0, f"ppo.learning_rate: must be > 0, got {ppo.learning_rate}")
    need(ppo.n_steps >= 2, f"ppo.n_steps: must be >= 2, got {ppo.n_steps}")
    if a.kind == "pointwise":  # one vectorised env of paths_per_env paths x n points
        rollout, what = ppo.n_steps * t.paths_per_env * m.n, "n_steps * paths_per_env * model.n"
    else:
        rollout, what = ppo.n_steps * t.n_envs, "n_steps * n_envs"
    need(1 <= ppo.batch_size <= rollout,
         f"ppo.batch_size: must be in [1, {what} = {rollout}], got {ppo.batch_size}")
    need(ppo.n_epochs >= 1, f"ppo.n_epochs: must be >= 1, got {ppo.n_epochs}")
    need(0 <= ppo.gamma <= 1, f"ppo.gamma: must be in [0, 1], got {ppo.gamma}")
    need(0 <= ppo.gae_lambda <= 1, f"ppo.gae_lambda: must be in [0, 1], got {ppo.gae_lambda}")
    need(ppo.clip_range > 0, f"ppo.clip_range: must be > 0, got {ppo.clip_range}")
    need(ppo.ent_coef >= 0, f"ppo.ent_coef: must be >= 0, got {ppo.ent_coef}")
    need(ppo.vf_coef >= 0, f"ppo.vf_coef: must be >= 0, got {ppo.vf_coef}")
    need(ppo.max_grad_norm > 0, f"ppo.max_grad_norm: must be > 0, got {ppo.max_grad_norm}")
    pre = cfg.pretrain
    need(pre.epochs >= 0, f"pretrain.epochs: must be >= 0, got {pre.epochs}")
    need(pre.batch_size >= 1, f"pretrain.batch_size: must be >= 1, got {pre.batch_size}")
    need(pre.learning_rate > 0, f"pretrain.learning_rate: must be > 0, got {pre.learning_rate}")
    need(t.seed >= 0, f"train.seed: must be >= 0, got {t.seed}")
    need(len(t.seeds) >= 1 and all(sd >= 0 for sd in t.seeds) and len(set(t.seeds)) == len(t.seeds),
         f"train.seeds: a non-empty list of distinct seeds >= 0, got {t.seeds}")
    need(t.paths_per_env >= 1, f"train.paths_per_env: must be >= 1, got {t.paths_per_env}")
    need(t.total_steps >= 1, f"train.total_steps: must be >= 1, got {t.total_steps}")
    need(t.n_envs >= 1, f"train.n_envs: must be >= 1, got {t.n_envs}")
    for k in ("checkpoint_freq", "eval_freq", "log_interval", "torch_threads"):
        need(getattr(t, k) >= 1, f"train.{k}: must be >= 1, got {getattr(t, k)}")


# --------------------------------------------------------------------------------------------
# Public entry points.
# --------------------------------------------------------------------------------------------
class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice in one mapping (safe_load keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(path: Path):
    """The YAML document of a file (duplicate keys and tags refused), errors in one line."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        return yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        where = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError(f"{path}: not valid YAML ({e.problem}{where})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    raw = _load_yaml(path)
    if not isinstance(raw, dict) or set(raw) != {"shared", "experiments", "ablations", "sweep"}:
        raise ConfigError(f"{path}: top level must have exactly the keys 'shared', 'experiments', "
                          f"'ablations' and 'sweep'")
    for k in raw:
        if raw[k] is not None and not isinstance(raw[k], dict):
            raise ConfigError(f"{path}: {k}: expected a mapping, got {_type_name(raw[k])} {raw[k]!r}")
    return raw


def experiment_names(path: str | Path) -> list[str]:
    return list(read_yaml(path)["experiments"] or {})


def from_dict(data: dict) -> Config:
    """Validate an already merged dict (as written into run folders) into a Config."""
    cfg = _build(Config, data, "")
    _check(cfg)
    return cfg


SPLITS = ("train", "test")


def test_split(cfg: Config) -> Config:
    """The validated config of the test data: a separate spin-up and reference runs with master
    seed test.seed and test.n_paths paths, everything else as cfg. Its paths.eval_path is 0 and
    its paths.train_paths [1, n_paths - 1] only satisfy validation: the test split is never
    trained on."""
    d = cfg.to_dict()
    d["seed"] = cfg.test.seed
    d["paths"] = dict(d["paths"], n_paths=cfg.test.n_paths, eval_path=0,
                      train_paths=[1, cfg.test.n_paths - 1])
    split_cfg = _build(Config, d, "")
    _check(split_cfg, split="test")
    return split_cfg


test_split.__test__ = False  # not a pytest test function


def split_config(cfg: Config, split: str) -> Config:
    """cfg itself for the training split, test_split(cfg) for the test split."""
    if split not in SPLITS:
        raise ConfigError(f"--split: must be one of {list(SPLITS)}, got {split!r}")
    return cfg if split == "train" else test_split(cfg)


def _has_key(d, dotted: str) -> bool:
    for part in re.sub(r"\[\d+\]", "", dotted).split("."):
        if not isinstance(d, dict) or part not in d:
            return False
        d = d[part]
    return True


def load_config(path: str | Path, experiment: str) -> Config:
    """Read config.yaml, merge ``shared`` with ``experiments[experiment]``, validate. An error
    names the file and the block the key was written in (shared.agent.lstm_hidden or
    experiments.L96_1.filter.n_ens)."""
    raw = read_yaml(path)
    exps = raw["experiments"] or {}
    if experiment not in exps:
        raise ConfigError(f"--exp {experiment}: no such experiment in {path} (have: {', '.join(exps)})")
    own = exps[experiment] or {}
    shared = raw["shared"] or {}
    if not isinstance(own, dict):
        raise ConfigError(f"{path}: experiments.{experiment}: expected a mapping, got {_type_name(own)}")
    if "experiment" in own or "experiment" in shared:
        raise ConfigError(f"{path}: experiment: is set from the experiments: key, do not write it")
    merged = deep_merge(shared, own)
    merged["experiment"] = experiment
    try:
        return from_dict(merged)
    except ConfigError as e:
        key = str(e).split(": ", 1)[0]
        if _has_key(own, key):
            where = f"experiments.{experiment}."
        elif _has_key(shared, key):
            where = "shared."
        else:
            raise ConfigError(f"{path} (shared merged with experiments.{experiment}): {e}") from None
        raise ConfigError(f"{path}: {where}{e}") from None


def load_run_config(path: str | Path) -> Config:
    """The resolved config a run folder keeps (<run>/config.yaml); errors name that file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path.parent} is not a run folder (it has no config.yaml)")
    raw = _load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {_type_name(raw)}")
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def dump_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (loadable with ``load_run_config``), atomically."""
    from enkf.io import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------------------------
# Ablations: named studies, each a measure applied to variants of experiments.
# --------------------------------------------------------------------------------------------
ABLATION_MEASURES = ("enkf_skill", "sensitivity", "bounds", "clone", "finetune", "train")
# `train` studies are full training runs (`enkfrl train --study Q --variant V --seed S`): their seed
# is the training seed only, every variant learns from the experiment's own data
TRAINING_SEED_ONLY = ("train",)
_ABLATION_KEYS = {"question": str, "measure": str, "experiments": list, "seeds": list,
                  "overrides": dict, "variants": dict}


@dataclass(frozen=True)
class AblationRun:
    experiment: str
    variant: str
    seed: int
    cfg: Config
    overrides: dict
    """The variant's own overrides (what is varied), for the record."""


def ablation_names(path: str | Path) -> list[str]:
    return list(read_yaml(path)["ablations"] or {})


def load_ablation(path: str | Path, name: str) -> tuple[dict, list[AblationRun]]:
    """ablations.<name> of config.yaml: every (experiment, variant, seed) as a validated Config.

    A run's config is the experiment's, deep-merged with the ablation's `overrides` (what makes
    the study cheaper, shared by all variants), then the variant's own overrides, then the seed.
    """
    raw = read_yaml(path)
    studies = raw["ablations"] or {}
    if name not in studies:
        raise ConfigError(f"--question {name}: no such ablation in {path} (have: {', '.join(studies)})")
    study = studies[name]
    key = f"ablations.{name}"
    if not isinstance(study, dict):
        raise ConfigError(f"{key}: expected a mapping")
    for k in study:
        if k not in _ABLATION_KEYS:
            raise ConfigError(f"{key}.{k}: unknown key")
    for k, tp in _ABLATION_KEYS.items():
        if k not in study:
            raise ConfigError(f"{key}.{k}: missing")
        if not isinstance(study[k], tp):
            raise ConfigError(f"{key}.{k}: expected a {tp.__name__}, got {_type_name(study[k])}")
    if study["measure"] not in ABLATION_MEASURES:
        raise ConfigError(f"{key}.measure: must be one of {list(ABLATION_MEASURES)}, got {study['measure']!r}")
    if not all(isinstance(sd, int) and not isinstance(sd, bool) and sd >= 0 for sd in study["seeds"]) \
            or not study["seeds"]:
        raise ConfigError(f"{key}.seeds: expected a non-empty list of integers >= 0")
    runs = []
    for exp in study["experiments"]:
        base = load_config(path, exp).to_dict()
        for variant, own in study["variants"].items():
            if not isinstance(own, dict):
                raise ConfigError(f"{key}.variants.{variant}: expected a mapping")
            merged = deep_merge(deep_merge(base, study["overrides"]), own)
            for seed in study["seeds"]:
                if study["measure"] not in TRAINING_SEED_ONLY:
                    merged["seed"] = seed
                merged["train"] = dict(merged["train"], seed=seed)
                try:
                    cfg = from_dict(merged)
                except ConfigError as e:
                    raise ConfigError(f"{key}.variants.{variant} ({exp}): {e}") from None
                runs.append(AblationRun(exp, variant, seed, cfg, own))
    return {"question": study["question"], "measure": study["measure"]}, runs


# --------------------------------------------------------------------------------------------
# Sweep: how many runs (ablation trials, multi-seed training) are scheduled on Ray Tune.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepConfig:
    cpus_per_trial: int
    """CPUs Ray reserves for one trial; inside it torch, numba and BLAS use this many threads."""
    gpus_per_trial: float
    """GPUs Ray reserves for one trial (0.5: two trials share one GPU; 0: none)."""
    max_concurrent: int
    """Trials at once (0: as many as the cluster's free CPUs/GPUs allow)."""
    records_dir: str
    """Study records: <records_dir>/<Q>/<E>__<variant>__seed<S>.json per trial, table <records_dir>/<Q>.json."""
    trials_dir: str
    """Ray Tune's state and each trial's own folder: <trials_dir>/<Q>/."""


def load_sweep(path: str | Path) -> SweepConfig:
    """The sweep: block of config.yaml, validated."""
    sweep = _convert(read_yaml(path)["sweep"], SweepConfig, "sweep")
    if sweep.cpus_per_trial < 1:
        raise ConfigError(f"sweep.cpus_per_trial: must be >= 1, got {sweep.cpus_per_trial}")
    if sweep.gpus_per_trial < 0 or (sweep.gpus_per_trial > 1 and sweep.gpus_per_trial != int(sweep.gpus_per_trial)):
        raise ConfigError(f"sweep.gpus_per_trial: must be a fraction in [0, 1] or a whole number, "
                          f"got {sweep.gpus_per_trial}")
    if sweep.max_concurrent < 0:
        raise ConfigError(f"sweep.max_concurrent: must be >= 0 (0: as many as resources allow), "
                          f"got {sweep.max_concurrent}")
    for k in ("records_dir", "trials_dir"):
        if not getattr(sweep, k):
            raise ConfigError(f"sweep.{k}: must be a folder, got an empty string")
    return sweep
