"""The `enkfrl` command line end to end (generate -> precompute) on small configs, run in a
temporary folder: file contents, determinism, error messages, atomic writes."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from enkf.datafiles import data_hash
from rl.config import load_config
from enkf.io import DataError, atomic_h5
from enkf.models import INTEGRATOR_IDS, MODEL_IDS, params_of, step_columns
from enkf.precompute import read_paths
from enkf.spinup import read_spinup
from enkf.system import rmse

from conftest import ROOT, write_config

PATHS_DATASETS = {"starts", "truth", "obs", "forecast_mean", "forecast_spread", "analysis_mean",
                  "analysis_spread", "initial_ensemble", "forecast_rmse", "analysis_rmse",
                  "obs_rmse"}
SPINUP_DATASETS = {"x0", "starts", "start_steps", "thinned", "thinned_steps", "clim_min",
                   "clim_max", "clim_mean", "clim_std"}


def cli(*args):
    """Invoke `enkfrl *args` in-process; returns click's Result."""
    return CliRunner().invoke(main, list(args))


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def generate_and_precompute(exp="smoke", config="config.yaml"):
    g = ok(cli("generate", "--exp", exp, "--config", config))
    p = ok(cli("precompute", "--exp", exp, "--config", config))
    return g, p


def read_h5(path):
    """All datasets and attributes of a file, root attributes under key '/'."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = dict(f.attrs)
        for k in f:
            out[k] = (f[k][()], dict(f[k].attrs))
    return out


def assert_one_line_error(result, code=None):
    """A handled error: SystemExit with a nonzero code, exactly one line, no traceback."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def no_temp_files(root):
    return [p for p in root.rglob("*") if ".tmp-" in p.name] == []


# ---- smoke run -----------------------------------------------------------------------------------
def test_smoke_generate_precompute_contents(in_tmp):
    """generate + precompute on `smoke`: documented datasets with meaning/units; starts are the
    spin-up states at distinct steps in the sampled tail; truth is the start advanced; analysis
    RMSE < forecast RMSE after burn-in; printed summary equals the file's."""
    g, p = generate_and_precompute()
    cfg = load_config("config.yaml", "smoke")
    assert "spin-up smoke: 20000 steps" in g.output and "6 starts from steps" in g.output
    assert "6 paths x 60 cycles" in p.output
    assert "time-mean RMSE vs truth after 5 cycles" in p.output
    assert no_temp_files(in_tmp)

    sp, pa = read_h5(in_tmp / "data/smoke/spinup.h5"), read_h5(in_tmp / "data/smoke/paths.h5")
    assert set(sp) - {"/"} == SPINUP_DATASETS and set(pa) - {"/"} == PATHS_DATASETS
    for name, (_, attrs) in list(sp.items())[1:] + list(pa.items())[1:]:
        assert attrs.get("meaning") and attrs.get("units"), name
    assert pa["/"]["data_hash"] == data_hash(cfg) and pa["/"]["experiment"] == "smoke"
    assert pa["/"]["code_version"] and sp["/"]["code_version"]

    P, K, n, N = 6, 60, 8, 10
    truth, obs = pa["truth"][0], pa["obs"][0]
    assert truth.shape == (P, K, n) and obs.shape == (P, K, n)
    assert pa["initial_ensemble"][0].shape == (P, N, n)
    for k in ("forecast_mean", "forecast_spread", "analysis_mean", "analysis_spread"):
        assert pa[k][0].shape == (P, K, n) and np.all(np.isfinite(pa[k][0])), k

    # start states: distinct steps in the last sample_fraction, equal to the trajectory there
    steps, frac = cfg.spinup.steps, cfg.spinup.sample_fraction
    start_steps, starts = sp["start_steps"][0], sp["starts"][0]
    assert len(set(start_steps.tolist())) == P
    assert np.all(start_steps > steps * (1 - frac)) and np.all(start_steps <= steps)
    assert np.array_equal(pa["starts"][0], starts)
    m = cfg.model
    ids = (MODEL_IDS[m.name], INTEGRATOR_IDS[m.integrator], params_of(m), m.dt)
    X = sp["x0"][0][:, None].copy()
    done = 0
    for j in np.argsort(start_steps):
        step_columns(X, *ids, int(start_steps[j]) - done)
        done = int(start_steps[j])
        assert np.array_equal(X[:, 0], starts[j])
    step_columns(X, *ids, steps - done)
    assert np.array_equal(X[:, 0], sp["thinned"][0][-1])
    assert sp["thinned_steps"][0][-1] == steps
    tail = sp["thinned"][0][sp["thinned_steps"][0] >= sp["/"]["sample_first_step"]]
    assert np.all(sp["clim_min"][0] <= tail.min(axis=0)) and np.all(sp["clim_max"][0] >= tail.max(axis=0))
    np.testing.assert_allclose(sp["clim_mean"][0], tail.mean(axis=0), atol=0.05)

    # truth of cycle 0 = start advanced by one cycle; obs noise has variance r
    X = np.ascontiguousarray(starts.T)
    step_columns(X, *ids, cfg.steps_per_cycle)
    assert np.array_equal(truth[:, 0], X.T)
    noise = obs - truth[..., cfg.obs_index]
    assert abs(noise.std() - np.sqrt(cfg.obs.error_var)) < 0.05 * np.sqrt(cfg.obs.error_var)
    init_noise = pa["initial_ensemble"][0] - starts[:, None, :]
    assert abs(init_noise.std() - cfg.filter.init_spread) < 0.1

    # RMSE datasets are what they say, and the filter helps after burn-in
    np.testing.assert_allclose(pa["forecast_rmse"][0], rmse(pa["forecast_mean"][0], truth))
    np.testing.assert_allclose(pa["analysis_rmse"][0], rmse(pa["analysis_mean"][0], truth))
    b = cfg.paths.burn_in
    fc = pa["forecast_rmse"][0][:, b:].mean(axis=1)
    an = pa["analysis_rmse"][0][:, b:].mean(axis=1)
    ob = pa["obs_rmse"][0][:, b:].mean(axis=1)
    assert an.mean() < fc.mean() and an.mean() < ob.mean()
    printed = {m_.group(1): float(m_.group(2)) for m_ in
               re.finditer(r"^\s+(forecast|analysis|observation)\s+([0-9.]+) ± ",
                           p.output.split("(test split)")[0], re.M)}  # the training split's summary
    assert printed == pytest.approx({"forecast": fc.mean(), "analysis": an.mean(),
                                     "observation": ob.mean()}, abs=6e-5)

    # the readers accept what the writers wrote
    assert np.array_equal(read_spinup(cfg, "data/smoke/spinup.h5")["starts"], starts)
    assert np.array_equal(read_paths(cfg, "data/smoke/paths.h5")["truth"], truth)


def test_starts_cover_exactly_the_sampled_tail():
    """spinup.steps = 40, sample_fraction 0.5, n_paths = 20 = the whole pool: the start steps
    are exactly 21..40 (the last half), the starts are the trajectory there, and the
    climatology is numpy's min/max/mean/std (ddof 0) over those same 20 states."""
    import dataclasses

    from enkf.spinup import run_spinup

    cfg = load_config(ROOT / "config.yaml", "smoke")
    cfg = dataclasses.replace(
        cfg, spinup=dataclasses.replace(cfg.spinup, steps=40, thin=1, init_scale=1.0),
        paths=dataclasses.replace(cfg.paths, n_paths=20, train_paths=[1, 19]))
    res = run_spinup(cfg)
    assert sorted(res["start_steps"].tolist()) == list(range(21, 41))
    assert res["sample_first_step"] == 21
    assert np.array_equal(res["thinned_steps"], np.arange(1, 41))
    assert np.array_equal(res["starts"], res["thinned"][res["start_steps"] - 1])
    tail = res["thinned"][20:]
    assert np.array_equal(res["clim_min"], tail.min(axis=0))
    assert np.array_equal(res["clim_max"], tail.max(axis=0))
    np.testing.assert_allclose(res["clim_mean"], tail.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res["clim_std"], tail.std(axis=0), rtol=1e-9, atol=1e-12)
    # the order of start_steps is a random permutation, not sorted
    assert res["start_steps"].tolist() != sorted(res["start_steps"].tolist())


def test_generate_and_precompute_are_deterministic(in_tmp):
    """Two runs with one config give byte-identical spinup.h5 and paths.h5; seed 1 gives
    different starts and different paths."""
    files = [in_tmp / "data/smoke/spinup.h5", in_tmp / "data/smoke/paths.h5"]
    generate_and_precompute()
    first = [f.read_bytes() for f in files]
    generate_and_precompute()
    assert [f.read_bytes() for f in files] == first
    write_config(in_tmp / "seed1.yaml", shared_overrides={"seed": 1})
    generate_and_precompute(config="seed1.yaml")
    assert all(f.read_bytes() != b for f, b in zip(files, first))
    # the data differ, not only the seed attribute
    (in_tmp / "old_spinup.h5").write_bytes(first[0])
    (in_tmp / "old_paths.h5").write_bytes(first[1])
    old_sp, new_sp = read_h5(in_tmp / "old_spinup.h5"), read_h5(files[0])
    old_pa, new_pa = read_h5(in_tmp / "old_paths.h5"), read_h5(files[1])
    assert new_sp["/"]["seed"] == 1 and old_sp["/"]["seed"] == 0
    assert not np.array_equal(old_sp["start_steps"][0], new_sp["start_steps"][0])
    assert np.abs(old_sp["starts"][0] - new_sp["starts"][0]).max() > 1.0
    assert np.abs(old_pa["truth"][0] - new_pa["truth"][0]).max() > 1.0


# ---- the three L96 setups, reduced -------------------------------------------------------------
@pytest.mark.parametrize("experiment", ["L96_1", "L96_2", "L96_3"])
def test_l96_experiments_filter_reduces_error_reduced_run(in_tmp, experiment):
    """The experiment's physics (n, F, dt, t_obs, R, EnKF N=20, inflation 5.0 on the forecast)
    with a shorter spin-up (1e5 steps) and 4 paths x 150 cycles: the analysis RMSE after
    burn-in, averaged over paths, is below the forecast RMSE and the observation RMSE, and near
    the old code's 0.22-0.24 (measured here: 0.228, 0.224, 0.220). The full-size runs are `enkfrl precompute --exp E`, reported in its output and the readme."""
    write_config(in_tmp / "small.yaml", experiment, {
        "spinup": {"steps": 100000},
        "paths": {"n_paths": 4, "n_cycles": 150, "burn_in": 20, "train_paths": [1, 3],
                  "workers": 2}})
    generate_and_precompute(experiment, "small.yaml")
    with h5py.File(in_tmp / f"data/{experiment}/paths.h5") as f:
        fc = f["forecast_rmse"][:, 20:].mean()
        an = f["analysis_rmse"][:, 20:].mean()
        ob = f["obs_rmse"][:, 20:].mean()
        assert f["truth"].shape == (4, 150, 17 if experiment == "L96_2" else 20)
    assert an < fc and an < ob, (an, fc, ob)
    assert 0.15 < an < 0.30, an


# ---- bad input -------------------------------------------------------------------------------------
BAD_CONFIGS = {
    "unknown_key": {"filter": {"n_enss": 20}},
    "wrong_type": {"filter": {"n_ens": "twenty"}},
    "t_obs_not_multiple_of_dt": {"obs": {"t_obs": 0.205}},
    "n_ens_below_2": {"filter": {"n_ens": 1}},
    "error_var_zero": {"obs": {"error_var": 0.0}},
    "error_var_negative": {"obs": {"error_var": -0.1}},
    "more_paths_than_spinup_supplies": {"paths": {"n_paths": 10001, "train_paths": [1, 5]}},
    "eval_path_in_train_range": {"paths": {"eval_path": 2}},
}


@pytest.mark.parametrize("command", ["generate", "precompute", "config"])
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line(in_tmp, case, command):
    """Each invalid config stops every command with exit code 2 and one line naming the key."""
    write_config(in_tmp / "bad.yaml", "smoke", BAD_CONFIGS[case])
    line = assert_one_line_error(cli(command, "--exp", "smoke", "--config", "bad.yaml"), code=2)
    assert line.startswith("config error: ")
    key = next(iter(BAD_CONFIGS[case]))
    assert f"{key}." in line, line
    assert not (in_tmp / "data").exists()


def test_missing_experiment_and_missing_config_file_exit_2(in_tmp):
    """--exp with an unknown name, or a --config that does not exist: exit 2, one line."""
    line = assert_one_line_error(cli("generate", "--exp", "nope"), code=2)
    assert "nope" in line and "smoke" in line
    line = assert_one_line_error(cli("generate", "--exp", "smoke", "--config", "none.yaml"), code=2)
    assert "none.yaml" in line


def test_precompute_before_generate_says_what_to_run(in_tmp):
    """precompute without spinup.h5: one line telling to run `enkfrl generate --exp smoke`."""
    line = assert_one_line_error(cli("precompute", "--exp", "smoke"))
    assert "enkfrl generate --exp smoke" in line
    assert not (in_tmp / "data/smoke/paths.h5").exists()


def test_stale_spinup_is_refused(in_tmp):
    """spinup.h5 made with another seed than the config now has: precompute refuses, one line."""
    write_config(in_tmp / "seed1.yaml", shared_overrides={"seed": 1})
    ok(cli("generate", "--exp", "smoke", "--config", "seed1.yaml"))
    line = assert_one_line_error(cli("precompute", "--exp", "smoke"))
    assert "enkfrl generate --exp smoke" in line


def test_exploding_spinup_is_a_data_error(in_tmp):
    """Euler with dt = 0.2 on L96 blows up: generate exits 1, its last line names model.dt,
    no traceback, no spinup.h5 written."""
    write_config(in_tmp / "nf.yaml", "smoke", {"model": {"dt": 0.2, "integrator": "euler"}})
    result = cli("generate", "--exp", "smoke", "--config", "nf.yaml")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "model.dt" in last and "non-finite" in last
    assert not (in_tmp / "data/smoke/spinup.h5").exists() and no_temp_files(in_tmp)


def truncate_half(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def test_truncated_spinup_file_gives_one_line(in_tmp):
    """A spinup.h5 cut to half its size: precompute exits 1 with one line (no traceback)."""
    ok(cli("generate", "--exp", "smoke"))
    truncate_half(in_tmp / "data/smoke/spinup.h5")
    line = assert_one_line_error(cli("precompute", "--exp", "smoke"), code=1)
    assert "spinup.h5" in line and "truncated" in line and "enkfrl generate --exp smoke" in line


def test_truncated_paths_file_raises_data_error(in_tmp):
    """A paths.h5 cut to half its size: read_paths raises DataError with one line saying to
    rerun precompute."""
    generate_and_precompute()
    truncate_half(in_tmp / "data/smoke/paths.h5")
    cfg = load_config("config.yaml", "smoke")
    with pytest.raises(DataError) as e:
        read_paths(cfg, "data/smoke/paths.h5")
    msg = str(e.value)
    assert "\n" not in msg and "truncated" in msg and "enkfrl precompute --exp smoke" in msg


def test_truncated_paths_file_via_plot_command_gives_one_line(in_tmp):
    """`enkfrl plot` (the command that reads paths.h5) on a truncated paths.h5: one line."""
    generate_and_precompute()
    truncate_half(in_tmp / "data/smoke/paths.h5")
    line = assert_one_line_error(cli("plot", "--exp", "smoke", "--stage", "data"), code=1)
    assert "paths.h5" in line and "enkfrl precompute --exp smoke" in line


def run_subprocess(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_debug_flag_shows_traceback(in_tmp):
    """Run as a real process: without --debug a truncated spinup.h5 gives one line on stderr;
    with `enkfrl --debug` the same error shows its traceback."""
    ok(cli("generate", "--exp", "smoke"))
    truncate_half(in_tmp / "data/smoke/spinup.h5")
    plain = run_subprocess("precompute", "--exp", "smoke", cwd=in_tmp)
    assert plain.returncode == 1
    assert len(plain.stderr.strip().splitlines()) == 1 and "Traceback" not in plain.stderr
    debug = run_subprocess("--debug", "precompute", "--exp", "smoke", cwd=in_tmp)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "DataError" in debug.stderr
    debug = run_subprocess("--debug", "generate", "--exp", "nope", cwd=in_tmp)
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_debug_flag_in_process_reraises(in_tmp):
    """`enkfrl --debug ...` called in-process (CliRunner) should re-raise the ConfigError."""
    from enkf.config import ConfigError

    result = cli("--debug", "generate", "--exp", "nope")
    assert isinstance(result.exception, ConfigError), repr(result.exception)


# ---- atomic writes ------------------------------------------------------------------------------
def test_atomic_h5_failure_leaves_no_file(tmp_path):
    """A block that raises inside atomic_h5: no target, no temp file; an existing target keeps
    its old bytes."""
    target = tmp_path / "sub" / "x.h5"
    with pytest.raises(RuntimeError):
        with atomic_h5(target) as f:
            f.create_dataset("a", data=np.arange(10))
            raise RuntimeError("boom")
    assert not target.exists() and no_temp_files(tmp_path)
    with atomic_h5(target) as f:
        f.create_dataset("a", data=np.arange(3))
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_h5(target) as f:
            f.create_dataset("a", data=np.arange(10))
            raise RuntimeError("boom")
    assert target.read_bytes() == before and no_temp_files(tmp_path)
    with h5py.File(target) as f:
        assert np.array_equal(f["a"][()], np.arange(3))


@pytest.mark.parametrize("module, command", [("enkf.spinup", "generate"),
                                             ("enkf.precompute", "precompute")])
def test_write_failing_midway_leaves_no_file(in_tmp, monkeypatch, module, command):
    """If writing fails after a few datasets (put raises on its 4th call), the command fails,
    the target file does not exist and no temp file remains."""
    import importlib

    if command == "precompute":
        ok(cli("generate", "--exp", "smoke"))
    mod = importlib.import_module(module)
    real_put, calls = mod.put, []

    def failing_put(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise OSError("disk full (simulated)")
        return real_put(*args, **kwargs)

    monkeypatch.setattr(mod, "put", failing_put)
    result = cli(command, "--exp", "smoke")
    assert result.exit_code != 0 and len(calls) == 4
    target = in_tmp / "data/smoke" / ("spinup.h5" if command == "generate" else "paths.h5")
    assert not target.exists()
    assert no_temp_files(in_tmp)
