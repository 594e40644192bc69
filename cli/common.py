"""What every command shares: experiment/config options, data paths, one-line errors."""
from __future__ import annotations

import functools
import inspect
from pathlib import Path

import click

from enkf.config import Config, ConfigError, load_config
from enkf.io import DataError

DATA_ROOT = Path("data")
LOG_ROOT = Path("logs")


def spinup_file(cfg: Config) -> Path:
    return DATA_ROOT / cfg.experiment / "spinup.h5"


def paths_file(cfg: Config) -> Path:
    return DATA_ROOT / cfg.experiment / "paths.h5"


def exp_options(func):
    """--exp, --config and --debug; the command receives the validated Config as ``cfg``."""
    @click.option("--exp", "experiment", default="L96_1", show_default=True,
                  help="Experiment name in the config file.")
    @click.option("--config", "config_path", default="config.yaml", show_default=True,
                  type=click.Path(dir_okay=False), help="Config file.")
    @functools.wraps(func)
    def wrapper(experiment, config_path, **kwargs):
        cfg = load_config(config_path, experiment)
        if "config_path" in inspect.signature(func).parameters:  # commands that read more of it
            kwargs["config_path"] = config_path
        return func(cfg=cfg, **kwargs)
    return wrapper


class Group(click.Group):
    """Turns ConfigError (exit 2) and DataError (exit 1) into one line on stderr."""

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
