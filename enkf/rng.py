"""Every random draw of a run, reproducible from (seed, stream, path, cycle).

A draw never depends on how many numbers were drawn before it, so any process (a precompute
worker, the RL environment) can redraw exactly the numbers the reference run used for a given
path and cycle.
"""
from __future__ import annotations

import numpy as np

# streams: one per purpose, so adding a draw of one kind never shifts the others
SPINUP_INIT, START_SAMPLE, ENSEMBLE_INIT, OBS_NOISE, OBS_PERTURBATION, ROTATION = 0, 1, 2, 3, 4, 5


def generator(seed: int, stream: int, path: int = 0, cycle: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream, path, cycle])))


def standard_normal(seed: int, stream: int, path: int, cycle: int, shape) -> np.ndarray:
    return generator(seed, stream, path, cycle).standard_normal(shape)
