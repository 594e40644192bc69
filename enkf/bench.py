"""`enkfrl bench`: how fast the numba kernels are, against plain numpy, measured in one run.

    a. Lorenz-96 RK4 with the L96_1 settings (n = 20, F = 5, dt = 2.5e-3): one trajectory
       (enkf.models.step_columns on a (20, 1) column) and cycles of the ensemble
       (20 members + truth, 400 steps each: a (20, 21) column block) against numpy RK4 (np.roll).
    b. EnKF cycles (forecast + observe + analyse, enkf.precompute.run_path) on L96_sakov2008
       against the same cycle in numpy (numpy RK4, the perturbed-observation update of
       enkf/filters.py with np.linalg.solve). Both use the same random draws (enkf.rng).
    c. The L96_1 spin-up (enkf.spinup.run_spinup, 1e6 steps), compiled kernels already loaded.
    d. The L96_1 precompute on a few paths, extrapolated to the configured paths x cycles with
       one worker process per core (quick: 2 paths x 300 cycles, full: 4 x 1000). The starts are
       the first paths' starts of the spin-up of c, so they lie on the attractor.

Every numba kernel runs once on a small input before it is timed. Timings are the best of a
few repetitions (the numpy ones: a single run where one run already takes seconds).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from enkf.config import load_da_config
from enkf.models import LORENZ96, RK4, params_of, step_columns
from enkf.precompute import precompute, run_path
from enkf.spinup import run_spinup
from enkf.system import System, rmse


AGREE_TOL = 1e-9  # numba and numpy results must agree to this (max abs difference)


# ---- the plain numpy reference ---------------------------------------------------------------
def l96_rhs_numpy(x: np.ndarray, forcing: float) -> np.ndarray:
    """Lorenz-96 tendency of states along the last axis (any leading member axes)."""
    return (np.roll(x, -1, axis=-1) - np.roll(x, 2, axis=-1)) * np.roll(x, 1, axis=-1) - x + forcing


def rk4_numpy(x: np.ndarray, forcing: float, dt: float, n_steps: int) -> np.ndarray:
    """n_steps classical RK4 steps (same operation order as enkf.models.integrate_columns)."""
    x = np.array(x, dtype=np.float64)
    for _ in range(n_steps):
        k1 = l96_rhs_numpy(x, forcing)
        k2 = l96_rhs_numpy(x + 0.5 * dt * k1, forcing)
        k3 = l96_rhs_numpy(x + 0.5 * dt * k2, forcing)
        k4 = l96_rhs_numpy(x + dt * k3, forcing)
        x = x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return x


def enkf_analysis_numpy(E, y, obs_index, r, perturbations, centre):
    """The perturbed-observation EnKF update of enkf.filters.enkf_analysis, in numpy."""
    N = E.shape[0]
    x = E.mean(axis=0)
    A = E - x
    D = np.sqrt(r) * perturbations
    if centre:
        D = D - D.mean(axis=0)
    Y = A[:, obs_index]
    C = Y.T @ Y + (N - 1) * r * np.eye(obs_index.shape[0])
    Z = np.linalg.solve(C, (y + D - E[:, obs_index]).T)
    Ea = E + (Y @ Z).T @ A
    xa = Ea.mean(axis=0)
    return xa, Ea - xa


def run_path_numpy(system: System, x0: np.ndarray, path: int, n_cycles: int) -> dict:
    """enkf.precompute.run_path (without stored ensembles) in numpy, for the enkf method."""
    assert system.method == "enkf" and system.model_id == LORENZ96 and system.integrator_id == RK4
    forcing, infl = float(system.params[0]), system.inflation
    X = np.vstack([x0, system.initial_ensemble(x0, path)])  # rows: truth, members
    out = {k: np.empty((n_cycles, x0.shape[0])) for k in
           ("truth", "forecast_mean", "forecast_spread", "analysis_mean", "analysis_spread")}
    for k in range(n_cycles):
        X = rk4_numpy(X, forcing, system.dt, system.steps_per_cycle)
        truth, Ef = X[0].copy(), X[1:]
        y = system.observe(truth, path, k)
        E = Ef
        if system.inflation_stage == "forecast" and infl != 1.0:
            E = E.mean(axis=0) + infl * (E - E.mean(axis=0))
        xa, Aa = enkf_analysis_numpy(E, y, system.obs_index, system.obs_error_var,
                                     system.perturbations(path, k), system.centre_perturbations)
        if system.inflation_stage == "analysis" and infl != 1.0:
            Aa = infl * Aa
        Ea = xa + Aa
        X = np.vstack([truth, Ea])
        out["truth"][k] = truth
        out["forecast_mean"][k] = Ef.mean(axis=0)
        out["forecast_spread"][k] = Ef.std(axis=0, ddof=1)
        out["analysis_mean"][k] = xa
        out["analysis_spread"][k] = Ea.std(axis=0, ddof=1)
    return out


# ---- timing ----------------------------------------------------------------------------------
def _best(fn, repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls of fn (seconds)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _attractor_state(n: int, params: np.ndarray, dt: float, n_steps: int) -> np.ndarray:
    """A Lorenz-96 state after n_steps from F + a small perturbation of x_0."""
    X = np.full((n, 1), params[0])
    X[0, 0] += 0.01
    step_columns(X, LORENZ96, RK4, params, dt, n_steps)
    return X[:, 0].copy()


def _warm_up(cfg96, cfg_sakov) -> None:
    """Compile (or load from the cache) every kernel that is timed below."""
    for cfg in (cfg96, cfg_sakov):
        system = System.from_config(cfg)
        x0 = _attractor_state(cfg.model.n, system.params, cfg.model.dt, 10)
        run_path(system, x0, 0, 2)
    step_columns(np.ones((cfg96.model.n, 1)), LORENZ96, RK4, params_of(cfg96.model), 0.01, 2)
    tiny = dataclasses.replace(cfg96.spinup, steps=1000, thin=10)
    run_spinup(dataclasses.replace(cfg96, spinup=tiny,
                                   paths=dataclasses.replace(cfg96.paths, n_paths=2)))


def run_bench(config_path: str, quick: bool, echo) -> dict:
    """Run the four measurements, print a table with ``echo``, return every number in a dict."""
    t_total = time.perf_counter()
    cfg96 = load_da_config(config_path, "L96_1")
    cfg_sakov = load_da_config(config_path, "L96_sakov2008")
    if cfg96.model.name != "lorenz96" or cfg96.model.integrator != "rk4":
        raise ValueError("the bench needs L96_1 to be Lorenz-96 with rk4")
    cores = os.cpu_count() or 1
    _warm_up(cfg96, cfg_sakov)
    res: dict = {"quick": quick, "cpu_count": cores,
                 "l96_1_model": cfg96.to_dict()["model"], "sakov2008_model": cfg_sakov.to_dict()["model"]}
    rows: list[tuple] = []  # (name, ours, numpy or None, unit)

    # a. model steps --------------------------------------------------------------------------
    m = cfg96.model
    params, F, dt = params_of(m), m.forcing, m.dt
    x0 = _attractor_state(m.n, params, dt, 20000)
    steps = 2000 if quick else 20000

    def numba_single():
        X = x0[:, None].copy()
        step_columns(X, LORENZ96, RK4, params, dt, steps)
        return X[:, 0]

    t_nb = _best(numba_single, 5)
    t_np = _best(lambda: rk4_numpy(x0, F, dt, steps), 1 if not quick else 2)
    diff_single = float(np.abs(numba_single() - rk4_numpy(x0, F, dt, steps)).max())
    res["single"] = {"steps": steps, "numba_steps_per_s": steps / t_nb,
                     "numpy_steps_per_s": steps / t_np, "max_abs_diff": diff_single}
    rows.append((f"L96 RK4 1 trajectory, n={m.n} ({steps} steps)", steps / t_nb, steps / t_np,
                 "steps/s"))

    N, spc = cfg96.filter.n_ens, cfg96.steps_per_cycle
    rng = np.random.default_rng(0)
    E0 = x0 + rng.standard_normal((N + 1, m.n))  # truth + N members, as rows
    reps = 3 if quick else 50

    def numba_ensemble():
        X = np.ascontiguousarray(E0.T)
        for _ in range(reps):
            step_columns(X, LORENZ96, RK4, params, dt, spc)
        return X.T

    def numpy_ensemble():
        E = E0
        for _ in range(reps):
            E = rk4_numpy(E, F, dt, spc)
        return E

    t_nb = _best(numba_ensemble, 3)
    t_np = _best(numpy_ensemble, 1)
    diff_ens = float(np.abs(numba_ensemble() - numpy_ensemble()).max())
    res["ensemble"] = {"members": N + 1, "steps": reps * spc,
                       "numba_steps_per_s": reps * spc / t_nb,
                       "numpy_steps_per_s": reps * spc / t_np, "max_abs_diff": diff_ens}
    rows.append((f"L96 RK4 {N}+1 members, n={m.n} ({reps} x {spc} steps)", reps * spc / t_nb,
                 reps * spc / t_np, "steps/s"))

    # b. EnKF cycles on L96_sakov2008 ---------------------------------------------------------
    system = System.from_config(cfg_sakov)
    xs = _attractor_state(cfg_sakov.model.n, system.params, cfg_sakov.model.dt, 2000)
    cycles = 200 if quick else 2000
    t0 = time.perf_counter()
    ours = run_path(system, xs, 0, cycles)
    t_nb = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = run_path_numpy(system, xs, 0, cycles)
    t_np = time.perf_counter() - t0
    burn = min(cfg_sakov.paths.burn_in, cycles // 2)
    res["enkf_sakov2008"] = {
        "cycles": cycles, "numba_cycles_per_s": cycles / t_nb, "numpy_cycles_per_s": cycles / t_np,
        "max_abs_diff_analysis_mean": float(np.abs(ours["analysis_mean"] - ref["analysis_mean"]).max()),
        "analysis_rmse_numba": float(rmse(ours["analysis_mean"], ours["truth"])[burn:].mean()),
        "analysis_rmse_numpy": float(rmse(ref["analysis_mean"], ref["truth"])[burn:].mean()),
        "burn_in": burn}
    rows.append((f"EnKF L96_sakov2008, N={system.n_ens} ({cycles} cycles)", cycles / t_nb,
                 cycles / t_np, "cycles/s"))

    # c. spin-up ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    spin = run_spinup(cfg96)
    t_spin = time.perf_counter() - t0
    numpy_spin = cfg96.spinup.steps / res["single"]["numpy_steps_per_s"]
    res["spinup"] = {"steps": cfg96.spinup.steps, "wall_s": t_spin,
                     "numpy_wall_s_extrapolated": numpy_spin}
    rows.append((f"L96_1 spin-up, {cfg96.spinup.steps:,} steps", t_spin, numpy_spin, "s"))

    # d. precompute ---------------------------------------------------------------------------
    k, kc = (2, 300) if quick else (4, 1000)
    kc = min(kc, cfg96.paths.n_cycles)
    workers = min(k, cores)
    small = dataclasses.replace(cfg96, paths=dataclasses.replace(
        cfg96.paths, n_paths=k, n_cycles=kc, workers=workers))
    t0 = time.perf_counter()
    precompute(small, spin["starts"][:k], progress=False)
    t_pre = time.perf_counter() - t0
    P, K = cfg96.paths.n_paths, cfg96.paths.n_cycles
    rounds_measured, rounds_full = math.ceil(k / workers), math.ceil(P / cores)
    t_full = t_pre / rounds_measured * rounds_full * K / kc
    res["precompute"] = {"paths": k, "cycles": kc, "workers": workers, "wall_s": t_pre,
                         "target_paths": P, "target_cycles": K, "target_workers": cores,
                         "wall_s_extrapolated": t_full,
                         "starts": "spinup starts of part c (paths 0..k-1)"}
    rows.append((f"L96_1 precompute, {k} paths x {kc} cycles, {workers} proc", t_pre, None, "s"))
    rows.append((f"  -> {P} x {K}, {cores} proc (extrapolated from {k} paths)", t_full, None, "s"))

    res["total_s"] = time.perf_counter() - t_total
    res["agree_tol"] = AGREE_TOL
    _print_table(rows, res, cfg96, echo)
    return res


def _print_table(rows, res, cfg96, echo) -> None:
    def num(v):
        return "—" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}")

    w = max(len(r[0]) for r in rows)
    echo(f"enkfrl bench{' --quick' if res['quick'] else ''} ({res['cpu_count']} cores; "
         f"a, c, d: L96_1 settings n={cfg96.model.n}, F={cfg96.model.forcing:g}, "
         f"dt={cfg96.model.dt:g}, rk4)")
    echo(f"{'':{w}}  {'ours (numba)':>14}  {'numpy':>12}  {'ratio':>7}  unit")
    for name, ours, ref, unit in rows:
        if ref is None:
            ratio = "—"
        elif unit == "s":
            ratio = f"{ref / ours:.1f}x"
        else:
            ratio = f"{ours / ref:.1f}x"
        echo(f"{name:{w}}  {num(ours):>14}  {num(ref):>12}  {ratio:>7}  {unit}")
    e = res["enkf_sakov2008"]
    diffs = [res["single"]["max_abs_diff"], res["ensemble"]["max_abs_diff"],
             e["max_abs_diff_analysis_mean"]]
    verdict = "agree" if max(diffs) <= AGREE_TOL else f"DIFFER (> {AGREE_TOL:g})"
    echo(f"numba vs numpy max |diff|: 1 trajectory {diffs[0]:.1e}, ensemble {diffs[1]:.1e}, "
         f"EnKF analysis mean {diffs[2]:.1e}: {verdict}")
    echo(f"EnKF L96_sakov2008 time-mean analysis RMSE after {e['burn_in']} cycles: "
         f"numba {e['analysis_rmse_numba']:.4f}, numpy {e['analysis_rmse_numpy']:.4f}")
    echo("ratio = numba speed / numpy speed. Ensemble steps/s: steps of all members together. "
         "The numpy spin-up time is extrapolated from its 1-trajectory steps/s.")
    echo(f"Total bench time {res['total_s']:.1f} s.")
