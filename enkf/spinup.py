"""The spin-up: one long model trajectory, the start states of all paths, the climatology."""
from __future__ import annotations

import json

import numpy as np

from enkf import rng
from enkf.config import DAConfig, hash_of
from enkf.config import spinup_hash, spinup_settings, stale_keys
from enkf.io import DataError, atomic_h5, check_arrays, code_version, put, read_all
from enkf.models import INTEGRATOR_IDS, MODEL_IDS, params_of, spinup_run


def _legacy_spinup_hash(cfg: DAConfig) -> str:
    """The hash spinup.h5 files carried before they stored their settings (it included
    spinup.thin): such files stay valid while everything else matches."""
    keys = {"seed": cfg.seed, "model": cfg.to_dict()["model"], "spinup": cfg.to_dict()["spinup"],
            "n_paths": cfg.paths.n_paths}
    return hash_of(keys)


def run_spinup(cfg: DAConfig) -> dict:
    """Integrate spinup.steps from N(0, init_scale^2) and sample paths.n_paths distinct starts
    from the last spinup.sample_fraction of the trajectory.

    Returns a dict of arrays: starts (P, n), start_steps (P,), thinned (T, n), thinned_steps (T,),
    clim_min/clim_max/clim_mean/clim_std (n,) over the sampled part.
    """
    m, s = cfg.model, cfg.spinup
    x0 = s.init_scale * rng.standard_normal(cfg.seed, rng.SPINUP_INIT, 0, 0, m.n)
    first = s.steps - int(s.steps * s.sample_fraction) + 1  # first step of the sampled tail
    pick = rng.generator(cfg.seed, rng.START_SAMPLE).choice(
        s.steps - first + 1, size=cfg.paths.n_paths, replace=False)
    start_steps = first + pick  # in sample order: path p starts at start_steps[p]
    order = np.argsort(start_steps)
    recorded, thinned, stats, finite = spinup_run(
        x0.copy(), MODEL_IDS[m.name], INTEGRATOR_IDS[m.integrator], params_of(m), m.dt, s.steps,
        start_steps[order].astype(np.int64), s.thin, first)
    if not finite:
        raise DataError(f"the spin-up became non-finite (NaN/inf): model.dt = {m.dt} is too "
                        f"large for {m.name} with integrator {m.integrator}")
    starts = np.empty_like(recorded)
    starts[order] = recorded
    return {
        "x0": x0, "starts": starts, "start_steps": start_steps, "thinned": thinned,
        "thinned_steps": np.arange(1, thinned.shape[0] + 1) * s.thin,
        "clim_min": stats[0], "clim_max": stats[1], "clim_mean": stats[2], "clim_std": stats[3],
        "sample_first_step": first,
    }


def write_spinup(cfg: DAConfig, result: dict, path) -> None:
    n = "(n,)"
    with atomic_h5(path) as f:
        f.attrs["experiment"] = cfg.experiment
        f.attrs["spinup_hash"] = spinup_hash(cfg)
        f.attrs["settings"] = json.dumps(spinup_settings(cfg), sort_keys=True)
        f.attrs["seed"] = cfg.seed
        f.attrs["code_version"] = code_version()
        f.attrs["sample_first_step"] = result["sample_first_step"]
        put(f, "x0", result["x0"], "initial state of the spin-up, N(0, init_scale^2)", shape=n)
        put(f, "starts", result["starts"], "start state of path p", shape="(n_paths, n)")
        put(f, "start_steps", result["start_steps"], "spin-up step at which path p starts",
            units="model steps", shape="(n_paths,)")
        put(f, "thinned", result["thinned"], "every spinup.thin-th spin-up state (for plots)",
            shape="(steps // thin, n)")
        put(f, "thinned_steps", result["thinned_steps"], "step of each thinned state",
            units="model steps", shape="(steps // thin,)")
        for k, what in [("min", "minimum"), ("max", "maximum"), ("mean", "mean"),
                        ("std", "standard deviation")]:
            put(f, f"clim_{k}", result[f"clim_{k}"],
                f"per-variable {what} over the sampled part (last sample_fraction) of the spin-up",
                shape=n)


def read_spinup(cfg: DAConfig, path, config_file="config.yaml") -> dict:
    """The arrays of spinup.h5, refused (DataError, one line) when the file is stale for cfg (read
    from config_file), or has a wrong shape or a non-finite value."""
    hint = f"run `enkfrl generate --exp {cfg.experiment}` first"
    data, attrs = read_all(path, hint, ["x0", "starts", "start_steps", "clim_min", "clim_max", "clim_mean",
                                        "clim_std"])
    rerun = f"rerun `enkfrl generate --exp {cfg.experiment}`"
    if "settings" in attrs:
        changed = stale_keys(json.loads(attrs["settings"]), spinup_settings(cfg))
    else:
        changed = [] if attrs.get("spinup_hash") == _legacy_spinup_hash(cfg) else ["model/spinup settings"]
    if changed:
        raise DataError(f"{path} was made with other settings than {config_file} has now "
                        f"({', '.join(changed)}): {rerun}")
    n, P = cfg.model.n, cfg.paths.n_paths
    check_arrays(path, data, {"x0": (n,), "starts": (P, n), "start_steps": (P,), "clim_min": (n,),
                              "clim_max": (n,), "clim_mean": (n,), "clim_std": (n,)}, rerun,
                 integers=("start_steps", "thinned_steps"))
    if not np.all(data["clim_max"] > data["clim_min"]):
        raise DataError(f"{path}: dataset clim_max is not above clim_min everywhere (the normaliser "
                        f"would divide by zero): {rerun}")
    return data
