"""The LSTM architectures of the agent (config section `agent:`).

kind: window     SB3 PPO; the observation is the window (W, F) of the last W cycles' features;
                 WindowLstmExtractor runs an nn.LSTM over it and hands the last hidden output to
                 the policy and value heads (pi_arch, vf_arch). Memory = the window.
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
from stable_baselines3 import PPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from enkf.config import Config

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class WindowLstmExtractor(BaseFeaturesExtractor):
    """(B, W, F) window of feature vectors -> LSTM -> last hidden output (B, hidden)."""

    def __init__(self, observation_space: gym.spaces.Box, hidden: int, layers: int):
        super().__init__(observation_space, features_dim=hidden)
        self.lstm = nn.LSTM(observation_space.shape[-1], hidden, num_layers=layers, batch_first=True)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        output, _ = self.lstm(observations)
        return output[:, -1]


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


def build_model(cfg: Config, env, tensorboard_log: str | None, device: str, seed: int):
    """A fresh PPO / RecurrentPPO model for the vectorised env, from the config's agent/ppo."""
    a, p = cfg.agent, cfg.ppo
    common_policy = dict(net_arch=dict(pi=list(a.pi_arch), vf=list(a.vf_arch)),
                         activation_fn=ACTIVATIONS[a.activation], ortho_init=a.ortho_init,
                         log_std_init=a.log_std_init)
    common_algo = dict(learning_rate=p.learning_rate, n_steps=p.n_steps, batch_size=p.batch_size,
                       n_epochs=p.n_epochs, gamma=p.gamma, gae_lambda=p.gae_lambda,
                       clip_range=p.clip_range, ent_coef=p.ent_coef, vf_coef=p.vf_coef,
                       max_grad_norm=p.max_grad_norm, tensorboard_log=tensorboard_log,
                       device=device, seed=seed, verbose=0)
    if a.kind == "window":
        policy_kwargs = dict(common_policy, features_extractor_class=WindowLstmExtractor,
                             features_extractor_kwargs=dict(hidden=a.lstm_hidden, layers=a.lstm_layers))
        return PPO("MlpPolicy", env, policy_kwargs=policy_kwargs, **common_algo)
    policy_kwargs = dict(common_policy, lstm_hidden_size=a.lstm_hidden, n_lstm_layers=a.lstm_layers)
    return RecurrentPPO(FastRecurrentPolicy, env, policy_kwargs=policy_kwargs, **common_algo)


def algo_class(cfg: Config):
    return PPO if cfg.agent.kind == "window" else RecurrentPPO


def lstm_modules(policy) -> list[nn.Module]:
    """The LSTMs of a policy (for gradient-norm diagnostics)."""
    return [m for m in policy.modules() if isinstance(m, nn.LSTM)]
