"""End to end through the CLI on the smoke experiment: train (window and recurrent agents),
TensorBoard tags, resume, evaluate, and the one-line error without data."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli.main import main
from rl.config import from_dict
from rl.envs.normalisation import Normaliser

from test_env import CONFIG, load_smoke, one_torch_thread, smoke_workdir  # noqa: F401

TAGS = [
    "train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/approx_kl",
    "train/clip_fraction", "train/explained_variance", "train/loss", "train/std",
    "rollout/ep_rew_mean", "rollout/ep_len_mean", "curriculum/n_paths",
    "curriculum/consecutive_completions", "episode/halt_rate", "eval/mean_reward",
    "eval/cycles_completed", "eval/rmse_vs_enkf", "eval/rmse_vs_truth", "eval/enkf_rmse_vs_truth",
    "policy/std_mean", "policy/std_min", "policy/std_max", "train/lstm_grad_norm", "time/fps",
    "time/env_step_share",
]
KINDS = ["window", "local", "pointwise", "recurrent"]
RUN_FILES = ["config.yaml", "best_model.zip", "final_model.zip", "train.log", "normaliser.npz"]


def invoke(args, ok=True):
    result = CliRunner().invoke(main, args)
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """cwd = the folder with the smoke data (cli/ reads data/<E>/ and writes logs/<E>/)."""
    d = smoke_workdir(tmp_path_factory)
    old = os.getcwd()
    os.chdir(d)
    yield d
    os.chdir(old)
    train_log = logging.getLogger("enkfrl.train")
    for h in list(train_log.handlers):  # rl/training/train.py leaves its file handler open
        h.close()
        train_log.removeHandler(h)


@pytest.fixture(scope="module")
def runs(workdir):
    """Finished smoke runs, one per agent kind: logs/smoke/{w,l,p,r} (window, local, pointwise, recurrent)."""
    for kind, run_id in [("window", "w"), ("local", "l"), ("pointwise", "p"), ("recurrent", "r")]:
        raw = yaml.safe_load((workdir / "config.yaml").read_text())
        smoke = raw["experiments"]["smoke"]
        smoke.setdefault("agent", {})["kind"] = kind
        smoke.setdefault("env", {})["window"] = 1 if kind == "recurrent" else 3
        (workdir / f"config_{kind}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        invoke(["train", "--exp", "smoke", "--config", f"config_{kind}.yaml", "--run-id", run_id])
    return {"window": workdir / "logs/smoke/w", "local": workdir / "logs/smoke/l",
            "pointwise": workdir / "logs/smoke/p", "recurrent": workdir / "logs/smoke/r"}


def scalars(run_dir: Path) -> dict[str, list]:
    """tag -> [(step, value)] over every events file of run_dir/tb."""
    ea = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


@pytest.mark.parametrize("kind", KINDS)
def test_train_writes_the_run_folder(runs, workdir, kind):
    run = runs[kind]
    for f in RUN_FILES:
        assert (run / f).is_file(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {
        "model_512.zip", "model_1024.zip", "curriculum_512.json", "curriculum_1024.json"}
    cfg = from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert cfg.experiment == "smoke" and cfg.agent.kind == kind
    assert cfg.env.window == (1 if kind == "recurrent" else 3)
    assert json.loads((run / "timing.json").read_text())["train_steps"] == cfg.train.total_steps == 1024
    _, _, norm = load_smoke(workdir)
    saved = Normaliser.load(run / "normaliser.npz")
    np.testing.assert_array_equal(saved.centre, norm.centre)
    np.testing.assert_array_equal(saved.half_range, norm.half_range)
    curriculum = json.loads((run / "checkpoints/curriculum_1024.json").read_text())
    assert curriculum["episodes"] >= 10 and 1 <= curriculum["n_active"] <= 5
    assert "done: 1024 path-steps" in (run / "train.log").read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_tensorboard_has_every_tag(runs, kind):
    s = scalars(runs[kind])
    cfg = from_dict(yaml.safe_load((runs[kind] / "config.yaml").read_text()))
    unit = cfg.model.n if kind == "pointwise" else 1  # SB3's x axis counts agent-steps
    missing = [t for t in TAGS if t not in s]
    assert not missing, f"{kind} run lacks TensorBoard tags {missing}"
    for t in TAGS:
        values = np.array([v for _, v in s[t]])
        assert np.all(np.isfinite(values)), t
        assert max(step for step, _ in s[t]) <= 1024 * unit
    assert max(step for step, _ in s["time/fps"]) == 1024 * unit
    assert [step for step, _ in s["eval/mean_reward"]] == [512 * unit, 1024 * unit]
    n_paths = [v for _, v in s["curriculum/n_paths"]]
    assert n_paths == sorted(n_paths) and 1 <= n_paths[0] and n_paths[-1] <= 5
    assert all(0 <= v <= 60 for _, v in s["eval/cycles_completed"])
    assert all(0 <= v <= 1 for _, v in s["episode/halt_rate"])
    assert all(-1 <= v <= 1 for _, v in s["eval/mean_reward"])
    exploration = json.loads((runs[kind] / "exploration.json").read_text())
    assert s["policy/std_mean"][0][1] == pytest.approx(np.exp(exploration["log_std_init"]), rel=0.05)
    assert all(lo * (1 - 1e-6) <= m <= hi * (1 + 1e-6) for (_, lo), (_, m), (_, hi) in
               zip(s["policy/std_min"], s["policy/std_mean"], s["policy/std_max"]))
    assert all(v > 0 for _, v in s["train/lstm_grad_norm"])
    assert all(0 <= v <= 1.5 for _, v in s["time/env_step_share"])


@pytest.fixture(scope="module")
def resumed(runs, workdir):
    """A copy of the window run (the other tests keep the 1024-step original) with
    train.total_steps raised to 2048 in its config.yaml, resumed through the CLI."""
    run = workdir / "logs/smoke/w_resumed"
    shutil.copytree(runs["window"], run)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["train"]["total_steps"] = 2048
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    invoke(["train", "--exp", "smoke", "--resume", str(run)])
    return run


def test_resume_continues(resumed):
    run = resumed
    before = json.loads((run / "checkpoints/curriculum_1024.json").read_text())

    assert json.loads((run / "timing.json").read_text())["train_steps"] == 2048
    steps = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("model_*.zip"))
    assert steps[-1] == 2048 and 1536 in steps
    after = json.loads((run / "checkpoints/curriculum_2048.json").read_text())
    assert after["episodes"] > before["episodes"] and after["n_active"] >= before["n_active"]
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 2
    s = scalars(run)
    fps_steps = [step for step, _ in s["time/fps"]]
    assert min(fps_steps) <= 1024 < max(fps_steps) == 2048
    assert [step for step, _ in s["eval/mean_reward"]] == [512, 1024, 1536, 2048]
    n_paths = dict(s["curriculum/n_paths"])
    assert n_paths[1152] >= n_paths[1024]  # the curriculum was restored, not restarted
    assert "resumed from model_1024.zip" in (run / "train.log").read_text()


def test_resume_keeps_csv_history(resumed):
    """SB3 reopens progress.csv on resume; the earlier rows are kept in progress_until_<step>.csv."""
    steps = []
    for f in sorted((resumed / "tb").glob("progress*.csv")):
        lines = f.read_text().splitlines()
        col = lines[0].split(",").index("time/total_timesteps")
        steps += [int(float(r.split(",")[col])) for r in lines[1:] if r.split(",")[col]]
    assert min(steps) <= 1024 and max(steps) == 2048


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_writes_metrics(runs, kind):
    run = runs[kind]
    invoke(["evaluate", "--exp", "smoke", "--run", str(run)])
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert set(metrics) == {"0", "burn_in", "test"} and metrics["burn_in"] == cfg.paths.burn_in
    test = metrics["test"]  # every path of the independent test split, and their summary
    assert test["n_paths"] == cfg.test.n_paths == len(test["paths"]) and test["spinup_seed"] == cfg.test.seed
    for actor, summary in test["over_paths"].items():
        if actor != "enkf":
            values = [test["paths"][p][actor]["rmse_norm_vs_enkf"] for p in test["paths"]]
            assert summary["rmse_norm_vs_enkf"]["mean"] == pytest.approx(np.mean(values))
    assert test["over_paths"]["enkf_replica"]["rmse_norm_vs_enkf"]["max"] < 1e-5
    m = metrics["0"]
    assert {"rl", "no_da", "copy_obs", "enkf_replica", "enkf"} <= set(m)
    assert m["enkf_replica"]["rmse_norm_vs_enkf"] < 1e-5
    assert m["enkf_replica"]["cycles_completed"] == 60
    assert m["enkf_replica"]["rmse_vs_truth"] == pytest.approx(m["enkf"]["rmse_vs_truth"], rel=1e-5)
    assert m["no_da"]["rmse_norm_vs_enkf"] > 10 * m["copy_obs"]["rmse_norm_vs_enkf"] > 0
    assert 0 <= m["rl"]["cycles_completed"] <= 60
    assert (run / "eval.h5").is_file()


def test_train_without_data_says_what_to_run(tmp_path, monkeypatch, workdir):
    shutil.copy(CONFIG, tmp_path / "config.yaml")
    monkeypatch.chdir(tmp_path)
    for present, hint in [([], "enkfrl generate"), (["spinup.h5"], "enkfrl precompute")]:
        (tmp_path / "data/smoke").mkdir(parents=True, exist_ok=True)
        for f in present:
            shutil.copy(workdir / "data/smoke" / f, tmp_path / "data/smoke" / f)
        result = invoke(["train", "--exp", "smoke", "--run-id", "x"], ok=False)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and hint in lines[0], result.stderr
        assert "Traceback" not in result.output
        assert not (tmp_path / "logs/smoke/x").exists()
