"""The curriculum over training paths (rl/training/curriculum.py) and its callback driving real envs."""
from __future__ import annotations

import dataclasses

import math

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import SubprocVecEnv

from rl.config import load_config
from rl.training.curriculum import Curriculum, CurriculumCallback
from rl.agents.policy import build_model
from rl.training.train import make_env_fn

from test_env import one_torch_thread  # noqa: F401  (autouse)
from test_env import CONFIG, load_smoke, smoke_workdir


def completions_to_advance(c: Curriculum) -> int:
    """Record completed episodes until a path is added; how many it took."""
    n = 0
    while True:
        n += 1
        if c.record(True):
            return n
        assert n <= 10 * c.episodes_k, "never advanced"


def test_thresholds_k100():
    c = Curriculum(1, 99, 100)
    assert c.active_paths == [1] and c.n_active == 1 and c.needed == 100
    for n_active, need in [(1, 100), (2, 50), (3, 34), (4, 25), (6, 17), (7, 15)]:
        while c.n_active < n_active:
            completions_to_advance(c)
        assert c.n_active == n_active and c.consecutive == 0
        assert c.needed == math.ceil(100 / n_active) == need
        assert completions_to_advance(c) == need
        assert c.active_paths == list(range(1, n_active + 2))


def test_first_advance_needs_exactly_k():
    c = Curriculum(1, 99, 100)
    for i in range(99):
        assert not c.record(True)
    assert c.n_active == 1 and c.consecutive == 99
    assert c.record(True)
    assert c.n_active == 2 and c.consecutive == 0 and c.active_paths == [1, 2]


def test_halt_resets_the_count():
    c = Curriculum(1, 99, 100)
    completions_to_advance(c)
    completions_to_advance(c)
    assert c.n_active == 3
    for _ in range(33):
        assert not c.record(True)
    assert c.consecutive == 33
    assert not c.record(False)
    assert c.consecutive == 0 and c.halts == 1 and c.n_active == 3
    for _ in range(33):
        assert not c.record(True)
    assert c.n_active == 3
    assert c.record(True) and c.n_active == 4
    assert c.episodes == 2 * 0 + 100 + 50 + 33 + 1 + 34


def test_never_exceeds_last():
    c = Curriculum(2, 4, 1)
    for _ in range(50):
        c.record(True)
        assert c.active_paths[-1] <= 4
    assert c.active_paths == [2, 3, 4] and c.complete and c.n_active == 3
    single = Curriculum(5, 5, 3)
    assert single.complete
    for _ in range(10):
        assert not single.record(True)
    assert single.active_paths == [5]


@pytest.mark.parametrize("experiment", ["smoke", "L96_1"])
def test_never_includes_the_eval_path(experiment):
    cfg = load_config(CONFIG, experiment)
    first, last = cfg.paths.train_paths
    c = Curriculum(first, last, cfg.curriculum.episodes_k)
    rng = np.random.default_rng(0)
    seen = set(c.active_paths)
    while not c.complete:
        c.record(bool(rng.random() > 0.05))
        assert cfg.paths.eval_path not in c.active_paths
        seen.update(c.active_paths)
    assert c.active_paths == list(range(first, last + 1))
    assert cfg.paths.eval_path not in seen and len(seen) == last - first + 1


def test_state_dict_round_trip():
    c = Curriculum(1, 99, 10)
    for ok in [True] * 10 + [True] * 3 + [False] + [True] * 2:
        c.record(ok)
    state = c.state_dict()
    d = Curriculum.from_state_dict(state)
    assert d.state_dict() == state
    assert state == {"first": 1, "last": 99, "episodes_k": 10, "n_active": 2, "consecutive": 2,
                     "episodes": 16, "halts": 1}
    # both continue identically
    for ok in [True, False, True, True, True, True, True]:
        assert c.record(ok) == d.record(ok)
    assert c.state_dict() == d.state_dict() and c.n_active == 3


class PathRecorder(BaseCallback):
    def __init__(self):
        super().__init__()
        self.episodes = []  # (env index, path, halted)

    def _on_step(self) -> bool:
        for i, (done, info) in enumerate(zip(self.locals["dones"], self.locals["infos"])):
            if done:
                self.episodes.append((i, info["path"], info["halted"]))
        return True


def test_callback_drives_subprocess_envs(tmp_path_factory):
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="window", log_std_init=-3.5))  # one agent per env; no cloning here to set the std
    assert cfg.curriculum.episodes_k == 4
    first, last = cfg.paths.train_paths
    cur = Curriculum(first, last, cfg.curriculum.episodes_k)
    venv = SubprocVecEnv([make_env_fn(cfg, data, norm, [first], cfg.seed + i) for i in range(2)],
                         start_method="fork")
    try:
        model = build_model(cfg, venv, None, "cpu", 0)
        recorder = PathRecorder()
        model.learn(total_timesteps=640, callback=CallbackList([CurriculumCallback(cur), recorder]))
        assert cur.episodes == len(recorder.episodes) >= 8
        assert cur.n_active > 1
        assert venv.get_attr("active_paths") == [cur.active_paths] * 2
        # the pushed set reached the subprocesses: episodes ran on added paths
        assert max(p for _, p, _ in recorder.episodes) > first
        assert all(first <= p <= last for _, p, _ in recorder.episodes)
        assert cfg.paths.eval_path not in {p for _, p, _ in recorder.episodes}
    finally:
        venv.close()
