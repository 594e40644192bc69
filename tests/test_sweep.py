"""Studies and multi-seed training on Ray Tune: the sweep: block, a study killed and resumed with
nothing finished lost, train-many. All Ray tests share one local instance (conftest.ray_local)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from conftest import ROOT, read_config_yaml
from enkf.config import ConfigError
from rl.config import load_config, load_sweep
from enkf.io import DataError
from rl.studies.sweep import run_study, train_many

# 8 trials, each computing its own data (inflation variant x seed), none the experiment's own
STUDY = {"question": "q", "measure": "enkf_skill", "experiments": ["smoke"], "seeds": [0, 1],
         "overrides": {}, "variants": {f"infl_{x}": {"filter": {"inflation": x}} for x in (1.1, 1.5, 2.0, 3.0)}}


def _write(folder, study=STUDY, sweep=None):
    raw = read_config_yaml()
    raw["ablations"] = {"tiny": study}
    raw["sweep"] = dict(raw["sweep"], **(sweep or {}))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder / "config.yaml"


@pytest.mark.parametrize("key,value,message", [
    ("cpus_per_trial", 0, "sweep.cpus_per_trial: must be >= 1"),
    ("gpus_per_trial", -0.5, "sweep.gpus_per_trial: must be a fraction"),
    ("gpus_per_trial", 1.5, "sweep.gpus_per_trial: must be a fraction"),
    ("max_concurrent", -1, "sweep.max_concurrent: must be >= 0"),
    ("records_dir", 3, "sweep.records_dir: expected a string"),
    ("threads", 2, "sweep.threads: unknown key"),
])
def test_the_sweep_block_is_validated(tmp_path, key, value, message):
    path = _write(tmp_path, sweep={key: value})
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)
    raw = read_config_yaml()
    del raw["sweep"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="top level"):
        load_sweep(tmp_path / "c.yaml")


def test_train_seed_must_be_one_of_train_seeds(in_tmp):
    result = CliRunner().invoke(main, ["train", "--exp", "smoke", "--seed", "7"])
    assert result.exit_code == 2 and "--seed 7: not one of train.seeds [0, 1, 2]" in result.output


def test_ablate_refuses_a_training_study_with_one_line(in_tmp):
    """`measure: train` studies are full training runs: `ablate` says so on one line, pointing to
    `enkfrl train --study`, before it starts Ray or writes anything."""
    study = next(k for k, v in read_config_yaml()["ablations"].items() if v["measure"] == "train")
    result = CliRunner().invoke(main, ["ablate", "--question", study])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"enkfrl train --exp E --study {study}" in lines[0]
    assert not (in_tmp / "results").exists() and not (in_tmp / "logs").exists()


def _records(folder):
    return {p.name: p for p in sorted((folder / "results/ablations/tiny").glob("*.json"))}


def _settled(folder, quiet_s: float = 3.0, timeout_s: float = 60.0):
    """The records once none has appeared for quiet_s seconds. A trial in flight when its driver is
    killed can still write its record: Ray stops a dead driver's workers only once it notices."""
    seen, since = set(_records(folder)), time.monotonic()
    deadline = since + timeout_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
        now = set(_records(folder))
        if now != seen:
            seen, since = now, time.monotonic()
    return _records(folder)


def _driver(folder, address):
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_ADDRESS="")
    return subprocess.Popen([sys.executable, "-m", "cli.main", "ablate", "--question", "tiny",
                             "--address", address, "--max-concurrent", "2"],
                            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_a_killed_study_resumes_without_rerunning_finished_trials(tmp_path, ray_local, monkeypatch):
    # the uninterrupted reference, driven from this process
    ref = tmp_path / "ref"
    _write(ref)
    monkeypatch.chdir(ref)
    run_study(ref / "config.yaml", "tiny", ref / "data", command="enkfrl ablate --question tiny",
              max_concurrent=2, echo=lambda *a: None)
    reference = json.loads((ref / "results/ablations/tiny.json").read_text())
    assert len(reference["records"]) == 8

    # the same study, its driver SIGKILLed once the first record exists
    run = tmp_path / "run"
    _write(run)
    driver = _driver(run, ray_local)
    deadline = time.monotonic() + 120
    while not _records(run) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(driver.pid, signal.SIGKILL)
    output = driver.communicate()[0]
    before = {name: (p.stat().st_mtime_ns, p.read_text()) for name, p in _settled(run).items()}
    assert 1 <= len(before) < 8, output  # killed part way: some finished, some not
    assert not (run / "results/ablations/tiny.json").exists()

    rerun = _driver(run, ray_local)
    output = rerun.communicate(timeout=180)[0]
    assert rerun.returncode == 0, output
    assert f"{len(before)} already recorded, {8 - len(before)} to run" in output
    after = _records(run)
    assert len(after) == 8
    for name, (mtime, text) in before.items():  # finished trials untouched and not started again
        assert after[name].stat().st_mtime_ns == mtime and after[name].read_text() == text
        trial = name.removesuffix(".json")
        assert len((run / "logs/sweep/tiny" / trial / "starts.log").read_text().splitlines()) == 1
    table = json.loads((run / "results/ablations/tiny.json").read_text())
    assert table["summary"] == reference["summary"]
    assert [r["result"] for r in table["records"]] == [r["result"] for r in reference["records"]]
    # every trial ran with one thread: sweep.cpus_per_trial in config.yaml
    assert all(r["trial"]["torch_threads"] == 1 and r["trial"]["cpus"] == 1 for r in table["records"])

    # a third run has nothing left to do and does not need Ray
    third = CliRunner().invoke(main, ["ablate", "--question", "tiny", "--config", str(run / "config.yaml"),
                                      "--out-dir", str(run / "results/ablations")])
    assert third.exit_code == 0 and "8 already recorded, 0 to run" in third.output


def test_more_gpus_per_trial_than_the_cluster_has_is_one_line(tmp_path, ray_local):
    path = _write(tmp_path, sweep={"gpus_per_trial": 0.5})
    with pytest.raises(DataError, match="sweep.gpus_per_trial is 0.5 but the Ray cluster has 0 GPUs"):
        run_study(path, "tiny", tmp_path / "data", command="c", records_dir=tmp_path / "rec", echo=lambda *a: None)


def test_train_many_trains_and_evaluates_every_seed_then_skips_them(in_tmp, ray_local):
    raw = read_config_yaml()
    raw["experiments"]["smoke"]["train"] = dict(raw["experiments"]["smoke"]["train"], seeds=[0, 1],
                                                total_steps=128, checkpoint_freq=128, eval_freq=128)
    (in_tmp / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    lines = []
    dirs = train_many(in_tmp / "config.yaml", ["smoke"], in_tmp / "data", in_tmp / "logs", command="c",
                      echo=lines.append)
    from rl.training.runs import read_run_info, select_runs
    assert [d.name.split("-")[0] for d in dirs] == ["s0", "s1"]  # the one naming rule of run folders
    assert [read_run_info(d)["made_by"] for d in dirs] == ["train-many", "train-many"]
    # fit records select runs by run.json: train-many's runs are found like any other
    assert [d.resolve() for d, _ in select_runs(in_tmp / "logs", "smoke", final=True, evaluated=True,
                                      newest_per_seed=True)] == dirs
    assert (in_tmp / "data/smoke/paths.h5").exists()  # the experiment's data, generated once
    for seed, d in zip([0, 1], dirs):
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        assert cfg["train"]["seed"] == seed and cfg["seed"] == 0  # data seed unchanged
        metrics = json.loads((d / "metrics.json").read_text())
        assert {"rl", "supervised", "copy_obs"} <= set(metrics[str(cfg["paths"]["eval_path"])])
    assert any("smoke__seed1" in line for line in lines)
    again = []
    train_many(in_tmp / "config.yaml", ["smoke"], in_tmp / "data", in_tmp / "logs", command="c", echo=again.append)
    assert "2 finished, 0 to run" in again[0]


SHARED = {"question": "q", "measure": "enkf_skill", "experiments": ["smoke"], "seeds": [0],
          "overrides": {"paths": {"n_paths": 4, "train_paths": [1, 3]}},
          "variants": {"g05": {"ppo": {"gamma": 0.5}}, "g09": {"ppo": {"gamma": 0.9}},
                       "infl2": {"filter": {"inflation": 2.0}}}}


def _start_numba_pool() -> None:
    """Run a parallel kernel, so numba's pool has the session's size before limit_threads: a pool
    started inside the test at 1 thread would refuse the session's NUMBA_NUM_THREADS afterwards."""
    import numba

    @numba.njit(parallel=True)
    def total(x):
        s = 0.0
        for i in numba.prange(x.shape[0]):
            s += x[i]
        return s
    total(np.ones(4))


@pytest.fixture
def trial_threads():
    """generate_data is a Ray task: it sets the thread counts of the process it runs in
    (limit_threads), here the test session's. They are put back afterwards."""
    import numba
    import torch as th
    from rl.studies.sweep import THREAD_VARS
    env = {v: os.environ.get(v) for v in THREAD_VARS}
    _start_numba_pool()
    torch_threads, numba_threads = th.get_num_threads(), numba.get_num_threads()
    yield
    for v, value in env.items():
        if value is None:
            os.environ.pop(v, None)
        else:
            os.environ[v] = value
    th.set_num_threads(torch_threads)
    numba.set_num_threads(numba_threads)


def test_variants_that_share_their_data_get_one_data_set_made_before_the_trials(tmp_path, trial_threads):
    """g05 and g09 differ in an RL setting only: one data set under data/smoke/<data hash>/, made
    once (generate_data) and then read by both trials; infl2's data are its trial's own (computed
    in memory); the experiment's own data go to data/smoke/ even for a single trial."""
    from rl.config import load_ablation
    from enkf import datafiles
    from rl.studies.ablate import located_data
    from rl.studies.sweep import generate_data, shared_data
    path = _write(tmp_path, SHARED)
    _, runs = load_ablation(path, "tiny")
    by = {r.variant: r.cfg for r in runs}
    h = datafiles.data_hash
    assert h(by["g05"]) == h(by["g09"]) != h(by["infl2"])
    own = {"smoke": h(load_config(path, "smoke"))}
    root = tmp_path / "data"
    todo = shared_data([r.cfg for r in runs], own, root)
    assert [(h(cfg), folder) for cfg, folder in todo] == [(h(by["g05"]), root / "smoke" / h(by["g05"]))]
    cfg, folder = todo[0]
    generate_data(cfg, folder, 1)
    assert datafiles.is_current(by["g09"], folder) and not datafiles.is_current(by["infl2"], folder)
    assert shared_data([r.cfg for r in runs], own, root) == []  # made: nothing left to make
    data, _, source = located_data(by["g09"], root, 1)
    assert source == str(folder)
    _, fresh = datafiles.compute(by["g09"], 1)
    for key in ("truth", "obs", "analysis_mean", "initial_ensemble"):
        np.testing.assert_array_equal(data[key], fresh[key])
    assert located_data(by["infl2"], root, 1)[2] == "computed in memory"
    plain = dict(SHARED, overrides={}, variants={"g05": {"ppo": {"gamma": 0.5}}})
    _, runs = load_ablation(_write(tmp_path / "plain", plain), "tiny")
    assert [folder for _, folder in shared_data([r.cfg for r in runs], own, root)] == [root / "smoke"]


def test_failed_trials_are_one_error_naming_each_trial_and_its_log(tmp_path, ray_local, monkeypatch):
    """Every trial of the study fails (its records folder is a file): one DataError naming each
    trial, its last error line and its log; rerun once the cause is gone, the study finishes."""
    import re
    from pathlib import Path
    monkeypatch.chdir(tmp_path)  # sweep.trials_dir (logs/sweep) is relative to the working directory
    study = dict(SHARED, overrides={}, variants={"a": {}, "b": {"filter": {"inflation": 2.0}}})
    path = _write(tmp_path, study)
    records = tmp_path / "rec"
    records.mkdir()
    (records / "tiny").write_text("a file where the records folder goes")
    with pytest.raises(DataError) as err:
        run_study(path, "tiny", tmp_path / "data", command="c", records_dir=records, echo=lambda *a: None)
    message = str(err.value)
    assert message.startswith("2 of 2 trials failed (rerun the same command to run only the unfinished ones): ")
    parts = message.split(": ", 1)[1].split("; ")
    assert [p.split(":")[0] for p in parts] == ["smoke__a__seed0", "smoke__b__seed0"]
    assert all("File exists" in p or "Not a directory" in p for p in parts), message
    logs = re.findall(r"\(log: ([^)]+)\)", message)
    assert len(logs) == 2 and all(Path(log).is_dir() for log in logs)
    (records / "tiny").unlink()
    out = run_study(path, "tiny", tmp_path / "data", command="c", records_dir=records, echo=lambda *a: None)
    assert len(json.loads(out.read_text())["records"]) == 2


def test_limit_threads_in_a_process_whose_numba_pool_runs_keeps_numba_compiling(tmp_path):
    """numba fixes its pool size when its threads first run and refuses a different NUMBA_NUM_THREADS
    at its next compile: limit_threads(1) in a process whose pool of 2 runs (the test session's,
    where generate_data is called directly) leaves numba able to compile, and runs on 1 thread."""
    script = """
import numba
from rl.studies.sweep import limit_threads
from test_sweep import _start_numba_pool
_start_numba_pool()
limit_threads(1)
@numba.njit
def fresh(x):
    return x + 1
assert fresh(1) == 2 and numba.get_num_threads() == 1
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), NUMBA_NUM_THREADS="2",
               NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
