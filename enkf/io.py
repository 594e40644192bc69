"""HDF5 files of a run: atomic writes and reads that fail with one clear line.

Files are written to a temporary name beside the target and renamed when complete, so a killed
run never leaves a file that looks finished.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np


class DataError(RuntimeError):
    """A missing, stale or unreadable data file; the message says what to run."""


def code_version() -> str:
    """git commit of the source tree if available, else the package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("enkfrl")
    except PackageNotFoundError:
        return "unknown"


def git_state() -> tuple[str, bool]:
    """(full git commit, dirty) of the source tree; dirty: a tracked file outside results/ differs
    from the commit. ("unknown", True) outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return "unknown", True
        # results/ is what commands write: a result written before another does not dirty it
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                 ":(top)", ":(top,exclude)results"], cwd=here,
                                capture_output=True, text=True, timeout=5)
        return head.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", True


KEY_PACKAGES = ("enkfrl", "numpy", "numba", "llvmlite", "scipy", "h5py", "PyYAML", "click",
                "torch", "gymnasium", "stable_baselines3", "sb3_contrib", "tensorboard", "ray")


def installed_versions(packages=KEY_PACKAGES) -> dict:
    """{package: installed version} of the packages a run depends on, and python's own version;
    None for a package that is not installed."""
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def hash_of(obj) -> str:
    """Short stable hash of a JSON-able object (Config.hash() is hash_of(config.to_dict()))."""
    import hashlib
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def provenance(config: dict, config_hash: str, command: str, wall_s: float) -> dict:
    """The block every JSON under results/ carries (../shared/RESULTS_FORMAT.md): the resolved
    config (or a study's full overrides), its hash, the code version, the command, the wall time
    and the machine."""
    commit, dirty = git_state()
    return {"config": config, "config_hash": config_hash, "git_commit": commit, "dirty": dirty,
            "command": command, "wall_s": float(wall_s), "cores": os.cpu_count(),
            "python": sys.version.split()[0]}


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path.tmp-<pid>`` and rename it to ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


@contextlib.contextmanager
def atomic_h5(path: str | Path):
    """Open ``path.tmp-<pid>`` for writing; rename to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def put(group: h5py.Group, name: str, data, meaning: str, units: str = "model units",
        shape: str = "") -> None:
    """A dataset with its meaning, units and shape written into its attributes."""
    ds = group.create_dataset(name, data=np.asarray(data), track_times=False)
    ds.attrs["meaning"] = meaning
    ds.attrs["units"] = units
    if shape:
        ds.attrs["shape"] = shape


def open_h5(path: str | Path, missing_hint: str) -> h5py.File:
    """Open for reading; a missing file or a corrupt/truncated one raises DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: {missing_hint}")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise DataError(f"{path} is not a readable HDF5 file (truncated or corrupt): "
                        f"delete it and {missing_hint.replace('run', 'rerun', 1)}") from None


def read_all(path: str | Path, missing_hint: str, required: list[str]) -> tuple[dict, dict]:
    """All datasets (as arrays) and root attributes of a file, checking ``required`` exist."""
    with open_h5(path, missing_hint) as f:
        try:
            missing = [k for k in required if k not in f]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)} (incomplete or from another "
                                f"version): {missing_hint.replace('run', 'rerun', 1)}")
            data = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
            attrs = dict(f.attrs)
        except (OSError, KeyError) as e:
            raise DataError(f"{path} could not be read ({e}): "
                            f"{missing_hint.replace('run', 'rerun', 1)}") from None
    return data, attrs
