"""The RL, study and sweep schema of config.yaml, beside the code that uses it.

``Config`` is the DA config (enkf/config.py: seed, model, obs, filter, spinup, paths, test)
extended with the sections of the RL layer (env, reward, curriculum, agent, ppo, pretrain, train);
``ablations:``, ``sweep:`` and ``filters:`` are the studies' blocks. Loading, merging and the one-line errors
naming the key are enkf/config.py's machinery; the rules of these sections are here.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from enkf.config import (HASHED_AS_ABSENT, ConfigError, DAConfig, with_absent_nulls, _convert, _type_name,
                         build_experiment, deep_merge, load_yaml_mapping, merged_experiment, require)
from enkf.config import read_yaml as _read_yaml

LOG_STD_RANGE = (-10.0, 2.0)
"""agent.log_std_init bounds (normalised action units): std from 4.5e-5 to 7.4."""
TOP_BLOCKS = ("shared", "experiments", "ablations", "sweep", "filters")
"""The top level of config.yaml, exactly."""


# --------------------------------------------------------------------------------------------
# Schema. Field order is the order of config.yaml; each docstring is the key's documentation.
# --------------------------------------------------------------------------------------------
FEATURES = ("forecast_mean", "obs", "innovation", "spread", "prev_analysis", "ensemble", "correlation")


@dataclass(frozen=True)
class EnsembleFilterConfig:
    """The filter settings of the env's own ensemble where they differ from the stored filter's
    (filter:): the same keys, with the same rules; n_ens and init_spread stay the stored filter's."""
    method: Literal["enkf", "etkf", "letkf"]
    inflation: float
    inflation_stage: Literal["forecast", "analysis"]
    centre_perturbations: bool
    rotate: bool
    loc_radius: float | Literal[None]
    """letkf only (null otherwise), as filter.loc_radius."""


@dataclass(frozen=True)
class EnvConfig:
    features: list[str]
    """Named observation features, each normalised, concatenated in this order; any of
    forecast_mean (n), obs (p), innovation y - H xb (p), spread: forecast ensemble std (n),
    prev_analysis: the previous xa_rl (n), ensemble: every forecast member (n_ens n, the old
    code's flattened ensemble), correlation: the forecast ensemble's correlation of each variable
    with its next 1..agent.stencil neighbours on the ring (agent.stencil blocks of n, block d
    holding corr(x_j, x_{j+d}) at variable j: a point's stencil window then holds its correlations
    with every stencil neighbour). Cloning with ensemble or correlation needs
    paths.store_ensembles. Never the truth."""
    window: int
    """Stack the features of the last `window` cycles (window agent: the LSTM runs over them)."""
    action_mode: Literal["absolute", "increment"]
    """absolute: xa_rl = unnormalise(action). increment: xa_rl = xb + action * half_range."""
    obs_bound: float
    """Observation and action spaces are Box(-obs_bound, obs_bound); features are clipped to it."""
    halt_bound: float
    """Terminate when any normalised forecast-mean component leaves [-halt_bound, halt_bound]."""
    ensemble_filter: EnsembleFilterConfig | Literal[None]
    """null: the env's ensemble runs with the stored filter (filter:), whose analysis anomalies
    carry the next ensemble and whose analysis is the online target. A mapping (method, inflation,
    inflation_stage, centre_perturbations, rotate, loc_radius): the env's ensemble runs with these settings
    instead (e.g. the best classical filter of results/filters/<E>.json): the agent replaces that
    filter's mean and its anomalies carry on; with the filter's own mean as the action the env
    reproduces that filter's run. The stored run (reward.target stored, cloning) stays the
    stored filter's."""


@dataclass(frozen=True)
class RewardConfig:
    target: Literal["stored", "online", "truth", "next_obs"]
    """stored: the precomputed EnKF xa. online: the EnKF analysis of the env's own forecast.
    truth: the true state (a study: can an RL analysis beat the EnKF it imitated?).
    next_obs: no truth and no filter to imitate: the fit of the forecast started from xa_rl (the
    env's next forecast mean xb(k+1)) to the next cycle's observations y(k+1), per observed
    point |norm(xb(k+1))_i - norm(y(k+1))_i|; the reward of step k is computed inside step k,
    after the forecast to k+1. A path's last cycle has no next y: training episodes end one
    cycle before it."""
    clip: float
    """reward = 1 - clip(RMSE_norm(xa_rl, target), 0, clip): in [1 - clip, 1] (next_obs: the RMSE
    over the observed points of the next forecast vs y)."""


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
    lstm_dtype: Literal["float32", "bfloat16"]
    """The arithmetic of the LSTM over the window (window, local and pointwise-lstm agents):
    bfloat16 runs it under torch.autocast (the matrix units of CPUs that have them, e.g. AMX, and
    of GPUs), its output cast back to float32; weights, heads, loss and optimiser stay float32."""
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
    lr_schedule: Literal["constant", "linear"]
    """constant: learning_rate throughout. linear: from learning_rate at the start of PPO down to
    0 at train.total_steps (SB3's LinearSchedule on its progress_remaining, which a resumed run
    continues), the annealing of the PPO paper's Atari runs: late updates move the policy less."""
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
class OffPolicyConfig:
    """SB3's SAC and TD3 (train.algo sac | td3, pointwise agent): one replay buffer of agent-steps,
    the critics (two Q networks, agent.vf_arch) and the actor (agent.pi_arch) behind the same
    per-point feature extractor as PPO's (rl/agents/policy.py). Noise and entropy are in normalised
    action units (the action space is Box(-env.obs_bound, env.obs_bound); SB3's squashed units are
    these / obs_bound)."""
    learning_rate: float
    """Adam's step of the actor, the critics and (SAC) the entropy coefficient."""
    buffer_size: int
    """Replay buffer size in agent-steps (the newest are kept)."""
    learning_starts: int
    """Agent-steps collected before the first gradient step; the warm-up acts with the initial
    policy and its exploration (not SB3's uniform draw over the whole action box)."""
    batch_size: int
    """Agent-steps per gradient step."""
    tau: float
    """Polyak coefficient of the target networks."""
    gamma: float
    """Discount per cycle."""
    train_freq: int
    """Vec-steps (one cycle of all train.paths_per_env paths: paths x model.n agent-steps) between updates."""
    gradient_steps: int
    """Gradient steps per update."""
    exploration_std: float | Literal["auto"]
    """Exploration scale in normalised action units. auto: the error left at the start, measured as
    for agent.log_std_init auto (copy-obs' RMSE vs the reward's target on held-out training paths),
    recorded in exploration.json. TD3: the std of its Gaussian action noise. SAC: its initial
    policy std (every state)."""
    policy_delay: int
    """TD3: the actor and the targets are updated every policy_delay critic updates."""
    target_policy_noise: float
    """TD3: std of the target policy smoothing noise, in multiples of exploration_std."""
    target_noise_clip: float
    """TD3: that noise is clipped to +-target_noise_clip x exploration_std."""
    ent_coef_init: float | Literal["auto"]
    """SAC: initial entropy coefficient alpha (learned from there). auto: exploration_std."""
    target_entropy: float | Literal["auto"]
    """SAC: the policy entropy alpha is tuned to hold, in SB3's squashed action units. auto: the
    entropy of a Gaussian of std exploration_std there, ln(exploration_std / obs_bound) + ln(2 pi e)/2."""


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int
    """Behaviour-cloning epochs on the stored (features -> xa) pairs before PPO (0: none)."""
    target: Literal["truth", None]
    """null: clone the stored EnKF xa (imitation). truth: regress the truth from the same features
    along the same stored runs (inside env.ensemble_filter: along that filter's own runs of the
    training paths): the information ceiling of the network and its features (what a
    supervised map that sees the truth in training reaches; the cloned policy is then reported as
    "supervised")."""
    batch_size: int
    """Minibatch size in transitions (recurrent agent: rounded to whole paths)."""
    learning_rate: float


@dataclass(frozen=True)
class TrainConfig:
    algo: Literal["ppo", "sac", "td3"]
    """The learner: ppo (section ppo:), or SB3's off-policy sac | td3 (section offpolicy:,
    pointwise agent only)."""
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
    average_checkpoints: int
    """The final policy: 1 = the weights at the end of training; k > 1 = the mean of the weights
    of the checkpoints at the newest k multiples of checkpoint_freq (the iterates of a constant
    learning rate still move late in a run; their mean moves less: stochastic weight averaging)."""
    eval_freq: int
    """Evaluate on the eval path (deterministic, whole path) every so many environment steps."""
    log_interval: int
    """SB3 writes its rollout/ and train/ scalars every log_interval iterations (PPO) or
    path-episodes (SAC, TD3)."""
    device: Literal["auto", "cpu", "cuda"]
    torch_threads: int
    """torch.set_num_threads for the training process (small nets run slower with many)."""
    env_threads: int
    """numba threads of the batched closed loop (its forecast and analysis kernels)."""
    block_columns: int
    """Batched forecast: members of several paths integrated as one column block of at most this
    many columns (wider blocks vectorise better, too wide ones leave the caches)."""



@dataclass(frozen=True)
class Config(DAConfig):
    """The whole run: the DA sections, then the RL sections."""
    env: EnvConfig
    reward: RewardConfig
    curriculum: CurriculumConfig
    agent: AgentConfig
    ppo: PPOConfig
    offpolicy: OffPolicyConfig | Literal[None]
    """null only in run folders made before SAC/TD3 existed (their train.algo is ppo)."""
    pretrain: PretrainConfig
    train: TrainConfig

    def ensemble_config(self) -> "Config":
        """This config with the filter of the env's own ensemble (env.ensemble_filter, or the
        stored filter when null): what the env's System is built from."""
        if self.env.ensemble_filter is None:
            return self
        return dataclasses.replace(self, filter=dataclasses.replace(
            self.filter, **dataclasses.asdict(self.env.ensemble_filter)))

    def validate(self, split: str = "train") -> None:
        """The DA rules, then the rules of the RL sections (one-line errors naming the key)."""
        super().validate(split)
        cfg, need = self, require
        m, o = cfg.model, cfg.obs
        e, r, c, a, ppo, t = cfg.env, cfg.reward, cfg.curriculum, cfg.agent, cfg.ppo, cfg.train
        need(len(e.features) >= 1, "env.features: at least one feature")
        for i, name in enumerate(e.features):
            need(name in FEATURES, f"env.features[{i}]: unknown feature {name!r} (have {list(FEATURES)})")
        need(len(set(e.features)) == len(e.features), f"env.features: repeated feature in {e.features}")
        for name in ("ensemble", "correlation"):
            need(name not in e.features or cfg.pretrain.epochs == 0 or cfg.paths.store_ensembles,
                 f"env.features: cloning the {name!r} feature needs paths.store_ensembles: true")
        if "correlation" in e.features:
            need(m.name == "lorenz96" and a.stencil >= 1,
                 "env.features: 'correlation' needs a ring (Lorenz-96) and agent.stencil >= 1")
        if e.ensemble_filter is not None:
            try:  # the stored filter's rules, on the env's filter
                DAConfig.validate(self.ensemble_config(), split)
            except ConfigError as err:
                raise ConfigError(str(err).replace("filter.", "env.ensemble_filter.", 1)) from None
            need(cfg.pretrain.epochs == 0 or cfg.pretrain.target == "truth",
                 "env.ensemble_filter: cloning imitates the stored run, whose features come from the "
                 "stored filter's ensemble: set pretrain.epochs: 0 (or pretrain.target: truth, which "
                 "clones the truth along the env's own filter's runs)")
            for name in ("ensemble", "correlation"):
                need(name not in e.features or cfg.pretrain.epochs == 0,
                     f"env.features: cloning the {name!r} feature inside env.ensemble_filter is not supported")
        need(e.window >= 1, f"env.window: must be >= 1, got {e.window}")
        need(e.obs_bound > 0, f"env.obs_bound: must be > 0, got {e.obs_bound}")
        need(e.halt_bound > 0, f"env.halt_bound: must be > 0, got {e.halt_bound}")
        need(r.clip > 0, f"reward.clip: must be > 0, got {r.clip}")
        need(c.episodes_k >= 1, f"curriculum.episodes_k: must be >= 1, got {c.episodes_k}")
        if a.kind == "local":
            need(o.stride == 1, "agent.kind: local needs every variable observed (obs.stride = 1)")
            need(0 <= a.stencil and 2 * a.stencil + 1 <= m.n,
                 f"agent.stencil: must be in [0, (model.n - 1) / 2], got {a.stencil}")
        need(a.lstm_dtype == "float32" or (a.kind in ("window", "local") or
                                           (a.kind == "pointwise" and a.point_net == "lstm")),
             f"agent.lstm_dtype: bfloat16 is for the LSTM over the window (kind window, local, or pointwise "
             f"with point_net lstm), not kind {a.kind!r} point_net {a.point_net!r}")
        if a.kind == "pointwise":
            need(m.name == "lorenz96" and o.stride == 1,
                 "agent.kind: pointwise needs a ring of observed variables (Lorenz-96, obs.stride = 1)")
            need(0 <= a.stencil and 2 * a.stencil + 1 <= m.n,
                 f"agent.stencil: must be in [0, (model.n - 1) / 2], got {a.stencil}")
            need("ensemble" not in e.features, "env.features: the pointwise agent takes per-variable features only")
        need(a.lstm_hidden >= 1, f"agent.lstm_hidden: must be >= 1, got {a.lstm_hidden}")
        need(a.lstm_layers >= 1, f"agent.lstm_layers: must be >= 1, got {a.lstm_layers}")
        need(all(h >= 1 for h in a.pi_arch + a.vf_arch), "agent.pi_arch/vf_arch: layer sizes must be >= 1")
        if a.log_std_init != "auto":  # exp(log_std) is the policy's std: finite and positive in float32
            need(LOG_STD_RANGE[0] <= a.log_std_init <= LOG_STD_RANGE[1],
                 f"agent.log_std_init: must be 'auto' or in [{LOG_STD_RANGE[0]}, {LOG_STD_RANGE[1]}] "
                 f"(std {math.exp(LOG_STD_RANGE[0]):.1e} .. {math.exp(LOG_STD_RANGE[1]):.1f}), got {a.log_std_init}")
        # the sizes the rollout rule below multiplies, before it: an error names the key that is wrong
        need(t.paths_per_env >= 1, f"train.paths_per_env: must be >= 1, got {t.paths_per_env}")
        need(t.n_envs >= 1, f"train.n_envs: must be >= 1, got {t.n_envs}")
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
        if t.algo != "ppo":
            need(a.kind == "pointwise", f"train.algo: {t.algo} runs the pointwise agent only (one "
                 f"point's window and scalar action per sample), got agent.kind {a.kind}")
            need(cfg.offpolicy is not None, f"offpolicy: train.algo {t.algo} needs the offpolicy: section")
            need(cfg.pretrain.epochs == 0, f"pretrain.epochs: behaviour cloning warm-starts PPO's policy "
                 f"only, set 0 with train.algo {t.algo}")
        if cfg.offpolicy is not None:
            self._validate_offpolicy(cfg.offpolicy)
        pre = cfg.pretrain
        need(pre.epochs >= 0, f"pretrain.epochs: must be >= 0, got {pre.epochs}")
        need(pre.target is None or pre.epochs >= 1, "pretrain.target: truth needs pretrain.epochs >= 1")
        need(pre.batch_size >= 1, f"pretrain.batch_size: must be >= 1, got {pre.batch_size}")
        need(pre.learning_rate > 0, f"pretrain.learning_rate: must be > 0, got {pre.learning_rate}")
        need(t.seed >= 0, f"train.seed: must be >= 0, got {t.seed}")
        need(len(t.seeds) >= 1 and all(sd >= 0 for sd in t.seeds) and len(set(t.seeds)) == len(t.seeds),
             f"train.seeds: a non-empty list of distinct seeds >= 0, got {t.seeds}")
        need(t.paths_per_env >= 1, f"train.paths_per_env: must be >= 1, got {t.paths_per_env}")
        need(t.total_steps >= 1, f"train.total_steps: must be >= 1, got {t.total_steps}")
        need(t.n_envs >= 1, f"train.n_envs: must be >= 1, got {t.n_envs}")
        for k in ("checkpoint_freq", "eval_freq", "log_interval", "torch_threads", "env_threads", "block_columns",
                  "average_checkpoints"):
            need(getattr(t, k) >= 1, f"train.{k}: must be >= 1, got {getattr(t, k)}")
        need(t.average_checkpoints == 1 or t.average_checkpoints * t.checkpoint_freq <= t.total_steps,
             f"train.average_checkpoints: {t.average_checkpoints} checkpoints every {t.checkpoint_freq} path-steps "
             f"need train.total_steps >= {t.average_checkpoints * t.checkpoint_freq}, got {t.total_steps}")


    @staticmethod
    def _validate_offpolicy(o: OffPolicyConfig) -> None:
        need = require
        for k in ("learning_rate", "tau", "target_noise_clip"):
            need(getattr(o, k) > 0, f"offpolicy.{k}: must be > 0, got {getattr(o, k)}")
        for k in ("batch_size", "train_freq", "gradient_steps", "policy_delay"):
            need(getattr(o, k) >= 1, f"offpolicy.{k}: must be >= 1, got {getattr(o, k)}")
        need(o.buffer_size >= o.batch_size,
             f"offpolicy.buffer_size: must be >= offpolicy.batch_size = {o.batch_size}, got {o.buffer_size}")
        need(o.learning_starts >= 0, f"offpolicy.learning_starts: must be >= 0, got {o.learning_starts}")
        need(o.tau <= 1, f"offpolicy.tau: must be in (0, 1], got {o.tau}")
        need(0 <= o.gamma <= 1, f"offpolicy.gamma: must be in [0, 1], got {o.gamma}")
        need(o.target_policy_noise >= 0, f"offpolicy.target_policy_noise: must be >= 0, got {o.target_policy_noise}")
        for k in ("exploration_std", "ent_coef_init"):
            v = getattr(o, k)
            need(v == "auto" or v > 0, f"offpolicy.{k}: must be 'auto' or > 0, got {v}")


ADDED_SETTINGS = HASHED_AS_ABSENT
"""Keys added to the schema after runs were made, with the value every earlier run had (the same
table as enkf.config.HASHED_AS_ABSENT, which hashes such a key as absent at that value, so records
made before the key stay valid): a run folder's config.yaml (and run.json) without one reads as
that value."""


def with_added_settings(data: dict) -> dict:
    """data (a resolved config dict of a run folder) with every ADDED_SETTINGS key it lacks set to
    the value earlier runs had, and every null-able key it lacks set to null."""
    out = with_absent_nulls(Config, data)
    for key, value in ADDED_SETTINGS.items():
        section, _, name = key.partition(".")
        if isinstance(out.get(section), dict) and name not in out[section]:
            out[section] = dict(out[section], **{name: value})
    return out


# --------------------------------------------------------------------------------------------
# Public entry points.
# --------------------------------------------------------------------------------------------
def read_yaml(path: str | Path) -> dict:
    """The top level of config.yaml: exactly TOP_BLOCKS."""
    return _read_yaml(path, TOP_BLOCKS, exact=True)


def experiment_names(path: str | Path) -> list[str]:
    return list(read_yaml(path)["experiments"] or {})


def from_dict(data: dict) -> Config:
    """Validate an already merged dict (as written into run folders) into a Config."""
    return Config.from_dict(data)


def load_config(path: str | Path, experiment: str) -> Config:
    """Read config.yaml, merge ``shared`` with ``experiments[experiment]``, validate. An error
    names the file and the block the key was written in (shared.agent.lstm_hidden or
    experiments.L96_1.filter.n_ens)."""
    merged, shared, own = merged_experiment(read_yaml(path), path, experiment)
    return build_experiment(Config, merged, shared, own, path, experiment)


def agents_per_path(cfg) -> int:
    """Agent-steps (SB3's env steps) in one path-step (one cycle of one path): model.n for the
    pointwise agent (every grid point acts), 1 otherwise."""
    return cfg.model.n if cfg.agent.kind == "pointwise" else 1


def seed_config(cfg: Config, seed: int | None) -> Config:
    """The config of one training seed: cfg with train.seed = seed (None: cfg as it is). The seed
    must be train.seed or one of train.seeds; the data keep the master seed."""
    if seed is None:
        return cfg
    if seed not in cfg.train.seeds and seed != cfg.train.seed:
        raise ConfigError(f"--seed {seed}: not one of train.seeds {cfg.train.seeds}")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))


def load_run_config(path: str | Path) -> Config:
    """The resolved config a run folder keeps (<run>/config.yaml); errors name that file."""
    raw = with_added_settings(load_yaml_mapping(path))
    try:
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# --------------------------------------------------------------------------------------------
# Ablations: named studies, each a measure applied to variants of experiments.
# --------------------------------------------------------------------------------------------
ABLATION_MEASURES = ("enkf_skill", "sensitivity", "bounds", "clone", "finetune", "train")
# `train` studies are full training runs (`enkfrl train --study Q --variant V --seed S`): their seed
# is the training seed only, every variant learns from the experiment's own data
TRAINING_SEED_ONLY = ("train",)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")
NAME_RULE = "may hold letters, digits and _ . + = - only (no '/', no '..', not starting with '.' or '-')"
"""Names that become parts of file names (studies, variants, run ids): they cannot leave their folder."""


def is_name(name) -> bool:
    return isinstance(name, str) and bool(NAME_PATTERN.fullmatch(name)) and ".." not in name


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
    if not is_name(name):
        raise ConfigError(f"{key}: a study name {NAME_RULE}")
    for k in ("experiments", "seeds"):
        twice = sorted({str(v) for v in study[k] if study[k].count(v) > 1})
        if twice:
            raise ConfigError(f"{key}.{k}: {', '.join(twice)} listed more than once (each would be the same trials again)")
    for variant in study["variants"]:
        if not is_name(variant):
            raise ConfigError(f"{key}.variants: {variant!r}: a variant name {NAME_RULE}")
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
    first = {}
    for r in runs:  # two variants with one setting would be the same trials again
        other = first.setdefault((r.experiment, r.seed, r.cfg.hash()), r.variant)
        if other != r.variant:
            raise ConfigError(f"{key}.variants: {other} and {r.variant} give {r.experiment} the same settings "
                              f"(each would be the same trials again): drop one")
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

# --------------------------------------------------------------------------------------------
# Classical filters of an experiment's ensemble: `enkfrl filters --exp E` (rl/studies/filters.py).
# --------------------------------------------------------------------------------------------
FILTER_GRID_KEYS = {"inflation": float, "inflation_stage": str, "loc_radius": float}
"""What the filters grid varies, per method: lists of filter.<key> values."""


@dataclass(frozen=True)
class FilterSetting:
    experiment: str
    method: str
    inflation: float
    inflation_stage: str
    loc_radius: float | None
    cfg: Config
    """The experiment's config with filter.method, inflation, inflation_stage and loc_radius
    replaced (every other filter key, n_ens included, is the experiment's)."""

    @property
    def name(self) -> str:
        loc = "" if self.loc_radius is None else f"_loc{self.loc_radius:g}"
        return f"{self.method}_{self.inflation_stage}_infl{self.inflation:g}{loc}"

    def summary(self) -> dict:
        return {"method": self.method, "inflation": self.inflation, "inflation_stage": self.inflation_stage,
                "loc_radius": self.loc_radius}


def filter_grid(path: str | Path, experiment: str) -> dict:
    """filters.grid deep-merged with filters.experiments.<experiment> (a list replaces the grid's,
    a method set to null is left out): {method: {key: [values]}}, validated."""
    raw = read_yaml(path)
    block = raw["filters"] or {}
    for k in block:
        if k not in ("grid", "experiments"):
            raise ConfigError(f"filters.{k}: unknown key (have grid, experiments)")
    for k in ("grid", "experiments"):
        if not isinstance(block.get(k), dict):
            raise ConfigError(f"filters.{k}: expected a mapping")
    exps = block["experiments"]
    if experiment not in exps:
        raise ConfigError(f"--exp {experiment}: not under filters.experiments in {path} (have: {', '.join(exps)})")
    own = exps[experiment] or {}
    if not isinstance(own, dict):
        raise ConfigError(f"filters.experiments.{experiment}: expected a mapping of methods")
    grid = {}
    for method in list(block["grid"]) + [m for m in own if m not in block["grid"]]:
        key = f"filters.grid.{method}"
        if method in own and own[method] is None:
            continue
        if method not in block["grid"]:
            raise ConfigError(f"filters.experiments.{experiment}.{method}: not a method of filters.grid")
        base, mine = block["grid"][method], own.get(method) or {}
        for where, m in ((key, base), (f"filters.experiments.{experiment}.{method}", mine)):
            if not isinstance(m, dict):
                raise ConfigError(f"{where}: expected a mapping of lists")
            for k, v in m.items():
                if k not in FILTER_GRID_KEYS:
                    raise ConfigError(f"{where}.{k}: unknown key (have {', '.join(FILTER_GRID_KEYS)})")
                if not isinstance(v, list) or not v:
                    raise ConfigError(f"{where}.{k}: expected a non-empty list, got {_type_name(v)} {v!r}")
        grid[method] = {**base, **mine}
    if not grid:
        raise ConfigError(f"filters.experiments.{experiment}: leaves no method to run")
    return grid


def load_filter_study(path: str | Path, experiment: str) -> list[FilterSetting]:
    """Every setting of the experiment's filters grid as a validated config (an error names the
    grid key and the setting)."""
    base = load_config(path, experiment)
    out = []
    for method, keys in filter_grid(path, experiment).items():
        where = f"filters.grid.{method}"
        missing = [k for k in ("inflation", "inflation_stage") if k not in keys]
        if method == "letkf" and "loc_radius" not in keys:
            missing.append("loc_radius")
        if missing:
            raise ConfigError(f"{where}.{missing[0]}: missing")
        if method != "letkf" and "loc_radius" in keys:
            raise ConfigError(f"{where}.loc_radius: only letkf localises")
        radii = keys.get("loc_radius", [None])
        for stage in keys["inflation_stage"]:
            for inflation in keys["inflation"]:
                for radius in radii:
                    own = {"method": method, "inflation": inflation, "inflation_stage": stage, "loc_radius": radius}
                    try:
                        cfg = from_dict(deep_merge(base.to_dict(), {"filter": own}))
                    except ConfigError as e:
                        raise ConfigError(f"{where} ({experiment}): {e}") from None
                    f = cfg.filter
                    out.append(FilterSetting(experiment, method, f.inflation, f.inflation_stage, f.loc_radius, cfg))
    names = [s.name for s in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ConfigError(f"filters.grid ({experiment}): the setting {dup} is listed twice")
    return out
