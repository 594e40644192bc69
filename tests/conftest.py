"""Shared helpers for the test suite: where config.yaml is, temporary configs built from it, the
smoke data made once per session (read-only: a test that writes copies it first), and a session
that never reaches a Ray cluster from the environment."""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml

import enkf.config
import rl.config
from enkf.config import deep_merge
from rl.studies.sweep import THREAD_VARS

# The full loader moved to rl.config; tests/test_faults.py (another owner's file) still imports it
# from enkf.config. Remove these two lines when it imports rl.config.load_config.
enkf.config.load_config = rl.config.load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.yaml"


def pytest_configure(config):
    """RAY_ADDRESS from the caller's environment would send every Ray test (and the subprocess
    drivers they start) to that cluster: the test session runs on its own local Ray only. Ray
    Tune's run installs its own SIGINT handler in the process that runs it and leaves it there:
    a study run in a test would change how every later test's commands see Ctrl-C."""
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


@pytest.fixture(autouse=True)
def leaves_the_session_as_it_found_it():
    """Every test leaves the working directory, the thread settings of the environment and the
    handling of SIGINT as it found them (monkeypatch restores what it changed): what one test
    changes would otherwise reach the tests after it, in one order and not in another."""
    before = os.getcwd(), {v: os.environ.get(v) for v in THREAD_VARS}, signal.getsignal(signal.SIGINT)
    yield
    after = os.getcwd(), {v: os.environ.get(v) for v in THREAD_VARS}, signal.getsignal(signal.SIGINT)
    assert after == before, f"the test changed the session's state (cwd, thread variables, SIGINT): {before} -> {after}"


def read_config_yaml() -> dict:
    """config.yaml as a plain dict (shared + experiments)."""
    return yaml.safe_load(CONFIG.read_text())


def write_config(path: Path, experiment: str | None = None, overrides: dict | None = None,
                 shared_overrides: dict | None = None) -> Path:
    """Write config.yaml to ``path`` with ``experiments[experiment]`` deep-merged with
    ``overrides`` (and ``shared`` with ``shared_overrides``)."""
    raw = read_config_yaml()
    if shared_overrides:
        raw["shared"] = deep_merge(raw["shared"], shared_overrides)
    if overrides:
        raw["experiments"][experiment] = deep_merge(raw["experiments"][experiment] or {}, overrides)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty temporary folder holding a copy of config.yaml (cli/ writes data/, logs/)."""
    shutil.copy(CONFIG, tmp_path / "config.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- the smoke data, made once per session ---------------------------------------------------------
SMOKE_DATA_ENV = "ENKFRL_TEST_SMOKE_DATA"
"""A folder of smoke data made earlier (with `complete` in it) that a session reads instead of making
its own: a run of many sessions on unchanged enkf/ code (the mutation check) makes it once."""


def build_smoke_data(tmp_path_factory) -> Path:
    """A folder with config.yaml and the smoke data of both splits (data/smoke/spinup.h5,
    paths.h5, test_spinup.h5, test_paths.h5), made once per session with `enkfrl generate` and
    `enkfrl precompute`. Read-only for every test: one that writes copies it (copy_smoke_data)."""
    from click.testing import CliRunner
    from cli.main import main
    given = os.environ.get(SMOKE_DATA_ENV)
    if given:  # made earlier for this very config (scripts/mutation_check.py makes it once for all its runs)
        d = Path(given)
        assert (d / "complete").exists() and (d / "config.yaml").read_text() == CONFIG.read_text(), (
            f"{SMOKE_DATA_ENV}={given} is not smoke data made with this config.yaml")
        return d
    d = tmp_path_factory.getbasetemp() / "smoke_data"
    if (d / "complete").exists():
        return d
    if d.exists():  # an earlier attempt of this session failed part way
        shutil.rmtree(d)
    d.mkdir()
    shutil.copy(CONFIG, d / "config.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)  # cli/ reads and writes data/ relative to the working directory
        runner = CliRunner()
        for split in ("train", "test"):
            for command in ("generate", "precompute"):
                result = runner.invoke(main, [command, "--exp", "smoke", "--split", split])
                assert result.exit_code == 0, (command, split, result.output, result.exception)
    (d / "complete").touch()
    return d


def copy_smoke_data(tmp_path_factory, dest: Path) -> Path:
    """dest (created) with config.yaml and data/smoke/ of the session's smoke data: a folder a
    test may write into."""
    src = build_smoke_data(tmp_path_factory)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.yaml", dest / "config.yaml")
    shutil.copytree(src / "data", dest / "data")
    return dest


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """The session's smoke data folder (build_smoke_data): read it, never write into it."""
    return build_smoke_data(tmp_path_factory)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) for every test that runs trials; yields its address, which
    a driver in a subprocess can attach to (--address)."""
    import ray
    from rl.studies.sweep import connect
    assert "RAY_ADDRESS" not in os.environ  # pytest_configure: never a cluster from the environment
    connect(None, cpus_per_trial=1, num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
