"""Curriculum over training paths: start with one, add the next after enough clean episodes.

With N active paths, ceil(K / N) consecutive completed (not halted) episodes add path
first + N, up to the last training path; a halt resets the count. The eval path is never in
the range (the config schema forbids it).
"""
from __future__ import annotations

import math

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class Curriculum:
    def __init__(self, first: int, last: int, episodes_k: int):
        self.first, self.last, self.episodes_k = first, last, episodes_k
        self.n_active = 1
        self.consecutive = 0
        self.episodes = 0
        self.halts = 0

    @property
    def active_paths(self) -> list[int]:
        return list(range(self.first, self.first + self.n_active))

    @property
    def needed(self) -> int:
        """Consecutive completions needed to add a path now."""
        return math.ceil(self.episodes_k / self.n_active)

    @property
    def complete(self) -> bool:
        return self.first + self.n_active - 1 == self.last

    def record(self, completed: bool) -> bool:
        """Count one finished episode; True if a path was added."""
        self.episodes += 1
        if not completed:
            self.halts += 1
            self.consecutive = 0
            return False
        self.consecutive += 1
        if self.consecutive >= self.needed and not self.complete:
            self.n_active += 1
            self.consecutive = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"first": self.first, "last": self.last, "episodes_k": self.episodes_k,
                "n_active": self.n_active, "consecutive": self.consecutive,
                "episodes": self.episodes, "halts": self.halts}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Curriculum":
        c = cls(state["first"], state["last"], state["episodes_k"])
        c.n_active, c.consecutive = state["n_active"], state["consecutive"]
        c.episodes, c.halts = state["episodes"], state["halts"]
        return c


class CurriculumCallback(BaseCallback):
    """Owns the Curriculum in the training process and pushes the active set to every env
    (also to envs in subprocesses, through env_method)."""

    def __init__(self, curriculum: Curriculum):
        super().__init__()
        self.curriculum = curriculum
        self._window_halts: list[bool] = []

    def _on_training_start(self) -> None:
        self.training_env.env_method("set_active_paths", self.curriculum.active_paths)

    def _on_step(self) -> bool:
        infos = self.locals["infos"]
        for j in np.flatnonzero(self.locals["dones"]):  # in agent order, as the env reports them
            info = infos[j]
            if not info.get("episode_owner", True):  # pointwise: one count per path
                continue
            halted = bool(info.get("halted", False))
            self._window_halts.append(halted)
            if self.curriculum.record(completed=not halted):
                self.training_env.env_method("set_active_paths", self.curriculum.active_paths)
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record("curriculum/n_paths", self.curriculum.n_active)
        self.logger.record("curriculum/consecutive_completions", self.curriculum.consecutive)
        if self._window_halts:
            self.logger.record("episode/halt_rate", sum(self._window_halts) / len(self._window_halts))
            self._window_halts = []
