"""Per-variable affine normalisation from the spin-up climatology.

States (xb, y, xa) map the climatological range [min, max] of each variable onto [-1, 1]:
    norm(x) = (x - centre) / half_range,   centre = (max + min) / 2,  half_range = (max - min) / 2
Differences (innovations, increments, spreads) are only scaled: diff_norm(d) = d / half_range.
Everything the agent sees or emits is in these units; only the env's action -> state step
un-normalises.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Normaliser:
    centre: np.ndarray       # (n,)
    half_range: np.ndarray   # (n,)

    @classmethod
    def from_climatology(cls, clim_min: np.ndarray, clim_max: np.ndarray) -> "Normaliser":
        return cls(centre=(clim_max + clim_min) / 2.0, half_range=(clim_max - clim_min) / 2.0)

    def norm(self, x, index=slice(None)):
        """State(s) (..., n) or observed state(s) (..., p) with index = obs_index."""
        return (x - self.centre[index]) / self.half_range[index]

    def unnorm(self, z, index=slice(None)):
        return z * self.half_range[index] + self.centre[index]

    def diff_norm(self, d, index=slice(None)):
        return d / self.half_range[index]

    def diff_unnorm(self, dz, index=slice(None)):
        return dz * self.half_range[index]

    def save(self, path: str | Path) -> None:
        np.savez(path, centre=self.centre, half_range=self.half_range)

    @classmethod
    def load(cls, path: str | Path) -> "Normaliser":
        with np.load(path) as f:
            return cls(centre=f["centre"], half_range=f["half_range"])


def read_inputs(cfg, folder, config_file: str = "config.yaml") -> tuple[dict, Normaliser]:
    """What an env of cfg needs from a data folder (enkf/datafiles.py): the paths.h5 arrays and
    the normaliser of the spin-up climatology, both checked against cfg (DataError if missing or
    stale; messages name config_file)."""
    from enkf import datafiles
    _, spin, data = datafiles.read(cfg, folder, "train", config_file)
    return data, Normaliser.from_climatology(spin["clim_min"], spin["clim_max"])
