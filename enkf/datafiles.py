"""The data files of an experiment: their names, when they are stale, and how they are made.

Every reader and writer of the data goes through this module (the CLI, the studies, the shell
scripts through `enkfrl`):

    data/<E>/spinup.h5            the spin-up: start states and climatology (enkf/spinup.py)
    data/<E>/paths.h5             the reference EnKF run from every start (enkf/precompute.py)
    data/<E>/test_spinup.h5       the test split: a separate spin-up from test.seed ...
    data/<E>/test_paths.h5        ... and its reference runs (never trained on)
    data/<E>/<data hash>/         a study variant's spinup.h5 and paths.h5, shared by its trials

A file is stale when a setting it depends on differs from the config's: spinup.h5 depends on
SPINUP_SECTIONS, paths.h5 on DATA_SECTIONS, both less NO_DATA_EFFECT. The files store those
settings; `stale_keys` names what changed. These settings and their hashes are defined in
enkf/config.py beside the config hash (enkf/spinup.py and enkf/precompute.py, which this module
calls, write and compare them); they are used from here.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from enkf.config import (  # noqa: F401  the data's settings and staleness, beside the config hash
    DATA_SECTIONS, NO_DATA_EFFECT, SPINUP_SECTIONS, SPLITS, DAConfig, data_hash, data_settings, settings_of,
    spinup_hash, spinup_settings, split_config, stale_keys)

SPINUP_FILE = "spinup.h5"
PATHS_FILE = "paths.h5"

# ---- names ------------------------------------------------------------------------------------
def _prefix(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return "" if split == "train" else f"{split}_"


def spinup_file(folder, split: str = "train") -> Path:
    """<folder>/spinup.h5 (training split) or <folder>/test_spinup.h5."""
    return Path(folder) / f"{_prefix(split)}{SPINUP_FILE}"


def paths_file(folder, split: str = "train") -> Path:
    """<folder>/paths.h5 (training split) or <folder>/test_paths.h5."""
    return Path(folder) / f"{_prefix(split)}{PATHS_FILE}"


def files(folder, splits=("train",)) -> dict[str, Path]:
    """{name: path} of the data files of `splits` in folder: spinup, paths (training split),
    test_spinup, test_paths (what an evaluation record names)."""
    return {f"{_prefix(sp)}{kind}": f(folder, sp) for sp in splits
            for kind, f in (("spinup", spinup_file), ("paths", paths_file))}


def experiment_dir(data_root, cfg: DAConfig) -> Path:
    """data/<E>/: the experiment's own data (`enkfrl generate`, `enkfrl precompute`)."""
    return Path(data_root) / cfg.experiment


def data_dirs(data_root, cfg: DAConfig) -> list[Path]:
    """Where the data of cfg may lie: data/<E>/ (the experiment's own) and data/<E>/<data hash>/
    (variant data that several trials of a study share)."""
    return [experiment_dir(data_root, cfg), experiment_dir(data_root, cfg) / data_hash(cfg)]


# ---- staleness ----------------------------------------------------------------------------------
def is_current(cfg: DAConfig, folder, split: str = "train") -> bool:
    """folder holds the split's spinup.h5 and paths.h5 made with cfg's settings (attributes only,
    no array is read)."""
    import h5py
    scfg = split_config(cfg, split)
    try:
        with h5py.File(spinup_file(folder, split), "r") as f:
            if "settings" in f.attrs and stale_keys(json.loads(f.attrs["settings"]), spinup_settings(scfg)):
                return False
            if "settings" not in f.attrs and f.attrs.get("spinup_hash") != spinup_hash(scfg):
                return False
        with h5py.File(paths_file(folder, split), "r") as f:
            return f.attrs.get("data_hash") == data_hash(scfg)
    except OSError:
        return False


# ---- making and reading -------------------------------------------------------------------------
def make_spinup(cfg: DAConfig, folder, split: str = "train") -> tuple[dict, Path]:
    """The split's spin-up of cfg -> <folder>/[test_]spinup.h5; (its arrays, the file)."""
    from enkf.spinup import run_spinup, write_spinup
    scfg = split_config(cfg, split)
    result = run_spinup(scfg)
    out = spinup_file(folder, split)
    write_spinup(scfg, result, out)
    return result, out


def make_paths(cfg: DAConfig, folder, split: str = "train", progress: bool = True,
               config_file: str = "config.yaml") -> tuple[dict, Path]:
    """The split's reference EnKF runs from the starts of its spinup.h5 -> <folder>/[test_]paths.h5;
    (its arrays, the file)."""
    import enkf.precompute as pre
    from enkf.spinup import read_spinup
    scfg = split_config(cfg, split)
    starts = read_spinup(scfg, spinup_file(folder, split), config_file)["starts"]
    data = pre.precompute(scfg, starts, progress=progress)
    out = paths_file(folder, split)
    pre.write_paths(scfg, data, starts, out)
    return data, out


def compute(cfg: DAConfig, workers: int | None = None) -> tuple[dict, dict]:
    """Spin-up and reference EnKF runs of cfg in memory, in at most `workers` processes (None:
    paths.workers); the data do not depend on the number of processes."""
    from enkf.precompute import precompute
    from enkf.spinup import run_spinup
    spin = run_spinup(cfg)
    if workers is not None:
        n = min(cfg.paths.workers or workers, workers)
        cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, workers=n))
    return spin, precompute(cfg, spin["starts"], progress=False)


def write(cfg: DAConfig, folder, spin: dict, data: dict, split: str = "train") -> None:
    """Arrays of `compute` -> the split's spinup.h5 and paths.h5 in folder."""
    from enkf.precompute import write_paths
    from enkf.spinup import write_spinup
    scfg = split_config(cfg, split)
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_spinup(scfg, spin, spinup_file(folder, split))
    write_paths(scfg, data, spin["starts"], paths_file(folder, split))


def ensure(cfg: DAConfig, folder, split: str = "train", workers: int | None = None) -> bool:
    """Make the split's files in folder unless they are current; True when they were made."""
    if is_current(cfg, folder, split):
        return False
    scfg = split_config(cfg, split)
    spin, data = compute(scfg, workers)
    write(cfg, folder, spin, data, split)
    return True


def read(cfg: DAConfig, folder, split: str = "train", config_file: str = "config.yaml") -> tuple[DAConfig, dict, dict]:
    """(config of the split, its spinup.h5 arrays, its paths.h5 arrays), each refused with one
    line (DataError) when missing, stale against split_config(cfg, split), or damaged."""
    from enkf.precompute import read_paths
    from enkf.spinup import read_spinup
    scfg = split_config(cfg, split)
    return (scfg, read_spinup(scfg, spinup_file(folder, split), config_file),
            read_paths(scfg, paths_file(folder, split), config_file))
