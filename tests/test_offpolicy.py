"""SAC and TD3 beside PPO for the pointwise agent (train.algo, offpolicy:): the config rules, the hash
of PPO runs unchanged by the new keys, end to end train -> evaluate on the smoke experiment through
the CLI, the saved weights reloading into the trained model's deterministic actions, the exploration
at the measured scale, and the refused resume.

The module trains in its own copy of the session's smoke data (one SAC and one TD3 run, 512
path-steps each, checkpointed and evaluated every 256)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml

from conftest import CONFIG, copy_smoke_data, write_config
from enkf.config import ConfigError, result_hash
from rl.agents.policy import algo_class
from rl.config import load_config
from rl.envs.pointwise import gather_points, stencil_neighbours

from rl_checks import closed_loop
from test_cli_rl import cwd, invoke
from test_env import load_smoke, one_torch_thread  # noqa: F401

ALGOS = ["sac", "td3"]


# ---- config -------------------------------------------------------------------------------------------
def test_off_policy_learners_need_the_pointwise_agent_and_a_known_algo(tmp_path):
    """sac with the local agent, an unknown algo and cloning before SAC each stop with one line naming the key."""
    for overrides, message in [({"train": {"algo": "sac"}, "agent": {"kind": "local"}},
                                "train.algo: sac runs the pointwise agent only"),
                               ({"train": {"algo": "ddpg"}}, "train.algo: must be one of ['ppo', 'sac', 'td3']"),
                               ({"train": {"algo": "td3"}}, "pretrain.epochs: behaviour cloning warm-starts PPO"),
                               ({"train": {"algo": "sac"}, "pretrain": {"epochs": 0}, "offpolicy": {"batch_size": 0}},
                                "offpolicy.batch_size: must be >= 1")]:
        path = write_config(tmp_path / "c.yaml", "smoke", overrides)
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
            load_config(path, "smoke")
        assert "\n" not in str(err.value)
    path = write_config(tmp_path / "c.yaml", "smoke", {"train": {"algo": "sac"}, "pretrain": {"epochs": 0}})
    assert load_config(path, "smoke").train.algo == "sac"


def test_ppo_runs_hash_without_the_new_keys_and_off_policy_runs_with_them(tmp_path):
    """train.algo ppo and the offpolicy: section (which PPO never reads) hash as absent, so every record
    made before them stays valid; an offpolicy setting changes the hash of a SAC run only."""
    ppo = load_config(CONFIG, "smoke")
    d = ppo.to_dict()
    del d["train"]["algo"], d["offpolicy"]
    assert ppo.hash() == result_hash(d)
    changed = write_config(tmp_path / "c.yaml", "smoke", {"offpolicy": {"batch_size": 64}})
    assert load_config(changed, "smoke").hash() == ppo.hash()
    sac = {"train": {"algo": "sac"}, "pretrain": {"epochs": 0}}
    a = load_config(write_config(tmp_path / "a.yaml", "smoke", sac), "smoke")
    b = load_config(write_config(tmp_path / "b.yaml", "smoke", dict(sac, offpolicy={"batch_size": 64})), "smoke")
    assert len({a.hash(), b.hash(), ppo.hash()}) == 3


def test_a_run_folder_made_before_the_keys_reads_as_ppo(tmp_path):
    """A run's config.yaml without train.algo and offpolicy: loads as the PPO run it was."""
    from enkf.config import dump_config
    from rl.config import load_run_config
    cfg = load_config(CONFIG, "smoke")
    dump_config(cfg, tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del raw["train"]["algo"], raw["offpolicy"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    old = load_run_config(tmp_path / "config.yaml")
    assert old.train.algo == "ppo" and old.offpolicy is None and old.hash() == cfg.hash()


# ---- end to end -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = copy_smoke_data(tmp_path_factory, tmp_path_factory.mktemp("offpolicy"))
    yield d
    train_log = logging.getLogger("enkfrl.train")
    for h in list(train_log.handlers):  # rl/training/train.py leaves its file handler open
        h.close()
        train_log.removeHandler(h)


@pytest.fixture(scope="module")
def runs(workdir):
    """Finished, evaluated smoke runs logs/smoke/sac and logs/smoke/td3 (pointwise agent, no cloning)."""
    with cwd(workdir):
        for algo in ALGOS:
            raw = yaml.safe_load((workdir / "config.yaml").read_text())
            smoke = raw["experiments"]["smoke"]
            smoke["train"] = dict(smoke["train"], algo=algo, total_steps=512, checkpoint_freq=256, eval_freq=256)
            smoke["pretrain"] = {"epochs": 0}
            (workdir / f"config_{algo}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            invoke(["train", "--exp", "smoke", "--config", f"config_{algo}.yaml", "--run-id", algo])
            invoke(["evaluate", "--exp", "smoke", "--run", f"logs/smoke/{algo}"])
    return {algo: workdir / "logs/smoke" / algo for algo in ALGOS}


def run_config(run: Path):
    from rl.config import load_run_config
    return load_run_config(run / "config.yaml")


@pytest.mark.parametrize("algo", ALGOS)
def test_train_then_evaluate(runs, workdir, algo):
    """The run trains its 512 path-steps as SB3's SAC / TD3, checkpoints, evaluates on the eval path
    (rows of progress.csv in path-steps) and `enkfrl evaluate` scores the deterministic actor: the
    metrics are the final model stepped by hand in closed loop."""
    run = runs[algo]
    cfg = run_config(run)
    assert cfg.train.algo == algo
    assert json.loads((run / "timing.json").read_text())["train_steps"] == 512
    assert {"model_256.zip", "model_512.zip"} <= {p.name for p in (run / "checkpoints").iterdir()}
    model = algo_class(cfg).load(run / "final_model.zip", device="cpu")
    assert type(model).__name__ == {"sac": "PointwiseSAC", "td3": "PointwiseTD3"}[algo]
    assert model.num_timesteps == 512 * cfg.model.n
    from rl.studies.report import eval_curve
    assert [row[0] for row in eval_curve(run)] == [256, 512]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["models"]["rl"]["steps"] == 512 and "supervised" not in metrics["models"]
    _, data, norm = load_smoke(workdir)
    replay = closed_loop(model, cfg, data, norm, cfg.paths.eval_path, cfg.paths.burn_in)
    for key in ("cycles_completed", "total_reward", "rmse_norm_vs_enkf", "rmse_vs_truth"):
        assert metrics["0"]["rl"][key] == pytest.approx(replay[key], rel=1e-9), key


@pytest.mark.parametrize("algo", ALGOS)
def test_the_saved_weights_give_the_trained_models_deterministic_actions(runs, workdir, algo):
    """load_policy (safetensors into the network config.yaml describes) acts as SB3's own model of the
    zip, deterministically; the stochastic (SAC) or noisy (TD3) training actions differ from them."""
    from rl.training.runs import load_policy
    run = runs[algo]
    cfg = run_config(run)
    policy, info = load_policy(cfg, run, "final")
    model = algo_class(cfg).load(run / "final_model.zip", device="cpu")
    _, data, norm = load_smoke(workdir)
    from rl.envs.batched import BatchedLoop
    loop = BatchedLoop(cfg, data, norm, 2)
    loop.reset(np.arange(2), [1, 2])
    points = gather_points(loop.observations(), stencil_neighbours(cfg.model.n, cfg.agent.stencil))
    points = points.reshape(-1, *points.shape[-2:])
    saved, _ = policy.predict(points, deterministic=True)
    trained, _ = model.predict(points, deterministic=True)
    np.testing.assert_array_equal(saved, trained)
    assert np.std(saved) > 0  # the actor depends on the point's window
    for a, b in zip(policy.state_dict().values(), model.policy.state_dict().values()):
        assert th.equal(a, b)
    explored, _ = model._sample_action(0, model.action_noise, len(points))
    assert not np.allclose(explored, trained)


@pytest.mark.parametrize("algo", ALGOS)
def test_the_warm_up_acts_with_the_policy_not_uniformly_over_the_box(runs, workdir, algo):
    """Before learning_starts the actions are the policy's with its exploration (within a few
    exploration stds of the deterministic action), not SB3's uniform draw over Box(-3, 3)."""
    run = runs[algo]
    cfg = run_config(run)
    model = algo_class(cfg).load(run / "final_model.zip", device="cpu")
    std = json.loads((run / "exploration.json").read_text())["exploration_std"]
    _, data, norm = load_smoke(workdir)
    from rl.envs.batched import BatchedLoop
    M = cfg.train.paths_per_env  # TD3's action noise is drawn for the training env's M n agents
    loop = BatchedLoop(cfg, data, norm, M)
    loop.reset(np.arange(M), list(range(1, M + 1)))
    points = gather_points(loop.observations(), stencil_neighbours(cfg.model.n, cfg.agent.stencil))
    model._last_obs = points.reshape(-1, *points.shape[-2:])
    actions, _ = model._sample_action(10 ** 9, model.action_noise, len(model._last_obs))
    deterministic, _ = model.predict(model._last_obs, deterministic=True)
    assert np.max(np.abs(actions - deterministic)) < 10 * std < 0.5 * cfg.env.obs_bound


@pytest.mark.parametrize("algo", ALGOS)
def test_exploration_is_the_measured_error_left(runs, workdir, algo):
    """offpolicy.exploration_std auto: the copy-obs RMSE of the held-out training paths (as PPO's
    log_std_init auto): TD3's action noise in SB3's squashed units is std / obs_bound; SAC's target
    entropy is a Gaussian's of that std."""
    from rl.agents.clone import copy_obs_rmse, split_training_paths
    run = runs[algo]
    cfg = run_config(run)
    ex = json.loads((run / "exploration.json").read_text())
    _, data, norm = load_smoke(workdir)
    std = copy_obs_rmse(cfg, norm, data, split_training_paths(cfg)[1])
    assert ex["source"] == "copy-obs RMSE" and ex["exploration_std"] == pytest.approx(std, rel=1e-12)
    assert 0 < std < 0.3
    if algo == "td3":
        assert ex["action_noise_std"] == pytest.approx(std) and ex["target_policy_noise"] == pytest.approx(2 * std)
    else:
        assert ex["target_entropy"] == pytest.approx(np.log(std / cfg.env.obs_bound) + 0.5 * np.log(2 * np.pi * np.e))
        assert ex["ent_coef_init"] == pytest.approx(std)


def test_an_off_policy_run_does_not_resume(runs, workdir, tmp_path):
    """Its replay buffer is not kept: `train --resume` of an unfinished SAC run stops with one line
    saying so, and writes nothing."""
    run = tmp_path / "sac"
    shutil.copytree(runs["sac"], run)
    for f in ("final_model.zip", "final_model.safetensors"):
        (run / f).unlink()
    before = sorted(p.name for p in run.rglob("*"))
    with cwd(workdir):
        res = invoke(["train", "--resume", str(run)], ok=False)
    assert res.exit_code == 1 and "a sac run cannot resume: its replay buffer is not kept" in res.output
    assert "Traceback" not in res.output
    assert sorted(p.name for p in run.rglob("*")) == before
