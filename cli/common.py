"""What every command shares: experiment/config options, data paths, one-line errors."""
from __future__ import annotations

import functools
import inspect
from pathlib import Path

import click

from enkf import datafiles
from enkf.config import SPLITS, ConfigError, read_settings
from enkf.datafiles import experiment_dir
from enkf.io import DISK_FULL_HINT, DataError, is_disk_full
from rl.config import load_config

DATA_ROOT = Path("data")
LOG_ROOT = Path("logs")
RESULTS_ROOT = Path("results")


def data_dir(cfg) -> Path:
    """data/<E>/: where the experiment's data files lie (enkf/datafiles.py names them)."""
    return experiment_dir(DATA_ROOT, cfg)


def data_record_file(cfg, split: str = "train") -> Path:
    """results/data/<E>.json (training split) or results/data/<E>_test.json: the precompute summary."""
    return RESULTS_ROOT / "data" / (f"{cfg.experiment}.json" if split == "train" else
                                    f"{cfg.experiment}_{split}.json")


def read_split(cfg, split: str) -> tuple:
    """(config of the split, its spinup.h5 arrays, its paths.h5 arrays) of data/<E>/, checked for
    staleness against the config file the command read."""
    return datafiles.read(cfg, data_dir(cfg), split, config_file())


BENCH_EXPERIMENTS = ("L96_1", "L96_sakov2008", "smoke")
"""The experiments `enkfrl bench` reads (enkf/bench.py, rl/studies/bench.py)."""


def bench_config(config_path) -> dict:
    """The resolved configs `enkfrl bench` measures with, by experiment (its provenance config),
    less what PPO does not read (enkf.config.read_settings: train.algo ppo, offpolicy:)."""
    return {e: read_settings(load_config(config_path, e).to_dict()) for e in BENCH_EXPERIMENTS}


def split_option(func):
    """--split train|test (default: both)."""
    return click.option("--split", type=click.Choice(list(SPLITS)), default=None,
                        help="Only this split (default: both). train: the training data (paths of "
                             "one spin-up); test: the test split (a separate spin-up with test.seed, "
                             "test.n_paths paths).")(func)


def exp_options(func):
    """--exp, --config and --debug; the command receives the validated Config as ``cfg``."""
    @click.option("--exp", "experiment", default="L96_1", show_default=True,
                  help="Experiment name in the config file.")
    @click.option("--config", "config_path", default="config.yaml", show_default=True,
                  type=click.Path(dir_okay=False), help="Config file.")
    @functools.wraps(func)
    def wrapper(experiment, config_path, **kwargs):
        if kwargs.get("resume_dir"):  # `train --resume`: the run's own config.yaml, not this one
            from click.core import ParameterSource
            refuse_with_resume({"--config": "config_path"})
            ctx = click.get_current_context()
            if ctx.get_parameter_source("experiment") == ParameterSource.COMMANDLINE:
                ctx.meta[EXPERIMENT_GIVEN] = experiment  # the command checks it is the run's
            if "config_path" in inspect.signature(func).parameters:
                kwargs["config_path"] = None
            return func(cfg=None, **kwargs)
        cfg = load_config(config_path, experiment)
        click.get_current_context().meta[CONFIG_FILE] = str(config_path)
        if "config_path" in inspect.signature(func).parameters:  # commands that read more of it
            kwargs["config_path"] = config_path
        return func(cfg=cfg, **kwargs)
    return wrapper


def refuse_with_resume(options: dict) -> None:
    """ConfigError naming the first of options ({flag: parameter name}) given on the command line
    together with --resume: a resume continues the run as it was made and would ignore it."""
    from click.core import ParameterSource
    ctx = click.get_current_context()
    for flag, name in options.items():
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            raise ConfigError(f"{flag} with --resume: a resume continues the run with its own config.yaml "
                              f"and cannot apply {flag}; leave it out, or start a new run")


EXPERIMENT_GIVEN = "enkfrl.experiment_given"
"""ctx.meta key: --exp as given on the command line with --resume."""
CONFIG_FILE = "enkfrl.config_file"
"""ctx.meta key: the config file the command read (staleness messages name it)."""


def config_file() -> str:
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(CONFIG_FILE, "config.yaml") if ctx else "config.yaml"


def parse_paths(text: str, n_paths: int) -> list[int]:
    """--paths "0,3": distinct path numbers in [0, n_paths); anything else a one-line DataError."""
    paths = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) >= n_paths:
            raise DataError(f"--paths {text}: {item!r} is not a path number in [0, {n_paths})")
        if int(item) not in paths:
            paths.append(int(item))
    return paths


class Group(click.Group):
    """Turns ConfigError (exit 2), DataError, PermissionError and a full disk (exit 1) into one
    line on stderr."""

    def invoke(self, ctx):
        debug = ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            if debug:
                raise
            click.echo(f"config error: {e}", err=True)
            ctx.exit(2)
        except DataError as e:
            if debug:
                raise
            click.echo(f"error: {e}", err=True)
            ctx.exit(1)
        except PermissionError as e:  # anything ensure_writable did not catch beforehand
            if debug:
                raise
            click.echo(f"error: permission denied: {e.filename}", err=True)
            ctx.exit(1)
        except OSError as e:  # a full disk outside enkf.io.atomic_path (logs, TensorBoard, HDF5)
            if debug or not is_disk_full(e):
                raise
            click.echo(f"error: no space left on device{f' ({e.filename})' if e.filename else ''}: "
                       f"{DISK_FULL_HINT}", err=True)
            ctx.exit(1)
