"""`enkfrl` command line: thin wrappers that parse, load the config, call enkf/ or rl/."""
from __future__ import annotations

import time
from pathlib import Path

import click
import yaml

from cli.common import DATA_ROOT, Group, LOG_ROOT, exp_options, paths_file, spinup_file
from enkf.config import from_dict
from enkf.io import DataError


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
    import json
    record = {"experiment": cfg.experiment, "command": f"enkfrl precompute --exp {cfg.experiment}",
              "data_hash": cfg.data_hash(), "n_paths": cfg.paths.n_paths, "n_cycles": cfg.paths.n_cycles,
              "burn_in": cfg.paths.burn_in, "wall_s": wall,
              **{k: {"mean": v[0], "std_over_paths": v[1]} for k, v in s.items()}}
    out_json = Path("results/data") / f"{cfg.experiment}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=2) + "\n")


def load_run_inputs(cfg):
    """paths.h5 arrays and the normaliser (spin-up climatology) for a run of cfg."""
    from enkf.precompute import read_paths
    from enkf.spinup import read_spinup
    from rl.normalisation import Normaliser
    spin = read_spinup(cfg, spinup_file(cfg))
    return read_paths(cfg, paths_file(cfg)), Normaliser.from_climatology(spin["clim_min"], spin["clim_max"])


def newest_run(cfg) -> Path:
    runs = sorted((p.parent for p in (LOG_ROOT / cfg.experiment).glob("*/config.yaml")),
                  key=lambda d: (d / "config.yaml").stat().st_mtime)
    if not runs:
        raise DataError(f"no run under {LOG_ROOT / cfg.experiment}: run `enkfrl train --exp {cfg.experiment}` first")
    return runs[-1]


@main.command()
@exp_options
@click.option("--resume", "resume_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="Continue this run folder (its own config.yaml) from its newest checkpoint.")
@click.option("--run-id", default=None, help="Run folder name (default: date-time).")
@click.option("--seed", type=int, default=None, help="Training seed, one of train.seeds (default: train.seed).")
def train(cfg, resume_dir, run_id, seed):
    """Train the agent -> logs/<E>/<run_id>/ (config, tb/, checkpoints/, models, train.log)."""
    import shlex
    import sys
    from rl.train import train as run_train
    if seed is not None:
        from rl.sweep import train_seed_config
        cfg = train_seed_config(cfg, seed)
    if resume_dir:
        run_dir = Path(resume_dir)
        cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    else:
        run_dir = LOG_ROOT / cfg.experiment / (run_id or time.strftime("%Y%m%d-%H%M%S"))
        if (run_dir / "config.yaml").exists():
            raise DataError(f"{run_dir} exists: choose another --run-id or --resume it")
    data, normaliser = load_run_inputs(cfg)
    run_train(cfg, data, normaliser, run_dir, resume=bool(resume_dir),
              command=shlex.join(["enkfrl"] + sys.argv[1:]))
    click.echo(f"run folder: {run_dir}")


@main.command()
@exp_options
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="Run folder (default: the newest under logs/<E>/).")
@click.option("--model", "which", type=click.Choice(["best", "final"]), default="final", show_default=True,
              help="final_model.zip, or best_model.zip (chosen on the eval path itself: not for reporting).")
@click.option("--paths", "path_list", default=None,
              help="Comma-separated paths to evaluate (default: the eval path).")
@click.option("--results-dir", default=None, type=click.Path(file_okay=False),
              help="Also write <dir>/<E>.json (results/fit format) for the eval path.")
def evaluate(cfg, run_dir, which, path_list, results_dir):
    """Closed-loop evaluation of the policy and the baselines -> metrics.json, eval.h5."""
    from rl.evaluate import BASELINES, evaluate as run_eval, load_policy, policy_actor, write_eval
    from rl.env import AssimilationEnv
    run_dir = Path(run_dir) if run_dir else newest_run(cfg)
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    data, normaliser = load_run_inputs(cfg)
    paths = [int(p) for p in path_list.split(",")] if path_list else [cfg.paths.eval_path]
    env = AssimilationEnv(cfg, data, normaliser, paths)
    actors = {"rl": policy_actor(load_policy(cfg, run_dir, which))}
    if (run_dir / "pretrained_model.zip").exists():
        actors["supervised"] = policy_actor(load_policy(cfg, run_dir, "pretrained"))
    metrics, episodes = run_eval(env, {**actors, **BASELINES}, paths)
    for f in write_eval(run_dir, metrics, episodes, env):
        click.echo(f"wrote {f}")
    if results_dir:
        import json
        import shlex
        import sys
        from rl.evaluate import fit_record
        command = " && ".join([(run_dir / "command.txt").read_text().strip(),
                               shlex.join(["enkfrl"] + sys.argv[1:])])
        record = fit_record(cfg, run_dir, metrics, paths[0], command)
        out = Path(results_dir) / f"{cfg.experiment}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        click.echo(f"wrote {out}: checks {record['checks']}")
    for p, per_actor in metrics.items():
        click.echo(f"path {p} ({env.n_cycles} cycles): cycles completed / RMSE_norm vs stored EnKF xa / RMSE vs truth")
        for name, m in per_actor.items():
            if name == "enkf":
                click.echo(f"  {name:13s} {'':>6s}  {'0':>8s}  {m['rmse_vs_truth']:.4f}")
            else:
                click.echo(f"  {name:13s} {m['cycles_completed']:6d}  {m['rmse_norm_vs_enkf']:.5f}  {m['rmse_vs_truth']:.4f}")


@main.command()
@exp_options
@click.option("--stage", type=click.Choice(["data", "train", "eval", "all"]), default="data",
              show_default=True)
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder for train/eval plots (default: the newest under logs/<E>/).")
def plot(cfg, stage, run_dir):
    """Figures into logs/<E>/plots/ (data) or <run>/plots/ (train, eval)."""
    def wrote(paths):
        for p in paths:
            click.echo(f"wrote {p}")

    if stage in ("data", "all"):
        from enkf.plots import plot_data
        from enkf.precompute import read_paths
        from enkf.spinup import read_spinup
        wrote(plot_data(cfg, read_spinup(cfg, spinup_file(cfg)), read_paths(cfg, paths_file(cfg)),
                        LOG_ROOT / cfg.experiment / "plots"))
    if stage == "data":
        return
    from rl.plots import plot_eval, plot_training
    run = Path(run_dir) if run_dir else newest_run(cfg)
    if not (run / "config.yaml").is_file():
        raise DataError(f"{run} is not a run folder (no config.yaml)")
    if stage in ("train", "all"):
        wrote(plot_training(run, run / "plots"))
    if stage == "eval" or (stage == "all" and (run / "eval.h5").exists()):
        wrote(plot_eval(run, run / "plots"))
    elif stage == "all":
        click.echo(f"note: no evaluation figures: {run / 'eval.h5'} is missing "
                   f"(run `enkfrl evaluate --run {run}`)")


ADDRESS = click.option("--address", default=None,
                       help="Ray cluster to run the trials on (default: RAY_ADDRESS, else Ray starts on this machine).")
MAX_CONCURRENT = click.option("--max-concurrent", type=click.IntRange(min=0), default=None,
                              help="Trials at once (default: sweep.max_concurrent; 0: as many as resources allow).")


@main.command()
@click.option("--question", required=True, help="Name of a study under ablations: in the config.")
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@click.option("--out-dir", default=None, type=click.Path(file_okay=False),
              help="Records folder (default: sweep.records_dir).")
@ADDRESS
@MAX_CONCURRENT
def ablate(question, config_path, out_dir, address, max_concurrent):
    """Run one ablation study on Ray, a trial per (experiment, variant, seed) -> results/ablations/<question>/
    (one record per trial; finished trials are skipped) and the table results/ablations/<question>.json."""
    import shlex
    import sys
    from rl.sweep import run_study
    out = run_study(Path(config_path), question, DATA_ROOT, command=shlex.join(["enkfrl"] + sys.argv[1:]),
                    address=address, max_concurrent=max_concurrent, records_dir=out_dir, echo=click.echo)
    click.echo(f"wrote {out}")


@main.command("train-many")
@click.option("--exp", "experiments", default="L96_1,L96_2,L96_3", show_default=True,
              help="Comma-separated experiments; each is trained with every seed of its train.seeds.")
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@ADDRESS
@MAX_CONCURRENT
def train_many(experiments, config_path, address, max_concurrent):
    """Train and evaluate every (experiment, train seed) on Ray -> logs/<E>/seed<S>-<config hash>/."""
    import shlex
    import sys
    from rl.sweep import train_many as run
    for d in run(Path(config_path), experiments.split(","), DATA_ROOT, LOG_ROOT,
                 command=shlex.join(["enkfrl"] + sys.argv[1:]), address=address,
                 max_concurrent=max_concurrent, echo=click.echo):
        click.echo(f"run folder: {d}")


@main.command()
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@click.option("--quick", is_flag=True, help="Fewer repetitions (for a smoke test of the bench).")
def bench(config_path, quick):
    """Speed ratios measured in one run (kernels vs numpy, precompute, env, PPO, RecurrentPPO)."""
    import json
    from enkf.bench import run_bench
    from rl.bench import run_rl_bench
    results = {"kernels": run_bench(config_path, quick=quick, echo=click.echo)}
    click.echo("")
    results["rl"] = run_rl_bench(config_path, quick=quick, echo=click.echo, data_root=DATA_ROOT)
    if not quick:  # a quick run is a smoke test of the bench, not a measurement to keep
        out = Path("results/bench.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=float) + "\n")
        click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
