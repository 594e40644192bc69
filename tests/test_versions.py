"""Reproducible installs: requirements.lock pins every dependency exactly, the environment the tests
run in has exactly those versions installed, and installed_versions() reports what is installed
(written into every run folder as versions.json)."""
from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version

import numpy
import torch

from enkf.io import KEY_PACKAGES, installed_versions

from conftest import ROOT


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9.+!\-]*)", line)
        assert m, f"requirements.lock: not an exact pin: {line!r}"
        assert canonical(m[1]) not in pins, f"requirements.lock: {m[1]} twice"
        pins[canonical(m[1])] = m[2]
    return pins


def test_lock_pins_every_dependency_of_pyproject_exactly():
    """Every runtime and test dependency of pyproject.toml (and their extras' packages we rely on)
    has one exact pin; torch is the makefile's 2.13.0 and ray the studies' 2.60.0."""
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["test"]
    for dep in deps:
        name = canonical(re.match(r"[A-Za-z0-9_.\-]+", dep)[0])
        assert name in pins, f"{name} (pyproject.toml) is not in requirements.lock"
    assert pins["torch"] == "2.13.0" and pins["ray"] == "2.60.0"
    for tune_dep in ("pandas", "pyarrow", "fsspec", "tensorboardx", "requests"):  # ray[tune]
        assert tune_dep in pins, tune_dep


def installed(name: str) -> str | None:
    """The installed version of a distribution without its local label (torch 2.13.0+cpu -> 2.13.0)."""
    try:
        return version(name).split("+")[0]
    except PackageNotFoundError:
        return None


def test_the_installed_packages_are_the_locked_versions():
    """What `make setup` installs is what the tests run against: every pin of requirements.lock
    is installed at exactly that version."""
    wrong = {name: (pin, installed(name)) for name, pin in locked().items() if installed(name) != pin}
    assert not wrong, f"installed versions differ from requirements.lock (pin, installed): {wrong}"


def test_installed_versions_reports_the_key_packages():
    """versions.json of a run: python's version, and every key package at its locked version
    (enkfrl itself is the project, not a pin: pyproject's version)."""
    v = installed_versions()
    assert set(v) == {"python", *KEY_PACKAGES}
    assert v["python"] == sys.version.split()[0]
    assert v["numpy"] == numpy.__version__ and v["torch"] == torch.__version__
    pins = locked()
    for name in KEY_PACKAGES:
        if name == "enkfrl":
            continue
        assert v[name] is not None and v[name].split("+")[0] == pins[canonical(name)], name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert v["enkfrl"] == project["version"]  # `make setup` installs the project itself (editable)
    assert installed_versions(("no-such-package-enkfrl",))["no-such-package-enkfrl"] is None
