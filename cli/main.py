"""`enkfrl` command line: thin wrappers that parse, load the config, call enkf/ or rl/."""
from __future__ import annotations

import time
from pathlib import Path

import click

from cli.common import (DATA_ROOT, EXPERIMENT_GIVEN, Group, LOG_ROOT, config_file, data_dir, data_record_file,
                        exp_options, parse_paths, read_split, refuse_with_resume, split_option)
from enkf import datafiles
from enkf.config import SPLITS, ConfigError, split_config
from enkf.io import DataError, atomic_write_json, ensure_writable
from rl.config import load_run_config


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


def _splits(split: str | None) -> tuple[str, ...]:
    return SPLITS if split is None else (split,)


@main.command()
@exp_options
@split_option
def generate(cfg, split):
    """Spin-up trajectory, start states and climatology -> data/<E>/spinup.h5, and the test
    split's (a separate spin-up from test.seed) -> data/<E>/test_spinup.h5."""
    folder = data_dir(cfg)
    ensure_writable(folder)
    for sp in _splits(split):
        scfg = split_config(cfg, sp)
        t0 = time.perf_counter()
        which = "" if sp == "train" else f" ({sp} split, seed {scfg.seed})"
        click.echo(f"spin-up {cfg.experiment}{which}: {scfg.spinup.steps} steps "
                   f"of {scfg.model.name} (n={scfg.model.n}, {scfg.model.integrator}, dt={scfg.model.dt})")
        result, out = datafiles.make_spinup(cfg, folder, sp)
        click.echo(f"{scfg.paths.n_paths} starts from steps "
                   f"[{result['start_steps'].min()}, {result['start_steps'].max()}]; climatology "
                   f"min {result['clim_min'].min():.2f} max {result['clim_max'].max():.2f} "
                   f"-> {out} ({time.perf_counter() - t0:.1f} s)")


@main.command()
@exp_options
@split_option
@click.option("--record", is_flag=True,
              help="Also write the summary with its provenance to results/data/<E>[_test].json (evidence).")
def precompute(cfg, split, record):
    """Reference EnKF run from every start -> data/<E>/paths.h5, and the test split's ->
    data/<E>/test_paths.h5; prints the RMSE summary (--record: also into results/data/)."""
    from enkf.io import atomic_write_json, provenance
    from enkf.precompute import summary
    folder = data_dir(cfg)
    ensure_writable(folder)
    if record:
        ensure_writable(data_record_file(cfg).parent)
    for sp in _splits(split):
        scfg = split_config(cfg, sp)
        t0 = time.perf_counter()
        data, out = datafiles.make_paths(cfg, folder, sp, config_file=config_file())
        wall = time.perf_counter() - t0
        s = summary(data, scfg.paths.burn_in)
        which = "" if sp == "train" else f" ({sp} split)"
        click.echo(f"{scfg.paths.n_paths} paths x {scfg.paths.n_cycles} cycles{which} in {wall:.1f} s -> {out}")
        click.echo(f"time-mean RMSE vs truth after {scfg.paths.burn_in} cycles, mean ± std over paths:")
        for k, label in [("forecast_rmse", "forecast"), ("analysis_rmse", "analysis"),
                         ("obs_rmse", "observation")]:
            click.echo(f"  {label:12s} {s[k][0]:.4f} ± {s[k][1]:.4f}")
        if not record:
            continue
        command = f"enkfrl precompute --exp {cfg.experiment} --split {sp} --record"
        data_cfg = {k: scfg.to_dict()[k] for k in datafiles.DATA_SECTIONS}
        doc = {"experiment": cfg.experiment, "split": sp, "command": command,
               "data_hash": datafiles.data_hash(scfg), "n_paths": scfg.paths.n_paths,
               "n_cycles": scfg.paths.n_cycles, "burn_in": scfg.paths.burn_in, "wall_s": wall,
               **{k: {"mean": v[0], "std_over_paths": v[1]} for k, v in s.items()},
               "provenance": provenance(data_cfg, datafiles.data_hash(scfg), command, wall)}
        click.echo(f"wrote {atomic_write_json(data_record_file(cfg, sp), doc)}")


@main.command("ensure-data")
@exp_options
def ensure_data(cfg):
    """Make the data files of an experiment (both splits) that are missing or stale, as generate
    and precompute would; current files are left alone (scripts call this before training)."""
    folder = data_dir(cfg)
    ensure_writable(folder)
    for sp in SPLITS:
        made = datafiles.ensure(cfg, folder, sp)
        names = f"{datafiles.spinup_file(folder, sp)}, {datafiles.paths_file(folder, sp)}"
        click.echo(f"{'made' if made else 'current'}: {names}")


def load_run_inputs(cfg, config_file: str):
    """paths.h5 arrays and the normaliser (spin-up climatology) for a run of cfg (read from
    config_file: staleness messages name it)."""
    from rl.envs.normalisation import read_inputs
    return read_inputs(cfg, data_dir(cfg), config_file)


def newest_run(cfg, needs: str = "config.yaml") -> Path:
    """The newest run of the experiment (by run.json's created) holding the file `needs`."""
    from rl.training.runs import find_runs
    runs = [d for d, _ in find_runs(LOG_ROOT, cfg.experiment) if (d / needs).is_file()]
    if not runs:
        raise DataError(f"no run with {needs} under {LOG_ROOT / cfg.experiment}: run "
                        f"`enkfrl train --exp {cfg.experiment}` first")
    return runs[-1]


def training_config(cfg, config_path, study: str | None, variant: str | None, seed: int | None):
    """The config a training run uses: the experiment's with train.seed = seed (one of
    train.seeds), or a variant of a `measure: train` study."""
    from rl.config import load_ablation, seed_config
    if (study is None) != (variant is None):
        raise ConfigError("--study and --variant go together")
    if study is None:
        return seed_config(cfg, seed)
    meta, runs = load_ablation(config_path, study)
    if meta["measure"] != "train":
        raise ConfigError(f"--study {study}: measure {meta['measure']} is not a training study (measure: train)")
    chosen = [r for r in runs if r.experiment == cfg.experiment and r.variant == variant
              and (seed is None or r.seed == seed)]
    if not chosen:
        raise ConfigError(f"--study {study} --variant {variant} --seed {seed}: no such run for {cfg.experiment}")
    return chosen[0].cfg


@main.command()
@exp_options
@click.option("--resume", "resume_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="Continue this run folder (its own config.yaml) from its newest checkpoint.")
@click.option("--run-id", default=None,
              help="Run folder name (default: [study-variant-]s<seed>-<config hash>-date-time, -2, -3... on a clash).")
@click.option("--seed", type=int, default=None,
              help="Training seed: one of train.seeds (default: train.seed), or of the study's seeds.")
@click.option("--study", default=None, help="A `measure: train` study under ablations: in the config ...")
@click.option("--variant", default=None, help="... and its variant: the run's config is that variant's.")
@click.option("--trust", is_flag=True,
              help="With --resume: take model files whose sha256 is not the run's record.")
def train(cfg, config_path, resume_dir, run_id, seed, study, variant, trust):
    """Train the agent -> logs/<E>/<run_id>/ (config, tb/, checkpoints/, models, train.log)."""
    import shlex
    import sys
    from rl.config import agents_per_path
    from rl.training.runs import (RUN_JSON, RunLock, check_name, create_run_dir, inferred_run_info, is_finished,
                                  model_steps, read_run_info, write_missing_weights)
    from rl.training.train import train as run_train
    command = shlex.join(["enkfrl"] + sys.argv[1:])
    if resume_dir:
        refuse_with_resume({"--seed": "seed", "--study": "study", "--variant": "variant", "--run-id": "run_id"})
        run_dir = Path(resume_dir)
        cfg = load_run_config(run_dir / "config.yaml")
        given = click.get_current_context().meta.get(EXPERIMENT_GIVEN)
        if given is not None and given != cfg.experiment:
            raise ConfigError(f"--exp {given} with --resume of a run of {cfg.experiment}: leave --exp out")
        with RunLock(run_dir, command):  # one owner per run, for the whole run
            unit = agents_per_path(cfg)  # SB3 counts agent-steps; total_steps is in path-steps
            if is_finished(run_dir, cfg.train.total_steps * unit, trust):
                steps = model_steps(run_dir / "final_model.zip") // unit
                for f in write_missing_weights(cfg, run_dir, unit, trust):  # a run made before they were kept
                    click.echo(f"wrote {f} (the policy's weights, from the run's own zip)")
                if read_run_info(run_dir) is None:  # a run made before run.json was kept
                    atomic_write_json(run_dir / RUN_JSON, inferred_run_info(run_dir, cfg))
                    click.echo(f"wrote {run_dir / RUN_JSON} (from its config.yaml and command.txt)")
                click.echo(f"{run_dir} is finished (final_model.zip at {steps} of "
                           f"{cfg.train.total_steps} path-steps): nothing to resume")
                return
            ensure_writable(run_dir)
            data, normaliser = load_run_inputs(cfg, str(run_dir / "config.yaml"))
            run_train(cfg, data, normaliser, run_dir, resume=True, trust=trust, command=command)
    else:
        if trust:
            raise ConfigError("--trust goes with --resume: a new run loads no model file")
        if run_id is not None:
            check_name(run_id, "--run-id")
        cfg = training_config(cfg, config_path, study, variant, seed)
        data, normaliser = load_run_inputs(cfg, config_file())
        run_dir = create_run_dir(LOG_ROOT / cfg.experiment, cfg, study, variant, run_id)
        with RunLock(run_dir, command):
            run_train(cfg, data, normaliser, run_dir, command=command)
    click.echo(f"run folder: {run_dir}")


@main.command()
@exp_options
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="Run folder (default: the newest under logs/<E>/ that has the model).")
@click.option("--model", "which", type=click.Choice(["best", "final"]), default="final", show_default=True,
              help="The final model, or the best (chosen on the eval path itself: not for fit records).")
@click.option("--paths", "path_list", default=None,
              help="Comma-separated paths of the training data to evaluate (default: the eval path).")
@click.option("--test/--no-test", default=True, show_default=True,
              help="Also every path of the independent test split (data/<E>/test_paths.h5).")
@click.option("--trust", is_flag=True,
              help="Take model weights whose sha256 is not the run's record.")
def evaluate(cfg, run_dir, which, path_list, test, trust):
    """Closed-loop evaluation of the policy and the baselines on the eval path and the test set
    (cycle means after paths.burn_in) -> metrics.json, eval.h5 in the run folder."""
    from rl.training.evaluate import evaluate_run, over_paths
    run_dir = Path(run_dir) if run_dir else newest_run(cfg, needs=f"{which}_model.safetensors")
    cfg = load_run_config(run_dir / "config.yaml")
    paths = parse_paths(path_list, cfg.paths.n_paths) if path_list else [cfg.paths.eval_path]
    ensure_writable(run_dir)
    data, normaliser = load_run_inputs(cfg, str(run_dir / "config.yaml"))
    test_inputs = read_split(cfg, "test") if test else None  # fails early, before any work
    data_files = datafiles.files(data_dir(cfg), ("train", "test") if test else ("train",))
    metrics, test_result, files = evaluate_run(
        run_dir, cfg, data, normaliser, (test_inputs[0], test_inputs[2]) if test_inputs else None,
        paths, which, trust, data_files)
    for f in files:
        click.echo(f"wrote {f}")
    header = "cycles completed (worst) / RMSE_norm vs stored EnKF xa / RMSE vs truth, after {} cycles"
    tables = [(f"path {p}", per_actor) for p, per_actor in metrics.items()]
    if test_result:
        tables.append((f"test set ({len(test_result['metrics'])} paths, mean ± std)",
                       over_paths(test_result["metrics"])))
    for title, per_actor in tables:
        click.echo(f"{title}: " + header.format(cfg.paths.burn_in))
        for name, m in per_actor.items():
            def fmt(key, digits):
                v = m.get(key)
                if isinstance(v, dict):
                    return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}"
                return "0" if v is None else f"{v:.{digits}f}"
            cycles = m.get("cycles_completed", "")
            click.echo(f"  {name:13s} {cycles!s:>6s}  {fmt('rmse_norm_vs_enkf', 5):>19s}  {fmt('rmse_vs_truth', 4)}")


@main.command()
@click.option("--runs", "run_list", required=True,
              help="Comma-separated evaluated run folders of one setting, one per training seed.")
@click.option("--init", type=click.Choice(["clone", "scratch"]), required=True,
              help="How PPO started in these runs (recorded; picks the checks).")
@click.option("--supervised-from", default=None,
              help="Comma-separated clone runs whose cloned policy is the supervised reference (scratch runs).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The results JSON to write (results/fit/<E>.json, results/fit_pointwise/<E>_<init>.json).")
@click.option("--add-to", "add_to", default=None, type=click.Path(dir_okay=False),
              help="An earlier record of the same setting and config: its other seeds are kept (a seed in "
                   "--runs replaces its entry), and its supervised reference unless --supervised-from names one.")
@click.option("--config", "config_path", default="config.yaml", show_default=True,
              help="Config whose enkf_inflation study lists the inflations a truth-reward record is compared with.")
def report(run_list, init, supervised_from, out_path, add_to, config_path):
    """Fit record over training seeds (docs/design.md: results format) from evaluated run folders."""
    import shlex
    import sys
    from enkf.io import atomic_write_json
    from rl.studies.report import fit_record, read_fit_record
    t0 = time.perf_counter()
    runs = [Path(r) for r in run_list.split(",")]
    sup = [Path(r) for r in supervised_from.split(",")] if supervised_from else None
    earlier = read_fit_record(Path(add_to)) if add_to else None
    record = fit_record(runs, init, shlex.join(["enkfrl"] + sys.argv[1:]), 0.0, sup, earlier)
    if record["reward_target"] == "truth":  # the study's question: does it beat the EnKF it imitated?
        from rl.studies.report import compare_with_tuned_enkf
        cfg = load_run_config(runs[0] / "config.yaml")
        test_cfg, spin, _ = read_split(cfg, "test")
        record = compare_with_tuned_enkf(record, cfg, test_cfg, spin["starts"], config_path)
    record["provenance"]["wall_s"] = time.perf_counter() - t0
    atomic_write_json(out_path, record)
    click.echo(f"wrote {out_path}")
    for name, c in record["checks"].items():
        click.echo(f"  {name:28s} mean {'pass' if c['mean'] else 'FAIL'}, {c['seeds_passing']}/{c['of_seeds']} seeds")


@main.command()
@click.argument("records", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", default="config.yaml", show_default=True,
              help="Config whose execution keys (threads, device) stand in where a record predates them.")
def recheck(records, config_path):
    """Compute fit records' checks again from what each keeps, after a check's rule changed (no number
    is measured again); a record is rewritten only when a check changes."""
    import json
    from rl.config import load_config
    from rl.studies.report import recheck as recheck_record
    for path in records:
        record = json.loads(Path(path).read_text())
        again = recheck_record(record, load_config(config_path, record["experiment"]))
        if again["checks"] == record["checks"]:
            click.echo(f"{path}: checks unchanged")
            continue
        atomic_write_json(path, again)
        changed = [k for k in again["checks"] if again["checks"][k] != record["checks"].get(k)]
        click.echo(f"rewrote {path}: {', '.join(changed)}")


@main.command("runs")
@click.option("--exp", "experiment", required=True, help="Experiment whose runs (logs/<E>/) to list.")
@click.option("--study", default=None, help="Only runs of this `measure: train` study ...")
@click.option("--variant", default=None, help="... and variant.")
@click.option("--final", is_flag=True, help="Only runs of no study (the experiment's own config).")
@click.option("--evaluated", is_flag=True, help="Only runs whose final model has a test-set evaluation.")
@click.option("--newest-per-seed", is_flag=True, help="The newest run of each training seed.")
@click.option("--csv", "as_csv", is_flag=True, help="The folders on one line, comma-separated (for `report --runs`).")
def list_runs(experiment, study, variant, final, evaluated, newest_per_seed, as_csv):
    """Run folders of an experiment, selected by what their run.json says."""
    from rl.training.runs import select_runs
    runs = select_runs(LOG_ROOT, experiment, study, variant, final, evaluated, newest_per_seed)
    if as_csv:
        click.echo(",".join(str(d) for d, _ in runs))
        return
    for d, i in runs:
        setting = "final" if i["study"] is None else f"{i['study']}/{i['variant']}"
        click.echo(f"{d}  seed {i['seed']}  {setting}  {i['agent']}  config {i['config_hash'][:8]}  {i['created']}")


@main.command()
@click.option("--record", "records", multiple=True, required=True,
              help="LABEL=results/....json (a fit record with per-seed eval curves); repeat per line.")
@click.option("--title", default="", help="Figure title.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
def curves(records, title, out_path):
    """Learning curves on the eval path (RMSE_norm vs stored xa against PPO path-steps) of fit records."""
    from rl.studies.plots import plot_learning_curves
    from rl.studies.report import read_fit_record
    loaded = {}
    for item in records:
        label, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            raise DataError(f"--record {item}: expected LABEL=path/to/record.json of an existing file")
        loaded[label] = read_fit_record(Path(path))
    click.echo(f"wrote {plot_learning_curves(loaded, Path(out_path), title)}")


@main.command()
@exp_options
@click.option("--stage", type=click.Choice(["data", "train", "eval", "all"]), default="all", show_default=True,
              help="all: the data figures, then the run's training and evaluation figures where they exist.")
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False),
              help="Run folder for train/eval plots (default: the newest under logs/<E>/).")
def plot(cfg, stage, run_dir):
    """Figures into logs/<E>/plots/ (data) or <run>/plots/ (train, eval)."""
    def wrote(paths):
        for p in paths:
            click.echo(f"wrote {p}")

    if stage in ("data", "all"):
        from enkf.plots import plot_data
        _, spin, data = read_split(cfg, "train")
        wrote(plot_data(cfg, spin, data, LOG_ROOT / cfg.experiment / "plots"))
    if stage == "data":
        return
    from rl.studies.plots import plot_eval, plot_training
    if run_dir is None and stage == "all" and not any((LOG_ROOT / cfg.experiment).glob("*/config.yaml")):
        click.echo(f"note: no run under {LOG_ROOT / cfg.experiment} yet: only the data figures")
        return
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
    from rl.studies.sweep import run_study
    out = run_study(Path(config_path), question, DATA_ROOT, command=shlex.join(["enkfrl"] + sys.argv[1:]),
                    address=address, max_concurrent=max_concurrent, records_dir=out_dir, echo=click.echo)
    click.echo(f"wrote {out}")


@main.command()
@click.option("--exp", "experiment", required=True, help="An experiment under filters.experiments in the config.")
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@click.option("--record", is_flag=True, help="Write the table to results/filters/<E>.json (evidence); else logs/filters/.")
@ADDRESS
@MAX_CONCURRENT
def filters(experiment, config_path, record, address, max_concurrent):
    """Classical filters (EnKF, ETKF, LETKF over config.yaml's filters grid) on the experiment's
    test split, on Ray, a trial per setting -> logs/filters/<E>/ (finished settings are skipped) and
    the table logs/filters/<E>.json (--record: results/filters/<E>.json)."""
    import shlex
    import sys
    from rl.studies.filters import run_filters
    out = run_filters(Path(config_path), experiment, DATA_ROOT, command=shlex.join(["enkfrl"] + sys.argv[1:]),
                      record=record, address=address, max_concurrent=max_concurrent, echo=click.echo)
    click.echo(f"wrote {out}")


@main.command()
@click.option("--study", required=True, help="A beyond study under ablations: in the config (one experiment).")
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@click.option("--record", is_flag=True,
              help="Write results/beyond/<E>.json, docs/<E>_beyond_curves.png and (once SAC or TD3 ran) "
                   "docs/<E>_beyond_learners.png (evidence); else logs/beyond/.")
def beyond(study, config_path, record):
    """RL analyses that do not imitate vs the best classical filter of the same ensemble: the newest
    evaluated run of every variant and seed of the study, and results/filters/<E>.json -> one record."""
    import shlex
    import sys
    from rl.config import load_ablation
    from rl.studies.beyond import beyond_record, markdown_table
    from rl.studies.plots import plot_beyond_curves, plot_learner_curves
    t0 = time.perf_counter()
    _, runs = load_ablation(config_path, study)
    experiment = runs[0].experiment
    rec = beyond_record(study, Path(config_path), LOG_ROOT, Path("results/filters") / f"{experiment}.json",
                        shlex.join(["enkfrl"] + sys.argv[1:]))
    rec["provenance"]["wall_s"] = time.perf_counter() - t0
    out = Path("results/beyond" if record else "logs/beyond") / f"{experiment}.json"
    figure = Path("docs" if record else "logs/beyond") / f"{experiment}_beyond_curves.png"
    atomic_write_json(out, rec)
    figures = [plot_beyond_curves(rec, figure)]
    learners = figure.with_name(f"{experiment}_beyond_learners.png")
    if plot_learner_curves(rec, learners):  # PPO, SAC and TD3 on one env and reward, when SAC or TD3 ran
        figures.append(learners)
    click.echo(markdown_table(rec))
    if rec["not_run"]:
        click.echo(f"not run yet: {', '.join(rec['not_run'])}")
    click.echo(f"wrote {out}, {', '.join(map(str, figures))}")


@main.command()
@click.option("--runs", "run_list", required=True,
              help="Comma-separated run folders of one setting (pointwise agent), one per training seed.")
@click.option("--to", "targets", required=True, help="Comma-separated Lorenz-96 experiments to evaluate them on.")
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@click.option("--record", is_flag=True, help="Write results/beyond/transfer_<E>_<setting>.json (evidence); else logs/beyond/.")
@click.option("--trust", is_flag=True, help="Take model weights whose sha256 is not the run's record.")
def transfer(run_list, targets, config_path, record, trust):
    """One policy for every ring: the runs' final pointwise policies, unchanged, on the test split
    of other experiments (their physics, data and normalisation) beside their own filters."""
    import shlex
    import sys
    from enkf.config import hash_of
    from enkf.io import provenance
    from rl.config import load_config
    from rl.studies.report import select_runs
    from rl.studies.transfer import markdown_table, transfer_config, transfer_record, transfer_run
    t0 = time.perf_counter()
    runs = [Path(r) for r in run_list.split(",")]
    setting = select_runs(runs)
    tcfgs = {t: load_config(config_path, t) for t in targets.split(",")}  # read once: the file may change meanwhile
    results = {}
    for target, tcfg in tcfgs.items():
        _, normaliser = load_run_inputs(tcfg, config_path)
        test_cfg, _, test_data = read_split(tcfg, "test")
        results[target] = [transfer_run(r, tcfg, (test_cfg, test_data), normaliser, trust, baselines=(i == 0))
                           for i, r in enumerate(runs)]  # the runs share one setting: its baselines once
    name = setting["experiment"] + ("" if setting["study"] is None else f"_{setting['study']}_{setting['variant']}")
    what = transfer_config(setting, tcfgs)
    rec = transfer_record(results, Path("results/filters"), provenance(
        what, hash_of(what), shlex.join(["enkfrl"] + sys.argv[1:]), time.perf_counter() - t0))
    rec["source"], rec["runs"] = setting, [str(r) for r in runs]
    out = Path("results/beyond" if record else "logs/beyond") / f"transfer_{name}.json"
    atomic_write_json(out, rec)
    click.echo(markdown_table(rec))
    click.echo(f"wrote {out}")


@main.command("train-many")
@click.option("--exp", "experiments", default="L96_1,L96_2,L96_3", show_default=True,
              help="Comma-separated experiments; each is trained with every seed of its train.seeds.")
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@ADDRESS
@MAX_CONCURRENT
def train_many(experiments, config_path, address, max_concurrent):
    """Train and evaluate every (experiment, train seed) on Ray -> a run folder each under logs/<E>/."""
    import shlex
    import sys
    from rl.studies.sweep import train_many as run
    for d in run(Path(config_path), experiments.split(","), DATA_ROOT, LOG_ROOT,
                 command=shlex.join(["enkfrl"] + sys.argv[1:]), address=address,
                 max_concurrent=max_concurrent, echo=click.echo):
        click.echo(f"run folder: {d}")


@main.command()
@click.option("--config", "config_path", default="config.yaml", show_default=True)
@click.option("--quick", is_flag=True, help="Fewer repetitions (for a smoke test of the bench).")
@click.option("--record", is_flag=True, help="Write the measurements to results/bench.json (evidence).")
def bench(config_path, quick, record):
    """Speed ratios measured in one run (kernels vs numpy, precompute, env, PPO, RecurrentPPO)."""
    import json
    from enkf.bench import run_bench
    from enkf.config import hash_of
    from enkf.io import atomic_write_json, provenance
    from rl.studies.bench import run_rl_bench
    from cli.common import bench_config
    if record and quick:
        raise DataError("--record with --quick: a quick run is a smoke test of the bench, not a measurement to keep")
    t0 = time.perf_counter()
    results = {"kernels": run_bench(config_path, quick=quick, echo=click.echo)}
    click.echo("")
    results["rl"] = run_rl_bench(config_path, quick=quick, echo=click.echo, data_root=DATA_ROOT)
    if record:
        configs = bench_config(config_path)
        results["provenance"] = provenance(configs, hash_of(configs), "enkfrl bench --record",
                                           time.perf_counter() - t0)
        previous = Path("results/bench.json")
        if previous.is_file():  # keys other commands measure (scripts/bench_ray_study.py: ray_study) stay
            kept = {k: v for k, v in json.loads(previous.read_text()).items() if k not in results}
            results.update(kept)
        out = atomic_write_json(previous, results)
        click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
