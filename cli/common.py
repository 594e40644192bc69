"""What every command shares: experiment/config options, data paths, one-line errors."""
from __future__ import annotations

import functools
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
        click.get_current_context().meta[CONFIG_FILE] = str(config_path)
        return func(cfg=cfg, **kwargs)
    return wrapper


CONFIG_FILE = "enkfrl.config_file"
"""ctx.meta key: the config file the command read (staleness messages name it)."""


def config_file() -> str:
    return click.get_current_context().meta.get(CONFIG_FILE, "config.yaml")


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
    """Turns ConfigError (exit 2), DataError and PermissionError (exit 1) into one line on stderr."""

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
