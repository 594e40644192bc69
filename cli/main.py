"""`enkfrl` command line: thin wrappers that parse, load the config, call enkf/ or rl/."""
from __future__ import annotations

import time

import click

from cli.common import Group, LOG_ROOT, exp_options, paths_file, spinup_file


@click.group(cls=Group)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def main(debug):
    """enkfrl: an EnKF on Lorenz-96/63 and PPO agents that learn its analysis step."""


@main.command("config")
@exp_options
def show_config(cfg):
    """Print the resolved (merged, validated) config of an experiment."""
    import yaml
    click.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)


@main.command()
@exp_options
def generate(cfg):
    """Spin-up trajectory, start states and climatology -> data/<E>/spinup.h5."""
    from enkf.spinup import run_spinup, write_spinup
    t0 = time.perf_counter()
    click.echo(f"spin-up {cfg.experiment}: {cfg.spinup.steps} steps of {cfg.model.name} "
               f"(n={cfg.model.n}, {cfg.model.integrator}, dt={cfg.model.dt})")
    result = run_spinup(cfg)
    out = spinup_file(cfg)
    write_spinup(cfg, result, out)
    click.echo(f"{cfg.paths.n_paths} starts from steps "
               f"[{result['start_steps'].min()}, {result['start_steps'].max()}]; climatology "
               f"min {result['clim_min'].min():.2f} max {result['clim_max'].max():.2f} "
               f"-> {out} ({time.perf_counter() - t0:.1f} s)")


@main.command()
@exp_options
def precompute(cfg):
    """Reference EnKF run from every start -> data/<E>/paths.h5."""
    from enkf.precompute import precompute as run, summary, write_paths
    from enkf.spinup import read_spinup
    starts = read_spinup(cfg, spinup_file(cfg))["starts"]
    t0 = time.perf_counter()
    data = run(cfg, starts)
    wall = time.perf_counter() - t0
    out = paths_file(cfg)
    write_paths(cfg, data, starts, out)
    s = summary(data, cfg.paths.burn_in)
    click.echo(f"{cfg.paths.n_paths} paths x {cfg.paths.n_cycles} cycles in {wall:.1f} s -> {out}")
    click.echo(f"time-mean RMSE vs truth after {cfg.paths.burn_in} cycles, mean ± std over paths:")
    for k, label in [("forecast_rmse", "forecast"), ("analysis_rmse", "analysis"),
                     ("obs_rmse", "observation")]:
        click.echo(f"  {label:12s} {s[k][0]:.4f} ± {s[k][1]:.4f}")


@main.command()
@exp_options
@click.option("--stage", type=click.Choice(["data", "train", "eval", "all"]), default="data",
              show_default=True)
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder for train/eval plots (default: the newest under logs/<E>/).")
def plot(cfg, stage, run_dir):
    """Figures into logs/<E>/plots/ (data) or the run folder (train, eval)."""
    out_dir = LOG_ROOT / cfg.experiment / "plots"
    written = []
    if stage in ("data", "all"):
        from enkf.plots import plot_data
        from enkf.precompute import read_paths
        from enkf.spinup import read_spinup
        written += plot_data(cfg, read_spinup(cfg, spinup_file(cfg)),
                             read_paths(cfg, paths_file(cfg)), out_dir)
    for p in written:
        click.echo(f"wrote {p}")


@main.command()
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@click.option("--quick", is_flag=True, help="Fewer repetitions (for a smoke test of the bench).")
def bench(config_path, quick):
    """Speed ratios measured in one run (numba vs numpy, spin-up and precompute wall time)."""
    from enkf.bench import run_bench
    run_bench(config_path, quick=quick, echo=click.echo)


if __name__ == "__main__":
    main()
