"""End to end through the CLI on the smoke experiment: train (every agent kind), TensorBoard tags
and what they record (recomputed from the checkpointed policies), the exploration scale, the
best model and its restore on resume, evaluate (final and best model) against eval.h5 and an
independent closed loop, load_policy's fallback, and the one-line error without data.

The module trains in its own copy of the session's smoke data; every test that runs the CLI
chdirs there for itself (monkeypatch), so the tests run in any order."""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch as th
import yaml
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli.main import main
from enkf.io import sha256_file
from conftest import copy_smoke_data
from rl.config import from_dict
from rl.agents.policy import algo_class
from rl.envs.normalisation import Normaliser

from rl_checks import closed_loop, oracle_rmse
from test_env import CONFIG, load_smoke, one_torch_thread  # noqa: F401

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
RUN_FILES = ["config.yaml", "run.json", "best_model.zip", "final_model.zip", "best_model.safetensors",
             "final_model.safetensors", "pretrained_model.safetensors", "train.log", "normaliser.npz"]


def invoke(args, ok=True):
    result = CliRunner().invoke(main, args)
    if ok:
        assert result.exit_code == 0, (args, result.output, result.exception)
    return result


@contextlib.contextmanager
def cwd(folder: Path):
    """cli/ reads data/<E>/ and writes logs/<E>/ relative to the working directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        yield folder


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """This module's own copy of the smoke data (config.yaml, data/smoke/): its runs write logs/."""
    d = copy_smoke_data(tmp_path_factory, tmp_path_factory.mktemp("cli_rl"))
    yield d
    train_log = logging.getLogger("enkfrl.train")
    for h in list(train_log.handlers):  # rl/training/train.py leaves its file handler open
        h.close()
        train_log.removeHandler(h)


@pytest.fixture
def in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture(scope="module")
def runs(workdir):
    """Finished smoke runs, one per agent kind: logs/smoke/{w,l,p,r} (window, local, pointwise, recurrent)."""
    with cwd(workdir):
        for kind, run_id in [("window", "w"), ("local", "l"), ("pointwise", "p"), ("recurrent", "r")]:
            raw = yaml.safe_load((workdir / "config.yaml").read_text())
            smoke = raw["experiments"]["smoke"]
            smoke.setdefault("agent", {})["kind"] = kind
            smoke.setdefault("env", {})["window"] = 1 if kind == "recurrent" else 3
            (workdir / f"config_{kind}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            invoke(["train", "--exp", "smoke", "--config", f"config_{kind}.yaml", "--run-id", run_id])
    return {"window": workdir / "logs/smoke/w", "local": workdir / "logs/smoke/l",
            "pointwise": workdir / "logs/smoke/p", "recurrent": workdir / "logs/smoke/r"}


def run_config(run: Path):
    return from_dict(yaml.safe_load((run / "config.yaml").read_text()))


def load(run: Path, name: str):
    """A model zip of the run folder loaded by SB3 itself, on the CPU (the test made the file): what
    the evaluation, which reads the safetensors weights beside it, is compared with."""
    return algo_class(run_config(run)).load(run / name, device="cpu")


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
    cfg = run_config(run)
    assert cfg.experiment == "smoke" and cfg.agent.kind == kind
    assert cfg.env.window == (1 if kind == "recurrent" else 3)
    assert json.loads((run / "timing.json").read_text())["train_steps"] == cfg.train.total_steps == 1024
    _, _, norm = load_smoke(workdir)
    saved = Normaliser.load(run / "normaliser.npz")
    np.testing.assert_array_equal(saved.centre, norm.centre)
    np.testing.assert_array_equal(saved.half_range, norm.half_range)
    curriculum = json.loads((run / "checkpoints/curriculum_1024.json").read_text())
    assert curriculum == json.loads((run / "curriculum_final.json").read_text())  # both at 1024
    # 2 envs (pointwise: 2 path slots) of 512 path-steps each: at least 8 whole 60-cycle paths each
    assert curriculum["episodes"] >= 2 * (512 // 60)
    assert "done: 1024 path-steps" in (run / "train.log").read_text()


def eval_rows(s: dict, unit: int) -> dict[int, dict]:
    """path-step -> the eval/* scalars logged at it."""
    rows = {}
    for tag in ("mean_reward", "total_reward", "cycles_completed", "rmse_vs_enkf", "rmse_vs_truth"):
        for step, v in s[f"eval/{tag}"]:
            rows.setdefault(step // unit, {})[tag] = v
    return rows


@pytest.mark.parametrize("kind", KINDS)
def test_tensorboard_has_every_tag(runs, kind):
    s = scalars(runs[kind])
    cfg = run_config(runs[kind])
    unit = cfg.model.n if kind == "pointwise" else 1  # SB3's x axis counts agent-steps
    missing = [t for t in TAGS if t not in s]
    assert not missing, f"{kind} run lacks TensorBoard tags {missing}"
    for t in TAGS:
        values = np.array([v for _, v in s[t]])
        assert np.all(np.isfinite(values)), t
        assert max(step for step, _ in s[t]) <= 1024 * unit
    assert max(step for step, _ in s["time/fps"]) == 1024 * unit
    assert [step for step, _ in s["eval/mean_reward"]] == [512 * unit, 1024 * unit]
    # the curriculum as logged at the end of the rollouts that end at the checkpoints (128
    # path-steps a rollout) is the state the checkpoints saved
    n_paths = dict(s["curriculum/n_paths"])
    consecutive = dict(s["curriculum/consecutive_completions"])
    assert list(n_paths.values()) == sorted(n_paths.values())
    for step in (512, 1024):
        state = json.loads((runs[kind] / f"checkpoints/curriculum_{step}.json").read_text())
        assert n_paths[step * unit] == state["n_active"], step
        assert consecutive[step * unit] == state["consecutive"], step
    halts = json.loads((runs[kind] / "checkpoints/curriculum_1024.json").read_text())["halts"]
    assert any(v > 0 for _, v in s["episode/halt_rate"]) == (halts > 0)
    assert all(lo * (1 - 1e-6) <= m <= hi * (1 + 1e-6) for (_, lo), (_, m), (_, hi) in
               zip(s["policy/std_min"], s["policy/std_mean"], s["policy/std_max"]))
    assert all(v > 0 for _, v in s["train/lstm_grad_norm"])
    assert all(0 <= v <= 1.5 for _, v in s["time/env_step_share"])


@pytest.mark.parametrize("kind", KINDS)
def test_eval_scalars_are_the_checkpointed_policy_on_the_eval_path(runs, workdir, kind):
    """Every eval/* row is what the policy saved at that step (checkpoints/model_<step>.zip, saved
    in the same callback step) does on the eval path, recomputed here by stepping the env by
    hand; best.json and best_model.zip are the evaluation with the highest total reward."""
    run = runs[kind]
    cfg = run_config(run)
    _, data, norm = load_smoke(workdir)
    unit = cfg.model.n if kind == "pointwise" else 1
    rows = eval_rows(scalars(run), unit)
    assert set(rows) == {512, 1024}
    for step, logged in rows.items():
        replay = closed_loop(load(run, f"checkpoints/model_{step}.zip"), cfg, data, norm,
                             cfg.paths.eval_path, burn_in=0)
        expected = dict(replay, rmse_vs_enkf=replay["rmse_norm_vs_enkf"])
        for tag, v in logged.items():
            assert v == pytest.approx(expected[tag], rel=1e-5, abs=1e-6), (step, tag)
    best = json.loads((run / "best.json").read_text())
    first_max = max(rows, key=lambda st: (rows[st]["total_reward"], -st))
    assert best["steps"] == first_max
    assert best["total_reward"] == pytest.approx(rows[first_max]["total_reward"], rel=1e-6)
    replay = closed_loop(load(run, "best_model.zip"), cfg, data, norm, cfg.paths.eval_path, burn_in=0)
    assert replay["total_reward"] == pytest.approx(best["total_reward"], rel=1e-9)
    assert replay["cycles_completed"] == best["cycles_completed"]


@pytest.mark.parametrize("kind", KINDS)
def test_exploration_std_is_the_clones_held_out_error(runs, workdir, kind):
    """log_std_init auto after cloning: the std PPO starts with (policy/std_mean of the first
    rollout) is exp(the recorded log std), which is the cloned policy's RMSE on the held-out
    training path, here recomputed from pretrained_model.zip on the stored pairs of that path."""
    run = runs[kind]
    cfg = run_config(run)
    _, data, norm = load_smoke(workdir)
    assert cfg.agent.log_std_init == "auto" and cfg.pretrain.epochs > 0
    exploration = json.loads((run / "exploration.json").read_text())
    history = json.loads((run / "pretrain.json").read_text())
    assert exploration["source"] == "cloned policy's held-out RMSE"
    assert len(history["val_rmse"]) == cfg.pretrain.epochs
    assert exploration["log_std_init"] == pytest.approx(np.log(history["val_rmse"][-1]), rel=1e-12)
    held_out = [cfg.paths.train_paths[1]]  # 5 training paths: the last one (10%, at least one) held out
    assert oracle_rmse(load(run, "pretrained_model.zip"), cfg, norm, data, held_out) == pytest.approx(
        history["val_rmse"][-1], rel=1e-4)
    first_std = scalars(run)["policy/std_mean"][0][1]
    assert first_std == pytest.approx(np.exp(exploration["log_std_init"]), rel=1e-6)


@pytest.fixture(scope="module")
def resumed(runs, workdir):
    """A copy of the window run (the other tests keep the 1024-step original) with
    train.total_steps raised to 2048 in its config.yaml, resumed through the CLI."""
    run = workdir / "logs/smoke/w_resumed"
    shutil.copytree(runs["window"], run, ignore=shutil.ignore_patterns("metrics.json", "eval.h5"))
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["train"]["total_steps"] = 2048
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    with cwd(workdir):
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


def test_resume_keeps_the_best_model_of_the_whole_run(resumed, workdir):
    """best.json after the resume is the best of all four evaluations (before and after it), and
    best_model.zip still reproduces it: the earlier best was restored, not forgotten."""
    cfg = run_config(resumed)
    _, data, norm = load_smoke(workdir)
    rows = eval_rows(scalars(resumed), 1)
    assert set(rows) == {512, 1024, 1536, 2048}
    best = json.loads((resumed / "best.json").read_text())
    assert best["steps"] == max(rows, key=lambda st: (rows[st]["total_reward"], -st))
    replay = closed_loop(load(resumed, "best_model.zip"), cfg, data, norm, cfg.paths.eval_path, burn_in=0)
    assert replay["total_reward"] == pytest.approx(best["total_reward"], rel=1e-9)


def test_resume_keeps_csv_history(resumed):
    """SB3 reopens progress.csv on resume; the earlier rows are kept in progress_until_<step>.csv."""
    steps = []
    for f in sorted((resumed / "tb").glob("progress*.csv")):
        lines = f.read_text().splitlines()
        col = lines[0].split(",").index("time/total_timesteps")
        steps += [int(float(r.split(",")[col])) for r in lines[1:] if r.split(",")[col]]
    assert min(steps) <= 1024 and max(steps) == 2048


def rmse(a, b):
    return np.sqrt(np.mean((np.asarray(a) - b) ** 2, axis=-1))


def check_group(g, m: dict, truth, stored_xa, norm, burn_in: int):
    """One path's group of eval.h5 against its metrics.json entry {actor: summary}: the stored
    arrays are the data's, each actor's per-cycle RMSEs are those of its stored analyses, and the
    summary is their mean after burn_in over the completed cycles."""
    np.testing.assert_array_equal(g["truth"][()], truth)
    np.testing.assert_array_equal(g["enkf_analysis"][()], stored_xa)
    assert m["enkf"]["rmse_vs_truth"] == pytest.approx(np.mean(rmse(stored_xa, truth)[burn_in:]), rel=1e-12)
    assert set(g) - {"truth", "enkf_analysis", "enkf_rmse_vs_truth"} == set(m) - {"enkf"}
    for actor, summary in m.items():
        if actor == "enkf":
            continue
        a = g[actor]
        c = int(a.attrs["cycles_completed"])
        assert c == summary["cycles_completed"], actor
        xa = a["analysis"][()][:c]
        np.testing.assert_allclose(a["rmse_vs_truth"][()][:c], rmse(xa, truth[:c]), rtol=1e-10)
        np.testing.assert_allclose(a["rmse_vs_enkf"][()][:c], rmse(norm.norm(xa), norm.norm(stored_xa[:c])),
                                   rtol=1e-10)
        b = burn_in if c > burn_in else 0
        assert summary["rmse_vs_truth"] == pytest.approx(np.mean(rmse(xa, truth[:c])[b:]), rel=1e-10), actor
        assert summary["rmse_norm_vs_enkf"] == pytest.approx(
            np.mean(rmse(norm.norm(xa), norm.norm(stored_xa[:c]))[b:]), rel=1e-10), actor


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_writes_metrics(runs, in_workdir, kind):
    run = runs[kind]
    invoke(["evaluate", "--exp", "smoke", "--run", str(run)])
    metrics = json.loads((run / "metrics.json").read_text())
    cfg = run_config(run)
    _, data, norm = load_smoke(in_workdir)
    assert set(metrics) == {"0", "burn_in", "test", "models", "data"} and metrics["burn_in"] == cfg.paths.burn_in
    assert metrics["models"]["rl"]["which"] == "final" and metrics["models"]["rl"]["steps"] == 1024
    assert metrics["models"]["rl"]["sha256"] == sha256_file(run / "final_model.safetensors")
    assert metrics["models"]["supervised"]["which"] == "pretrained"
    assert {k: v["sha256"] for k, v in metrics["data"].items()} == {
        k: sha256_file(Path("data/smoke") / f"{k}.h5") for k in ("spinup", "paths", "test_spinup", "test_paths")}
    test = metrics["test"]  # every path of the independent test split, and their summary
    assert test["n_paths"] == cfg.test.n_paths == len(test["paths"]) and test["spinup_seed"] == cfg.test.seed
    for actor, summary in test["over_paths"].items():
        if actor != "enkf":
            values = [test["paths"][p][actor]["rmse_norm_vs_enkf"] for p in test["paths"]]
            assert summary["rmse_norm_vs_enkf"]["mean"] == pytest.approx(np.mean(values))
    assert test["over_paths"]["enkf_replica"]["rmse_norm_vs_enkf"]["max"] < 1e-5
    m = metrics["0"]
    assert set(m) == {"rl", "supervised", "no_da", "copy_obs", "enkf_replica", "enkf"}
    assert m["enkf_replica"]["rmse_norm_vs_enkf"] < 1e-5
    assert m["enkf_replica"]["cycles_completed"] == 60
    assert m["enkf_replica"]["rmse_vs_truth"] == pytest.approx(m["enkf"]["rmse_vs_truth"], rel=1e-5)
    assert m["no_da"]["rmse_norm_vs_enkf"] > 10 * m["copy_obs"]["rmse_norm_vs_enkf"] > 0
    # the final policy (and the cloned one) stepped here by hand give the same figures
    for actor, model in (("rl", "final_model.zip"), ("supervised", "pretrained_model.zip")):
        replay = closed_loop(load(run, model), cfg, data, norm, cfg.paths.eval_path, cfg.paths.burn_in)
        for key in ("cycles_completed", "total_reward", "mean_reward", "rmse_norm_vs_enkf", "rmse_vs_truth"):
            assert m[actor][key] == pytest.approx(replay[key], rel=1e-9), (actor, key)
    # eval.h5 holds what the metrics summarise: the eval path and every test path
    with h5py.File(run / "eval.h5", "r") as f:
        assert set(f) == {"path_0"} | {f"test_path_{p}" for p in range(cfg.test.n_paths)}
        check_group(f["path_0"], m, data["truth"][0], data["analysis_mean"][0], norm, cfg.paths.burn_in)
        with h5py.File(in_workdir / "data/smoke/test_paths.h5", "r") as t:
            truth, stored_xa = t["truth"][()], t["analysis_mean"][()]
        for p in range(cfg.test.n_paths):
            check_group(f[f"test_path_{p}"], test["paths"][str(p)], truth[p], stored_xa[p], norm,
                        cfg.paths.burn_in)


def copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("metrics.json", "eval.h5", "plots"))
    return dest


def test_evaluate_the_best_model(runs, in_workdir, tmp_path):
    """`evaluate --model best` evaluates best_model.zip: the rl entry's total reward over the eval
    path is the one best.json recorded when the model was chosen (final_model.zip, trained on
    after it, gets another)."""
    run = copy_run(runs["window"], tmp_path / "w_best")
    invoke(["evaluate", "--exp", "smoke", "--run", str(run), "--model", "best", "--no-test"])
    rl = json.loads((run / "metrics.json").read_text())["0"]["rl"]
    best = json.loads((run / "best.json").read_text())
    assert rl["total_reward"] == best["total_reward"] and rl["cycles_completed"] == best["cycles_completed"]
    invoke(["evaluate", "--exp", "smoke", "--run", str(run), "--model", "final", "--no-test"])
    final = json.loads((run / "metrics.json").read_text())["0"]["rl"]
    assert final["total_reward"] != best["total_reward"]


def test_load_policy_falls_back_to_the_final_model(runs, tmp_path):
    """load_policy(which="best") without a best model loads final_model.safetensors; which="final"
    has no fallback (a one-line DataError). The weights are the ones SB3 saved in the zips."""
    from enkf.io import DataError
    from rl.training.runs import load_policy
    run = copy_run(runs["window"], tmp_path / "w")
    cfg = run_config(run)
    best, info = load_policy(cfg, run, "best")
    assert info["which"] == "best"
    for ext in ("zip", "safetensors"):
        (run / f"best_model.{ext}").unlink()
    fallback, info = load_policy(cfg, run, "best")
    assert info["which"] == "final" and info["steps"] == 1024
    final = load(run, "final_model.zip").policy
    for (name, a), b, c in zip(fallback.state_dict().items(), final.state_dict().values(),
                               best.state_dict().values()):
        assert th.equal(a, b), name
    assert any(not th.equal(b, c) for b, c in zip(final.state_dict().values(), best.state_dict().values()))
    (run / "final_model.safetensors").unlink()
    with pytest.raises(DataError, match="final_model.safetensors not found: the run was made before"):
        load_policy(cfg, run, "best")


def test_train_without_data_says_what_to_run(tmp_path, monkeypatch, smoke_data):
    shutil.copy(CONFIG, tmp_path / "config.yaml")
    monkeypatch.chdir(tmp_path)
    for present, hint in [([], "enkfrl generate"), (["spinup.h5"], "enkfrl precompute")]:
        (tmp_path / "data/smoke").mkdir(parents=True, exist_ok=True)
        for f in present:
            shutil.copy(smoke_data / "data/smoke" / f, tmp_path / "data/smoke" / f)
        result = invoke(["train", "--exp", "smoke", "--run-id", "x"], ok=False)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and hint in lines[0], result.stderr
        assert "Traceback" not in result.output
        assert not (tmp_path / "logs/smoke/x").exists()


# ---- enkfrl transfer: one pointwise policy on rings of other sizes ---------------------------------
def test_transfer_to_its_own_experiment_is_its_own_test_evaluation(runs, in_workdir):
    """The pointwise run, transferred to its own experiment, is exactly `enkfrl evaluate`'s test set
    (the same policy, data and normalisation): the invariant that pins the transfer's plumbing."""
    run = runs["pointwise"]
    invoke(["evaluate", "--exp", "smoke", "--run", str(run)])
    own = json.loads((run / "metrics.json").read_text())["test"]["over_paths"]
    res = invoke(["transfer", "--runs", str(run), "--to", "smoke"])
    rec = json.loads(Path("logs/beyond/transfer_smoke.json").read_text())["targets"]["smoke"]
    assert rec["rl"]["mean"] == pytest.approx(own["rl"]["rmse_vs_truth"]["mean"], rel=1e-12)
    assert rec["copy_obs"]["mean"] == pytest.approx(own["copy_obs"]["rmse_vs_truth"]["mean"], rel=1e-12)
    assert rec["stored_filter"]["mean"] == pytest.approx(own["enkf"]["rmse_vs_truth"]["mean"], rel=1e-12)
    assert rec["n"] == 8 and rec["per_seed"][0]["model"]["which"] == "final"
    assert "| smoke | 8 | 1 |" in res.output and not Path("results/beyond").exists()


def test_transfer_record_takes_the_baselines_from_the_run_that_evaluated_them(tmp_path):
    """`enkfrl transfer` evaluates the baselines with the first run of a setting only: the record's
    RL figure is over every seed, its baselines those of the run that has them."""
    from rl.studies.transfer import transfer_record
    m = lambda v: {"rmse_vs_truth": {"mean": v}, "rmse_norm_vs_enkf": {"mean": v / 10}, "cycles_completed": 5}  # noqa: E731
    first = {"seed": 0, "run_dir": "a", "model": {}, "per_path_rl": [0.3], "n": 8, "trained_on": "smoke",
             "over_paths": {"rl": m(0.3), "copy_obs": m(0.5), "enkf": m(0.2), "enkf_replica": m(0.25)}}
    second = dict(first, seed=1, run_dir="b", over_paths={"rl": m(0.4)})
    rec = transfer_record({"smoke": [first, second]}, tmp_path, {})["targets"]["smoke"]
    assert rec["rl"]["mean"] == pytest.approx(0.35) and rec["seeds"] == [0, 1]
    assert (rec["copy_obs"]["mean"], rec["stored_filter"]["mean"], rec["env_filter"]["mean"]) == (0.5, 0.2, 0.25)
    assert rec["ratio_to_stored_filter"] == pytest.approx(0.35 / 0.2)


def test_transfer_runs_the_same_network_on_a_ring_of_another_size(runs, in_workdir):
    """A ring of 11 (smoke's physics otherwise): the policy runs on every point of it, the record
    names the target's size; a window agent (its network sized to its own ring) is refused in one line."""
    raw = yaml.safe_load(Path("config.yaml").read_text())
    raw["experiments"]["smoke_n11"] = dict(raw["experiments"]["smoke"], model={"n": 11, "dt": 0.01})
    Path("config_n11.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    invoke(["ensure-data", "--exp", "smoke_n11", "--config", "config_n11.yaml"])
    invoke(["transfer", "--runs", str(runs["pointwise"]), "--to", "smoke_n11", "--config", "config_n11.yaml"])
    rec = json.loads(Path("logs/beyond/transfer_smoke.json").read_text())["targets"]["smoke_n11"]
    assert rec["n"] == 11 and rec["cycles_completed"] >= 1 and np.isfinite(rec["rl"]["mean"])
    assert len(rec["per_seed"][0]["per_path_rl"]) == 3  # smoke's test split: 3 paths
    res = invoke(["transfer", "--runs", str(runs["window"]), "--to", "smoke_n11", "--config", "config_n11.yaml"],
                 ok=False)
    assert res.exit_code != 0 and "transfer needs a pointwise agent" in res.output
    assert "Traceback" not in res.output


def test_the_final_policy_is_the_mean_of_the_last_checkpoints_when_asked(runs, workdir):
    """train.average_checkpoints: 2 -> final_model (weights and zip) is the mean of the weights at
    the checkpoints of the newest two multiples of checkpoint_freq (not the end-of-training weights,
    not an off-grid checkpoint), its header naming their steps; 1 (the other runs) is the last weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    with cwd(workdir):
        raw = yaml.safe_load((workdir / "config.yaml").read_text())
        smoke = raw["experiments"]["smoke"]
        smoke.setdefault("agent", {})["kind"] = "pointwise"
        smoke["train"] = dict(smoke["train"], total_steps=1280, checkpoint_freq=512, average_checkpoints=2)
        (workdir / "config_avg.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        invoke(["train", "--exp", "smoke", "--config", "config_avg.yaml", "--run-id", "avg"])
    run = workdir / "logs/smoke/avg"
    steps = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("model_*.safetensors"))
    end = steps[-1]
    assert steps[:2] == [512, 1024] and end > 1024 and end % 512 != 0  # the end of training is off the grid
    at = {s: load_file(run / f"checkpoints/model_{s}.safetensors") for s in steps}
    final = load_file(run / "final_model.safetensors")
    assert set(final) == set(at[512])
    for name, w in final.items():
        assert th.equal(w, (at[512][name] + at[1024][name]) / 2), name
    assert any(not th.equal(final[k], at[end][k]) for k in final)
    with safe_open(str(run / "final_model.safetensors"), "pt") as f:
        assert f.metadata()["averaged_steps"] == "512,1024"
    zipped = load(run, "final_model.zip").policy.state_dict()
    assert all(th.equal(zipped[k], final[k]) for k in final)
    # with 1 (the other runs) the final policy is the last weights: no checkpoints averaged
    with safe_open(str(runs["pointwise"] / "final_model.safetensors"), "pt") as f:
        assert "averaged_steps" not in f.metadata()
