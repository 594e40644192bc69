"""Studies and multi-seed training on Ray Tune: the sweep: block, a study killed and resumed with
nothing finished lost, train-many. All Ray tests share one local instance (conftest.ray_local)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from conftest import ROOT, read_config_yaml
from enkf.config import ConfigError
from rl.config import load_sweep
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


def _records(folder):
    return {p.name: p for p in sorted((folder / "results/ablations/tiny").glob("*.json"))}


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
    before = {name: (p.stat().st_mtime_ns, p.read_text()) for name, p in _records(run).items()}
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
    assert [d.name.split("-")[0] for d in dirs] == ["seed0", "seed1"]
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
