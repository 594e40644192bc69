"""Shared helpers for the test suite: where config.yaml is, and temporary configs built from it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import enkf.config
import rl.config
from enkf.config import deep_merge

# The full loader moved to rl.config; tests/test_faults.py (another owner's file) still imports it
# from enkf.config. Remove these two lines when it imports rl.config.load_config.
enkf.config.load_config = rl.config.load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config.yaml"


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


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs) for every test that runs trials; yields its address, which
    a driver in a subprocess can attach to (--address)."""
    import ray
    from rl.studies.sweep import connect
    connect(None, cpus_per_trial=1, num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
