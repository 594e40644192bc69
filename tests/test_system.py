"""The twin experiment's analysis step (enkf/system.py System.analyse): multiplicative inflation at
the configured stage, against the update written out here; and paths.h5 files of the older
format (a data hash, no recorded settings) read by enkf.precompute.read_paths."""
from __future__ import annotations

import dataclasses
import shutil

import h5py
import numpy as np
import pytest

from conftest import CONFIG
from rl.config import load_config
from enkf.io import DataError
from enkf.precompute import read_paths
from enkf.system import System


def system_of(method: str, stage: str, inflation: float, rotate: bool = False) -> System:
    cfg = load_config(CONFIG, "smoke")
    return System.from_config(dataclasses.replace(cfg, filter=dataclasses.replace(
        cfg.filter, method=method, inflation_stage=stage, inflation=inflation, rotate=rotate,
        centre_perturbations=False)))


def forecast_ensemble(system: System, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (system.n_ens, 8)) + rng.normal(2.0, 1.0, 8)


def enkf_by_hand(E: np.ndarray, y: np.ndarray, r: float, D: np.ndarray):
    """Perturbed-observation EnKF with H = I, written out: K = P H^T (H P H^T + R)^-1 with the
    ensemble covariance P, each member updated with its own perturbed observation."""
    N = E.shape[0]
    x = E.mean(axis=0)
    A = E - x
    P = A.T @ A / (N - 1)
    K = P @ np.linalg.inv(P + r * np.eye(E.shape[1]))
    Ea = E + (y + np.sqrt(r) * D - E) @ K.T
    xa = Ea.mean(axis=0)
    return xa, Ea - xa


def etkf_by_hand(E: np.ndarray, y: np.ndarray, r: float):
    """The Kalman filter's mean and covariance for the ensemble's (H = I): what the ETKF gives."""
    N = E.shape[0]
    x = E.mean(axis=0)
    A = E - x
    P = A.T @ A / (N - 1)
    K = P @ np.linalg.inv(P + r * np.eye(E.shape[1]))
    return x + K @ (y - x), (np.eye(E.shape[1]) - K) @ P


@pytest.mark.parametrize("inflation", [1.0, 1.7])
def test_enkf_inflation_at_the_forecast_and_at_the_analysis_stage(inflation):
    """forecast: the forecast anomalies are scaled before the update (a larger gain, another mean);
    analysis: the update of the raw forecast, its anomalies scaled afterwards (the same mean)."""
    path, cycle = 2, 7
    fore, ana = system_of("enkf", "forecast", inflation), system_of("enkf", "analysis", inflation)
    E = forecast_ensemble(fore)
    y = E.mean(axis=0) + 0.5
    D = fore.perturbations(path, cycle)
    x = E.mean(axis=0)
    xa_f, Aa_f = fore.analyse(E, y, path, cycle)
    ref_xa, ref_Aa = enkf_by_hand(x + inflation * (E - x), y, fore.obs_error_var, D)
    np.testing.assert_allclose(xa_f, ref_xa, rtol=1e-10)
    np.testing.assert_allclose(Aa_f, ref_Aa, rtol=1e-9, atol=1e-12)
    xa_a, Aa_a = ana.analyse(E, y, path, cycle)
    raw_xa, raw_Aa = enkf_by_hand(E, y, ana.obs_error_var, D)
    np.testing.assert_allclose(xa_a, raw_xa, rtol=1e-10)
    np.testing.assert_allclose(Aa_a, inflation * raw_Aa, rtol=1e-9, atol=1e-12)
    if inflation != 1.0:  # the stages differ (the gain sees the inflated spread only before the update)
        assert np.max(np.abs(xa_f - xa_a)) > 1e-3
    else:
        np.testing.assert_allclose(xa_f, xa_a, rtol=1e-12)
    np.testing.assert_array_equal(E, forecast_ensemble(fore))  # the input is left alone


@pytest.mark.parametrize("rotate", [False, True])
def test_etkf_inflation_stages_give_the_kalman_moments_of_the_inflated_ensemble(rotate):
    """ETKF: forecast-stage inflation gives the Kalman mean and covariance of the inflated forecast
    ensemble; analysis-stage inflation the raw update's mean and inflation^2 its covariance."""
    path, cycle, inflation = 1, 3, 1.4
    fore, ana = system_of("etkf", "forecast", inflation, rotate), system_of("etkf", "analysis", inflation, rotate)
    E = forecast_ensemble(fore, seed=4)
    y = E.mean(axis=0) - 0.3
    N = E.shape[0]
    x = E.mean(axis=0)
    for system, E_in, scale in ((fore, x + inflation * (E - x), 1.0), (ana, E, inflation ** 2)):
        xa, Aa = system.analyse(E, y, path, cycle)
        mean, cov = etkf_by_hand(E_in, y, system.obs_error_var)
        np.testing.assert_allclose(xa, mean, rtol=1e-9)
        np.testing.assert_allclose(Aa.T @ Aa / (N - 1), scale * cov, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(Aa.mean(axis=0), 0.0, atol=1e-12)


@pytest.fixture
def old_format_paths(smoke_data, tmp_path):
    """A copy of the smoke paths.h5 written the older way: a data hash, no recorded settings."""
    f = tmp_path / "paths.h5"
    shutil.copy(smoke_data / "data/smoke/paths.h5", f)
    with h5py.File(f, "r+") as h:
        del h.attrs["config"]
    return f


def test_read_paths_of_an_old_format_file(old_format_paths):
    """Without recorded settings the data hash decides: the same data settings read the file
    (every array), other data settings are refused with one line naming the file and the fix."""
    cfg = load_config(CONFIG, "smoke")
    data = read_paths(cfg, old_format_paths)
    assert data["truth"].shape == (cfg.paths.n_paths, cfg.paths.n_cycles, cfg.model.n)
    with h5py.File(old_format_paths, "r") as h:
        assert "config" not in h.attrs
        np.testing.assert_array_equal(data["analysis_mean"], h["analysis_mean"][()])
    other = dataclasses.replace(cfg, filter=dataclasses.replace(cfg.filter, inflation=2.0))
    with pytest.raises(DataError, match=r"paths.h5 was made with other settings than config.yaml has now "
                                        r"\(data settings\): rerun `enkfrl precompute --exp smoke`"):
        read_paths(other, old_format_paths)
    # an RL-only setting does not touch the data: still readable
    rl_only = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, n_epochs=7))
    assert read_paths(rl_only, old_format_paths)["obs"].shape == data["obs"].shape
    with h5py.File(old_format_paths, "r+") as h:  # neither settings nor a hash: stale
        del h.attrs["data_hash"]
    with pytest.raises(DataError, match=r"\(data settings\)"):
        read_paths(cfg, old_format_paths)
