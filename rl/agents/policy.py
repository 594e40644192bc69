"""The LSTM architectures of the agent (config section `agent:`).

kind: window     SB3 PPO; the observation is the window (W, F) of the last W cycles' features;
                 WindowLstmExtractor runs an nn.LSTM over it and hands the last hidden output to
                 the policy and value heads (pi_arch, vf_arch). Memory = the window.
kind: local      SB3 PPO with LocalActorCriticPolicy: one small network shared by every grid point
                 (Lorenz-96 is translation invariant on its ring). Point i sees the window of its
                 stencil (variables i-S..i+S of every feature) through a shared LSTM, a shared
                 MLP head gives its own analysis x_i and its share of the value (the value is the
                 mean over points). One episode is n times more samples for the same weights.
kind: pointwise  SB3 PPO on rl.envs.pointwise.PointwiseVecEnv: every grid point is an agent with its
                 own reward; its observation is the window of its stencil, and one policy (an
                 LSTM over the window as the window agent's, or with point_net: mlp SB3's MLP of
                 the flattened window) gives its scalar analysis.
                 With train.algo sac | td3 the same per-point network learns off-policy instead
                 (SB3's SAC / TD3 with a replay buffer: PointwiseSAC, PointwiseTD3): the actor
                 (pi_arch) and two Q critics (vf_arch) each behind their own extractor of that kind.
kind: recurrent  sb3-contrib RecurrentPPO with FastRecurrentPolicy: the LSTM state is carried
                 across the whole episode. Upstream's _process_sequence falls into a per-time-step
                 Python loop whenever a minibatch holds an episode start; after the buffer's split
                 an episode start can only be the first step of a sequence, so resetting those
                 states first and making one LSTM call computes the same thing (tests/test_policy.py
                 checks outputs and gradients against upstream).
"""
from __future__ import annotations

import gymnasium as gym
import torch as th
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from functools import partial

import math

import numpy as np
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import LinearSchedule
from torch import nn

from rl.config import Config

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


LSTM_DTYPES = {"float32": th.float32, "bfloat16": th.bfloat16}
"""agent.lstm_dtype -> the dtype the window LSTM computes in."""


def run_lstm(lstm: nn.LSTM, x: th.Tensor, dtype: th.dtype) -> th.Tensor:
    """lstm(x)'s output sequence, in float32; computed in dtype (bfloat16: under torch.autocast,
    which casts the inputs and weights of the LSTM's matrix products, not the stored weights)."""
    if dtype == th.float32:
        return lstm(x)[0]
    with th.autocast(x.device.type, dtype=dtype):
        output = lstm(x)[0]
    return output.float()


class WindowLstmExtractor(BaseFeaturesExtractor):
    """(B, W, F) window of feature vectors -> LSTM -> last hidden output (B, hidden)."""

    def __init__(self, observation_space: gym.spaces.Box, hidden: int, layers: int, dtype: str):
        super().__init__(observation_space, features_dim=hidden)
        self.lstm = nn.LSTM(observation_space.shape[-1], hidden, num_layers=layers, batch_first=True)
        self.dtype = LSTM_DTYPES[dtype]

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return run_lstm(self.lstm, observations, self.dtype)[:, -1]


def stencil_windows(observations: th.Tensor, neighbours: th.Tensor) -> th.Tensor:
    """(B, W, k n) windows of k per-variable features -> (B n, W, k (2S+1)): per grid point i the
    window of its stencil neighbours[i] (the torch twin of rl.envs.pointwise.gather_points)."""
    B, W, F = observations.shape
    n = neighbours.shape[0]
    x = observations.reshape(B, W, F // n, n)[..., neighbours]  # (B, W, k, n, 2S+1)
    return x.permute(0, 3, 1, 2, 4).reshape(B * n, W, -1)


class LocalLstmExtractor(BaseFeaturesExtractor):
    """(B, W, k n) windows of k per-variable features -> per grid point i the window of its
    stencil (k features of variables i-S..i+S, cyclic) through one shared LSTM -> (B, n hidden)."""

    def __init__(self, observation_space: gym.spaces.Box, n: int, stencil: int, hidden: int, layers: int,
                 dtype: str):
        super().__init__(observation_space, features_dim=n * hidden)
        self.dtype = LSTM_DTYPES[dtype]
        self.n, self.hidden = n, hidden
        self.k = observation_space.shape[-1] // n
        neighbours = (th.arange(n)[:, None] + th.arange(-stencil, stencil + 1)[None, :]) % n
        self.register_buffer("neighbours", neighbours, persistent=False)  # (n, 2S+1)
        self.lstm = nn.LSTM(self.k * (2 * stencil + 1), hidden, num_layers=layers, batch_first=True)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        B = observations.shape[0]
        output = run_lstm(self.lstm, stencil_windows(observations, self.neighbours), self.dtype)
        return output[:, -1].reshape(B, self.n * self.hidden)


def _mlp(sizes: list[int], activation) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return nn.Sequential(*layers)


class LocalMlpExtractor(nn.Module):
    """The same MLP at every point: (B, n h) -> (B, n h_pi) and (B, n h_vf)."""

    def __init__(self, n: int, point_dim: int, pi_arch: list[int], vf_arch: list[int], activation):
        super().__init__()
        self.n = n
        self.policy_net = _mlp([point_dim] + pi_arch, activation)
        self.value_net = _mlp([point_dim] + vf_arch, activation)
        self.point_dim_pi = pi_arch[-1] if pi_arch else point_dim
        self.point_dim_vf = vf_arch[-1] if vf_arch else point_dim
        self.latent_dim_pi, self.latent_dim_vf = n * self.point_dim_pi, n * self.point_dim_vf

    def _pointwise(self, net, features):
        B = features.shape[0]
        return net(features.reshape(B, self.n, -1)).reshape(B, -1)

    def forward_actor(self, features):
        return self._pointwise(self.policy_net, features)

    def forward_critic(self, features):
        return self._pointwise(self.value_net, features)

    def forward(self, features):
        return self.forward_actor(features), self.forward_critic(features)


class PointwiseHead(nn.Module):
    """(B, n h) -> one linear map per point, shared: (B, n); with mean=True the mean over points."""

    def __init__(self, n: int, point_dim: int, mean: bool = False):
        super().__init__()
        self.n, self.mean = n, mean
        self.linear = nn.Linear(point_dim, 1)

    def forward(self, latent):
        out = self.linear(latent.reshape(latent.shape[0], self.n, -1)).squeeze(-1)
        return out.mean(dim=1, keepdim=True) if self.mean else out


class LocalActorCriticPolicy(ActorCriticPolicy):
    """ActorCriticPolicy whose extractor, heads and action/value nets are shared by all points."""

    def __init__(self, *args, stencil: int = 2, **kwargs):
        self.stencil = stencil
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        n = self.action_space.shape[0]
        self.mlp_extractor = LocalMlpExtractor(n, self.features_dim // n, list(self.net_arch["pi"]),
                                               list(self.net_arch["vf"]), self.activation_fn)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        n = self.action_space.shape[0]
        self.action_net = PointwiseHead(n, self.mlp_extractor.point_dim_pi)
        self.value_net = PointwiseHead(n, self.mlp_extractor.point_dim_vf, mean=True)
        if self.ortho_init:
            self.action_net.apply(partial(self.init_weights, gain=0.01))
            self.value_net.apply(partial(self.init_weights, gain=1.0))
        # the optimiser must see the replaced heads
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict:
        return dict(super()._get_constructor_parameters(), stencil=self.stencil)


class FastRecurrentPolicy(RecurrentActorCriticPolicy):
    """RecurrentActorCriticPolicy whose sequences take one LSTM call even with episode starts."""

    @staticmethod
    def _process_sequence(features, lstm_states, episode_starts, lstm):
        n_seq = lstm_states[0].shape[1]
        # (padded batch, F) -> (max length, n_seq, F), as upstream
        features_sequence = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1)
        starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)
        if th.any(starts[1:] != 0.0):
            # an episode start inside a sequence: only upstream's loop is right
            return RecurrentActorCriticPolicy._process_sequence(features, lstm_states, episode_starts, lstm)
        keep = (1.0 - starts[0]).view(1, n_seq, 1)
        lstm_output, lstm_states = lstm(features_sequence, (keep * lstm_states[0], keep * lstm_states[1]))
        return th.flatten(lstm_output.transpose(0, 1), start_dim=0, end_dim=1), lstm_states


class PolicyWarmup:
    """SAC / TD3 whose warm-up (the first offpolicy.learning_starts agent-steps, before any update)
    acts with the initial policy and its exploration noise. SB3 draws uniformly over the action box
    there: increments of up to +-obs_bound normalised units, 100x the analysis error, which throw
    every forecast out of the halt bound and fill the buffer with states the agent never meets."""

    def _sample_action(self, learning_starts, action_noise=None, n_envs=1):
        return super()._sample_action(0, action_noise, n_envs)


class PointwiseSAC(PolicyWarmup, SAC):
    """SB3's SAC, the warm-up acting with the policy."""


class PointwiseTD3(PolicyWarmup, TD3):
    """SB3's TD3, the warm-up acting with the policy."""


OFF_POLICY = {"sac": (PointwiseSAC, SACPolicy), "td3": (PointwiseTD3, TD3Policy)}
"""train.algo -> (SB3 algorithm, its policy)."""


def policy_spec(cfg: Config) -> tuple[type, dict]:
    """(policy class, policy_kwargs) of the config's agent: what build_model hands SB3 and
    build_policy rebuilds a saved policy from."""
    a = cfg.agent
    if cfg.train.algo in OFF_POLICY:  # the pointwise agent (rl.config): its extractor, actor and critics
        kwargs = dict(net_arch=dict(pi=list(a.pi_arch), qf=list(a.vf_arch)), activation_fn=ACTIVATIONS[a.activation])
        if a.point_net == "lstm":
            kwargs.update(features_extractor_class=WindowLstmExtractor,
                          features_extractor_kwargs=dict(hidden=a.lstm_hidden, layers=a.lstm_layers,
                                                         dtype=a.lstm_dtype))
        return OFF_POLICY[cfg.train.algo][1], kwargs
    # log_std_init auto: set by rl.training.train once the error left at the start of PPO is measured
    log_std = 0.0 if a.log_std_init == "auto" else a.log_std_init
    common = dict(net_arch=dict(pi=list(a.pi_arch), vf=list(a.vf_arch)),
                  activation_fn=ACTIVATIONS[a.activation], ortho_init=a.ortho_init, log_std_init=log_std)
    window_lstm = dict(features_extractor_class=WindowLstmExtractor,
                       features_extractor_kwargs=dict(hidden=a.lstm_hidden, layers=a.lstm_layers, dtype=a.lstm_dtype))
    if a.kind == "pointwise":  # one agent per grid point (rl/envs/pointwise.py): plain PPO per point
        return ActorCriticPolicy, dict(common, **window_lstm) if a.point_net == "lstm" else common
    if a.kind == "window":
        return ActorCriticPolicy, dict(common, **window_lstm)
    if a.kind == "local":
        return LocalActorCriticPolicy, dict(
            common, stencil=a.stencil, features_extractor_class=LocalLstmExtractor,
            features_extractor_kwargs=dict(n=cfg.model.n, stencil=a.stencil, hidden=a.lstm_hidden,
                                           layers=a.lstm_layers, dtype=a.lstm_dtype))
    return FastRecurrentPolicy, dict(common, lstm_hidden_size=a.lstm_hidden, n_lstm_layers=a.lstm_layers)


def agent_spaces(cfg: Config) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """(observation space, action space) of one agent: a grid point's (pointwise agent) or a path's."""
    from rl.envs.assimilation import path_spaces
    from rl.envs.pointwise import point_action_space, point_observation_space
    if cfg.agent.kind == "pointwise":
        return point_observation_space(cfg), point_action_space(cfg)
    return path_spaces(cfg)


def build_policy(cfg: Config, device: str = "cpu"):
    """The config's policy network (untrained, on device), as SB3 builds it inside a model: the
    frame that saved weights (rl/training/runs.py load_policy) are loaded into."""
    policy_class, kwargs = policy_spec(cfg)
    obs_space, act_space = agent_spaces(cfg)
    lr = cfg.offpolicy.learning_rate if cfg.train.algo in OFF_POLICY else cfg.ppo.learning_rate
    return policy_class(obs_space, act_space, lambda _: lr, **kwargs).to(device)


def build_model(cfg: Config, env, tensorboard_log: str | None, device: str, seed: int):
    """A fresh model for the vectorised env: PPO / RecurrentPPO from the config's agent/ppo, or
    SAC / TD3 (train.algo) from agent/offpolicy. An off-policy model with offpolicy.exploration_std
    auto gets its exploration once the error left is measured (rl.training.train: set_exploration)."""
    policy_class, policy_kwargs = policy_spec(cfg)
    common = dict(policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log, device=device, seed=seed, verbose=0)
    if cfg.train.algo in OFF_POLICY:
        o = cfg.offpolicy
        extra = dict(policy_delay=o.policy_delay) if cfg.train.algo == "td3" else {}
        model = algo_class(cfg)(policy_class, env, learning_rate=o.learning_rate, buffer_size=o.buffer_size,
                                learning_starts=o.learning_starts, batch_size=o.batch_size, tau=o.tau,
                                gamma=o.gamma, train_freq=(o.train_freq, "step"), gradient_steps=o.gradient_steps,
                                **extra, **common)
        if cfg.agent.ortho_init:
            start_near_zero(model)
        if o.exploration_std != "auto":
            set_offpolicy_exploration(model, cfg, o.exploration_std)
        return fused_optimisers(model)
    p = cfg.ppo
    lr = p.learning_rate if p.lr_schedule == "constant" else LinearSchedule(p.learning_rate, 0.0, 1.0)
    return fused_optimisers(algo_class(cfg)(policy_class, env, learning_rate=lr,
                              n_steps=p.n_steps, batch_size=p.batch_size, n_epochs=p.n_epochs, gamma=p.gamma,
                              gae_lambda=p.gae_lambda, clip_range=p.clip_range, ent_coef=p.ent_coef,
                              vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm, **common))


def optimisers(model) -> list[th.optim.Optimizer]:
    """Every optimiser of an SB3 model: its policy's (PPO), its actor's and critic's (SAC, TD3)
    and SAC's entropy coefficient's."""
    found = [getattr(m, "optimizer", None) for m in model.policy.modules()]
    found.append(getattr(model, "ent_coef_optimizer", None))
    unique = {id(o): o for o in found if isinstance(o, th.optim.Optimizer)}
    return list(unique.values())


FUSED_ADAM_DEVICES = ("cpu", "cuda")
"""Devices on which torch's Adam has a fused kernel (and this project runs)."""


def fused_optimisers(model):
    """The model's optimisers step with torch's fused Adam kernels where torch has them for the
    device, else with its foreach kernels (all tensors at once). On the CPU with two threads the
    foreach step of the small per-point network took about twice the fused one (a few percent of a
    one-epoch PPO run's wall time). The same update as torch's per-parameter loop to float32
    rounding (tests/test_policy.py). Also after loading an optimiser state, which carries the
    flags it was saved with. Returns the model."""
    fused = model.device.type in FUSED_ADAM_DEVICES
    for optimiser in optimisers(model):
        for group in optimiser.param_groups:
            group["fused"], group["foreach"] = fused, not fused
    return model


def algo_class(cfg: Config):
    if cfg.train.algo in OFF_POLICY:
        return OFF_POLICY[cfg.train.algo][0]
    return RecurrentPPO if cfg.agent.kind == "recurrent" else PPO


def start_near_zero(model) -> None:
    """agent.ortho_init for SAC/TD3: the actor's output layer orthogonal with gain 0.01 and no bias,
    as PPO's action net, so the first analyses are the forecast plus small increments (SB3's default
    initialisation gives increments of ~1 normalised unit: paths halt before anything is learnt)."""
    actor = model.actor
    out = actor.mu if isinstance(actor.mu, nn.Linear) else [m for m in actor.mu if isinstance(m, nn.Linear)][-1]
    with th.no_grad():
        nn.init.orthogonal_(out.weight, gain=0.01)
        out.bias.zero_()
    if getattr(model, "actor_target", None) is not None:  # TD3: the target starts as the actor
        model.actor_target.load_state_dict(actor.state_dict())


def set_offpolicy_exploration(model, cfg: Config, std: float) -> dict:
    """SAC/TD3 exploration at std (normalised action units; SB3's squashed units are std / obs_bound).
    TD3: Gaussian action noise of that std, target smoothing noise and its clip as multiples of it.
    SAC: the initial policy std (the log-std layer's bias, its weights zero), the initial entropy
    coefficient (offpolicy.ent_coef_init) and the target entropy (offpolicy.target_entropy; auto: a
    Gaussian's of that std). Returns what was set, for exploration.json."""
    o, scaled = cfg.offpolicy, std / cfg.env.obs_bound
    if cfg.train.algo == "td3":
        model.action_noise = NormalActionNoise(np.zeros(1), np.full(1, scaled))
        model.target_policy_noise = o.target_policy_noise * scaled
        model.target_noise_clip = o.target_noise_clip * scaled
        return {"action_noise_std": std, "target_policy_noise": o.target_policy_noise * std,
                "target_noise_clip": o.target_noise_clip * std}
    alpha = std if o.ent_coef_init == "auto" else o.ent_coef_init
    entropy = (math.log(scaled) + 0.5 * math.log(2 * math.pi * math.e)) if o.target_entropy == "auto" \
        else o.target_entropy
    with th.no_grad():
        model.actor.log_std.weight.zero_()
        model.actor.log_std.bias.fill_(math.log(scaled))
        model.log_ent_coef.fill_(math.log(alpha))
    model.target_entropy = float(entropy)
    return {"initial_policy_std": std, "ent_coef_init": alpha, "target_entropy": float(entropy)}


def lstm_modules(policy) -> list[nn.Module]:
    """The LSTMs of a policy (for gradient-norm diagnostics)."""
    return [m for m in policy.modules() if isinstance(m, nn.LSTM)]
