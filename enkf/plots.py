"""Figures of the data stage: the spin-up (spinup.h5) and the reference EnKF runs (paths.h5).

``plot_data`` writes six PNGs into ``out_dir`` and returns their paths:

    spinup_timeseries.png  three variables over the spin-up, sampled tail shaded, starts marked
    spinup_hovmoller.png   variable index vs time over the end of the spin-up
    spinup_energy.png      0.5 sum(x^2) / n over the spin-up
    path0_rmse.png         RMSE vs truth per cycle on the evaluation path
    path0_states.png       truth, obs, forecast and analysis of three variables, first cycles
    paths_rmse.png         RMSE over all paths: per-cycle band and per-path time means
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from enkf.config import DAConfig  # noqa: E402

DPI = 110
HOVMOLLER_TIME = 40.0            # model time shown in the Hovmöller diagram ...
HOVMOLLER_STATES = (100, 300)    # ... clipped to this many thinned spin-up states
STATE_CYCLES = 100                # cycles shown in path0_states.png
C_FORECAST, C_ANALYSIS, C_OBS, C_TRUTH = "tab:red", "tab:blue", "0.55", "k"


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _shown_variables(n: int) -> list[int]:
    """Three variables spread over the state (all of them for Lorenz-63)."""
    return sorted(set(np.linspace(0, n, 3, endpoint=False).astype(int).tolist()))


def _sampled_first_step(cfg: DAConfig) -> int:
    s = cfg.spinup
    return s.steps - int(s.steps * s.sample_fraction) + 1  # as enkf.spinup.run_spinup


def _shade_sampled(ax, cfg: DAConfig, label: bool) -> None:
    dt = cfg.model.dt
    ax.axvspan(_sampled_first_step(cfg) * dt, cfg.spinup.steps * dt, color="tab:green", alpha=0.08,
               lw=0, label=f"sampled part (last {cfg.spinup.sample_fraction:g})" if label else None)


# ---- spin-up ---------------------------------------------------------------------------------
def _thin(spinup) -> int:
    """The thinning spinup.h5 was written with (spinup.thin may have changed since: it does not
    make the file stale)."""
    return int(spinup["thinned_steps"][0])


def _spinup_timeseries(cfg, spinup, out: Path) -> Path:
    dt, shown = cfg.model.dt, _shown_variables(cfg.model.n)
    t = spinup["thinned_steps"] * dt
    t_start = spinup["start_steps"] * dt
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.9 * len(shown) + 0.8), sharex=True,
                             layout="constrained")
    for row, (ax, i) in enumerate(zip(np.atleast_1d(axes), shown)):
        _shade_sampled(ax, cfg, label=row == 0)
        ax.plot(t, spinup["thinned"][:, i], lw=0.4, color="0.2")
        ax.plot(t_start, spinup["starts"][:, i], "o", ms=2.5, color="tab:orange",
                label="path start states" if row == 0 else None)
        ax.set_ylabel(f"$x_{{{i}}}$ (model units)")
    axes[0].legend(loc="upper left", fontsize=8, ncol=2, framealpha=0.9)
    axes[-1].set_xlabel("model time")
    axes[-1].set_xlim(0, cfg.spinup.steps * dt)
    fig.suptitle(f"{cfg.experiment}: spin-up, every {_thin(spinup)}th of {cfg.spinup.steps} steps "
                 f"(dt = {dt:g})")
    return _save(fig, out / "spinup_timeseries.png")


def _spinup_hovmoller(cfg, spinup, out: Path) -> Path:
    per_state = _thin(spinup) * cfg.model.dt  # model time between thinned states
    w = int(np.clip(HOVMOLLER_TIME / per_state, *HOVMOLLER_STATES))
    X = spinup["thinned"][-w:]
    t = spinup["thinned_steps"][-w:] * cfg.model.dt
    vmax = float(np.abs(X).max())
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    mesh = ax.pcolormesh(t, np.arange(X.shape[1]), X.T, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                         shading="nearest", rasterized=True)
    fig.colorbar(mesh, ax=ax, pad=0.01, label="$x_i$ (model units)")
    ax.set_xlabel("model time")
    ax.set_ylabel("variable index $i$")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{cfg.experiment}: Hovmöller diagram of the end of the spin-up "
                 f"({X.shape[0]} states, every {_thin(spinup)}th step)")
    return _save(fig, out / "spinup_hovmoller.png")


def _spinup_energy(cfg, spinup, out: Path) -> Path:
    t = spinup["thinned_steps"] * cfg.model.dt
    energy = 0.5 * np.mean(spinup["thinned"] ** 2, axis=1)
    tail = spinup["thinned_steps"] >= _sampled_first_step(cfg)
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    _shade_sampled(ax, cfg, label=True)
    ax.plot(t, energy, lw=0.4, color="0.2")
    ax.axhline(energy[tail].mean(), color="tab:green", ls="--", lw=1,
               label=f"mean over the sampled part: {energy[tail].mean():.3g}")
    ax.set_xlim(0, cfg.spinup.steps * cfg.model.dt)
    ax.set_xlabel("model time")
    ax.set_ylabel("energy $\\Sigma\\, x_i^2 / 2n$\n(model units$^2$)")
    ax.set_title(f"{cfg.experiment}: energy over the spin-up")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return _save(fig, out / "spinup_energy.png")


# ---- reference EnKF runs ---------------------------------------------------------------------
def _cycle_label(cfg: DAConfig) -> str:
    return f"cycle ({cfg.obs.t_obs:g} model time each)"


def _path_rmse(cfg, paths, out: Path) -> Path:
    p, b = cfg.paths.eval_path, cfg.paths.burn_in
    k = np.arange(paths["analysis_rmse"].shape[1])
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    for key, color, lw, name in [("obs_rmse", C_OBS, 0.6, "observation"),
                                 ("forecast_rmse", C_FORECAST, 0.9, "forecast"),
                                 ("analysis_rmse", C_ANALYSIS, 0.9, "analysis")]:
        series = paths[key][p]
        mean = series[b:].mean()
        ax.plot(k, series, color=color, lw=lw, label=f"{name} (mean {mean:.3f})")
        ax.axhline(mean, color=color, ls="--", lw=1.2)
    ax.axvspan(0, b, color="0.9", lw=0, label=f"burn-in ({b} cycles, left out of the means)")
    ax.set_xlim(0, k[-1])
    ax.set_ylim(bottom=0)
    ax.set_xlabel(_cycle_label(cfg))
    ax.set_ylabel("RMSE (model units)")
    ax.set_title("RMSE: truth vs forecast (red) & truth vs analysis (blue)")
    ax.legend(loc="upper right", fontsize=8, ncol=2, framealpha=0.9)
    return _save(fig, out / f"path{p}_rmse.png")


def _path_states(cfg, paths, out: Path) -> Path:
    p, shown = cfg.paths.eval_path, _shown_variables(cfg.model.n)
    K = min(STATE_CYCLES, paths["truth"].shape[1])
    k = np.arange(K)
    obs_col = {v: j for j, v in enumerate(cfg.obs_index)}
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.9 * len(shown) + 0.9), sharex=True,
                             layout="constrained")
    for ax, i in zip(np.atleast_1d(axes), shown):
        xa, sa = paths["analysis_mean"][p, :K, i], paths["analysis_spread"][p, :K, i]
        ax.fill_between(k, xa - sa, xa + sa, color=C_ANALYSIS, alpha=0.18, lw=0,
                        label="analysis ± spread")
        ax.plot(k, paths["truth"][p, :K, i], color=C_TRUTH, lw=1.2, label="truth")
        ax.plot(k, paths["forecast_mean"][p, :K, i], color=C_FORECAST, lw=0.9, ls="--",
                label="forecast mean")
        ax.plot(k, xa, color=C_ANALYSIS, lw=0.9, label="analysis mean")
        if i in obs_col:
            ax.plot(k, paths["obs"][p, :K, obs_col[i]], ".", color=C_OBS, ms=4, label="observation")
        ax.set_ylabel(f"$x_{{{i}}}$ (model units)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=5,
               fontsize=8, frameon=False)
    axes[-1].set_xlim(0, K - 1)
    axes[-1].set_xlabel(_cycle_label(cfg))
    fig.suptitle(f"{cfg.experiment}, path {p}: states at the analysis times, first {K} cycles")
    return _save(fig, out / f"path{p}_states.png")


def _paths_rmse(cfg, paths, out: Path) -> Path:
    b = cfg.paths.burn_in
    P, K = paths["analysis_rmse"].shape
    k = np.arange(K)
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained",
                                        gridspec_kw={"width_ratios": [2.2, 1, 1]})
    for key, color, name in [("forecast_rmse", C_FORECAST, "forecast"),
                             ("analysis_rmse", C_ANALYSIS, "analysis")]:
        lo, hi = np.percentile(paths[key], [10, 90], axis=0)
        ax0.fill_between(k, lo, hi, color=color, alpha=0.2, lw=0)
        ax0.plot(k, paths[key].mean(axis=0), color=color, lw=0.9, label=f"{name}: mean, 10-90%")
    ax0.axhline(paths["obs_rmse"][:, b:].mean(), color=C_OBS, ls=":", lw=1.2,
                label="observation (time mean)")
    ax0.axvline(b, color="0.5", lw=0.8, ls="--", label="end of burn-in")
    ax0.set_xlim(0, K - 1)
    ax0.set_ylim(bottom=0)
    ax0.set_xlabel(_cycle_label(cfg))
    ax0.set_ylabel("RMSE (model units)")
    ax0.set_title(f"RMSE vs truth over {P} paths")
    ax0.legend(loc="upper right", fontsize=8, framealpha=0.9)

    fc = paths["forecast_rmse"][:, b:].mean(axis=1)
    an = paths["analysis_rmse"][:, b:].mean(axis=1)
    n_bins = min(25, max(5, P // 4))
    for values, color, name in [(fc, C_FORECAST, "forecast"), (an, C_ANALYSIS, "analysis")]:
        bins = np.histogram_bin_edges(values, bins=n_bins)  # own bins: the two may lie far apart
        ax1.hist(values, bins=bins, color=color, alpha=0.2)
        ax1.hist(values, bins=bins, color=color, histtype="step", lw=1.5,
                 label=f"{name} (mean {values.mean():.3f})")
    ax1.set_xlabel(f"time-mean RMSE after cycle {b} (model units)")
    ax1.set_ylabel("paths")
    ax1.set_title("per-path time means")
    ax1.legend(fontsize=8)

    gain = fc - an
    ax2.hist(gain, bins=n_bins, color="tab:purple", alpha=0.6)
    if gain.min() <= 0:
        ax2.axvline(0, color="k", lw=0.8)
    ax2.axvline(gain.mean(), color="tab:purple", ls="--", lw=1.2, label=f"mean {gain.mean():.3f}")
    ax2.set_xlabel("forecast − analysis RMSE (model units)")
    ax2.set_ylabel("paths")
    ax2.set_title("improvement by the analysis")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # head room for the legend
    fig.suptitle(f"{cfg.experiment}: reference EnKF ({cfg.filter.method}, N = {cfg.filter.n_ens})")
    return _save(fig, out / "paths_rmse.png")


def plot_data(cfg: DAConfig, spinup: dict, paths: dict, out_dir: Path) -> list[Path]:
    """All data-stage figures into out_dir (created); returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _spinup_timeseries(cfg, spinup, out_dir),
        _spinup_hovmoller(cfg, spinup, out_dir),
        _spinup_energy(cfg, spinup, out_dir),
        _path_rmse(cfg, paths, out_dir),
        _path_states(cfg, paths, out_dir),
        _paths_rmse(cfg, paths, out_dir),
    ]
