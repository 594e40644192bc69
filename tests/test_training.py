"""The model files of a run folder (rl/training/runs.py: newest_checkpoint with recorded, missing
and mismatched checksums) and the best model (rl/training/train.py EvalCallback: the choice by
total reward, and the earlier best restored when a run resumes)."""
from __future__ import annotations

import dataclasses
import json
import logging
import zipfile

import numpy as np
import pytest
from stable_baselines3.common.logger import Logger

from enkf.io import DataError, sha256_file
from rl.agents.actors import actor_factory
from rl.agents.policy import build_model
from rl.envs.batched import BatchedLoop
from rl.training.runs import CHECKSUMS, newest_checkpoint, save_checkpoint, save_model
from rl.training.train import EvalCallback, make_vec_env

from rl_checks import closed_loop
from test_env import load_smoke, one_torch_thread, smoke_workdir  # noqa: F401


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cfg, data, norm = load_smoke(smoke_workdir(tmp_path_factory))
    cfg = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, kind="window", log_std_init=-3.0))
    return cfg, data, norm


@pytest.fixture(scope="module")
def model(smoke):
    cfg, data, norm = smoke
    m = build_model(cfg, make_vec_env(cfg, data, norm, [1]), None, "cpu", 0)
    m.set_logger(Logger(folder=None, output_formats=[]))
    return m


# ---- checkpoints -------------------------------------------------------------------------------------
@pytest.fixture
def run(tmp_path, model):
    """A run folder with two complete checkpoints, 512 and 1024."""
    for step in (512, 1024):
        save_checkpoint(model, {"n_active": step // 512, "step": step}, tmp_path, step)
    return tmp_path


def forget(run, key: str) -> None:
    sums = json.loads((run / CHECKSUMS).read_text())
    del sums[key]
    (run / CHECKSUMS).write_text(json.dumps(sums))


def test_the_newest_complete_checkpoint(run):
    path, state, step = newest_checkpoint(run)
    assert (path.name, state, step) == ("model_1024.zip", {"n_active": 2, "step": 1024}, 1024)


def test_a_checkpoint_whose_sha_differs_is_refused_unless_trusted(run):
    """A recorded model changed afterwards (here: one more member in its zip) is not skipped but
    refused: loading it could run someone else's pickle. --trust accepts it."""
    model_zip = run / "checkpoints/model_1024.zip"
    with zipfile.ZipFile(model_zip, "a") as z:
        z.writestr("extra.txt", "changed")
    assert zipfile.is_zipfile(model_zip)
    with pytest.raises(DataError, match=r"model_1024.zip differs from the file this run wrote \(sha256 mismatch"):
        newest_checkpoint(run)
    assert newest_checkpoint(run, trust=True)[2] == 1024


def test_a_checkpoint_without_a_recorded_sha_is_skipped_with_a_warning(run, caplog):
    forget(run, "checkpoints/model_1024.zip")
    with caplog.at_level(logging.WARNING, logger="enkfrl.train"):
        path, state, step = newest_checkpoint(run)
    assert (path.name, state["step"], step) == ("model_512.zip", 512, 512)
    assert "skipping a checkpoint: model_1024.zip has no recorded sha256" in caplog.text
    assert newest_checkpoint(run, trust=True)[2] == 1024
    forget(run, "checkpoints/model_512.zip")
    with pytest.raises(DataError, match=r"no complete checkpoint to resume from \(model_1024.zip has no recorded "
                                        r"sha256; model_512.zip has no recorded sha256\): start a new run"):
        newest_checkpoint(run)


def test_incomplete_checkpoints_are_skipped(run):
    (run / "checkpoints/curriculum_1024.json").unlink()
    assert newest_checkpoint(run)[2] == 512
    save_checkpoint_zip = run / "checkpoints/model_2048.zip"
    save_checkpoint_zip.write_bytes((run / "checkpoints/model_512.zip").read_bytes()[:100])  # truncated
    (run / "checkpoints/curriculum_2048.json").write_text("{}")
    assert newest_checkpoint(run)[2] == 512
    (run / CHECKSUMS).write_text("not json")
    with pytest.raises(DataError, match="checksums.json is not readable JSON"):
        newest_checkpoint(run)


# ---- the best model ------------------------------------------------------------------------------------
def eval_callback(smoke, run, model):
    cfg, data, norm = smoke
    cb = EvalCallback(BatchedLoop(cfg, data, norm, 1), cfg.paths.eval_path, 512, run,
                      actor_factory(cfg))
    cb.init_callback(model)
    cb.on_training_start({}, {})
    return cb


def test_the_best_model_is_restored_on_resume_and_kept_when_not_beaten(smoke, model, tmp_path):
    """best.json of a resumed run (its best_model.zip recorded): the callback starts from that
    total reward, so an evaluation below it leaves best_model.zip and best.json alone."""
    save_model(model, tmp_path / "best_model.zip", tmp_path, 7)
    (tmp_path / "best.json").write_text(json.dumps({"total_reward": 1e9, "steps": 7}))
    before = sha256_file(tmp_path / "best_model.zip")
    cb = eval_callback(smoke, tmp_path, model)
    assert cb.best == 1e9
    s = cb.evaluate()
    assert s["total_reward"] < 1e9
    assert sha256_file(tmp_path / "best_model.zip") == before
    assert json.loads((tmp_path / "best.json").read_text()) == {"total_reward": 1e9, "steps": 7}


@pytest.mark.parametrize("case", ["lower", "unrecorded", "none"])
def test_the_best_model_is_replaced_when_beaten_or_not_to_be_trusted(smoke, model, tmp_path, case):
    """An earlier best below the evaluation (or one whose best_model.zip is not the run's recorded
    file, or none at all) is replaced: best.json is the evaluation, best_model.zip the model."""
    cfg, data, norm = smoke
    if case != "none":
        save_model(model, tmp_path / "best_model.zip", tmp_path, 7)
        (tmp_path / "best.json").write_text(json.dumps({"total_reward": -1e9 if case == "lower" else 1e9, "steps": 7}))
    if case == "unrecorded":
        forget(tmp_path, "best_model.zip")
    cb = eval_callback(smoke, tmp_path, model)
    assert cb.best == (-1e9 if case == "lower" else -np.inf)
    s = cb.evaluate()
    best = json.loads((tmp_path / "best.json").read_text())
    assert best == dict(s, steps=0) and cb.best == s["total_reward"]
    assert json.loads((tmp_path / CHECKSUMS).read_text())["best_model.zip"] == sha256_file(tmp_path / "best_model.zip")
    # the evaluation is the model's closed loop on the eval path, stepped here by hand
    replay = closed_loop(model, cfg, data, norm, cfg.paths.eval_path, burn_in=0)
    for key in ("cycles_completed", "total_reward", "mean_reward", "rmse_norm_vs_enkf", "rmse_vs_truth"):
        assert s[key] == pytest.approx(replay[key], rel=1e-9), key
