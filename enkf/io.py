"""HDF5 files of a run: atomic writes and reads that fail with one clear line.

Files are written to a temporary name beside the target and renamed when complete, so a killed
run never leaves a file that looks finished.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
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
                "torch", "gymnasium", "stable_baselines3", "sb3_contrib", "tensorboard", "ray",
                "safetensors")


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


def provenance(config: dict, config_hash: str, command: str, wall_s: float) -> dict:
    """The block every JSON under results/ carries (docs/design.md: results format): the resolved
    config (or a study's full overrides), its hash, the code version, the command, the wall time
    and the machine."""
    commit, dirty = git_state()
    return {"config": config, "config_hash": config_hash, "git_commit": commit, "dirty": dirty,
            "command": command, "wall_s": float(wall_s), "cores": os.cpu_count(),
            "python": sys.version.split()[0]}


FAULT_ENV = "ENKFRL_FAULT"
"""Test hook (tests/test_faults.py): ``ENKFRL_FAULT=model_512.zip,eval.h5`` kills the process with
SIGKILL once the temporary file of one of these names is complete, before it is renamed."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the ``*.tmp-<pid>`` files in folder left by a writer <pid> that no longer runs."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for f in folder.glob("*.tmp-*"):
        pid = f.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


DISK_FULL_HINT = ("free some space, then run the command again (a training run continues with "
                  "`enkfrl train --resume RUN`)")


def is_disk_full(e: OSError) -> bool:
    """ENOSPC, also as HDF5 reports it (an OSError whose text carries errno 28)."""
    return e.errno == errno.ENOSPC or "errno = 28" in str(e) or "No space left on device" in str(e)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield ``path.tmp-<pid>`` to write; when the block succeeds it is synced to disk and renamed
    to ``path``, so a reader (or a killed writer) never leaves a half file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        try:
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if path.name in os.environ.get(FAULT_ENV, "").split(","):
                os.kill(os.getpid(), signal.SIGKILL)
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            if is_disk_full(e):
                raise DataError(f"no space left on device while writing {path} (the earlier file, if any, "
                                f"is kept): {DISK_FULL_HINT}") from None
            raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text to ``path.tmp-<pid>`` and rename it to ``path``: readers never see half a file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


@contextlib.contextmanager
def atomic_h5(path: str | Path):
    """Open ``path.tmp-<pid>`` for writing; rename to ``path`` only if the block succeeds."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            yield f


def ensure_writable(folder: str | Path) -> Path:
    """Create folder if needed and check that a file can be written in it: called before a long
    computation, so a read-only data/ or logs/ fails at once, in one line."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise DataError(f"cannot write into {folder} ({e.strerror or e}): make it writable or run "
                        f"from another folder") from None
    return folder


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_arrays(path: str | Path, data: dict, shapes: dict, hint: str, integers: tuple = ()) -> None:
    """Every dataset is floating point (those named in ``integers``: integers), each dataset in
    ``shapes`` has that shape, and every floating dataset is finite; else a DataError naming the
    file and the dataset (the arrays are checked once, when loaded)."""
    for name, arr in data.items():
        kind = np.asarray(arr).dtype.kind
        if kind not in ("iu" if name in integers else "f"):
            raise DataError(f"{path}: dataset {name} has dtype {np.asarray(arr).dtype}, expected "
                            f"{'integers' if name in integers else 'floating point numbers'}: {hint}")
    for name, shape in shapes.items():
        if name in data and tuple(np.shape(data[name])) != tuple(shape):
            raise DataError(f"{path}: dataset {name} has shape {tuple(np.shape(data[name]))}, the config "
                            f"needs {tuple(shape)}: {hint}")
    for name, arr in data.items():
        if np.asarray(arr).dtype.kind in "fc":
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise DataError(f"{path}: dataset {name} holds {bad} non-finite value(s) (NaN/inf), "
                                f"the file is corrupt: {hint}")


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
