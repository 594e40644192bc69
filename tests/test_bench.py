"""`enkfrl bench` on a tiny config: the structure of results/bench.json, every ratio computed from
the measured numbers it reports (and printed as reported), the keys other commands measured kept.

The RL measurements run for real but small: their repetition counts are shrunk by wrapping the
measuring functions (the bench's own sizes are fixed in rl/studies/bench.py), and what each call
measured is kept to compare the record with."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch as th
import yaml
from click.testing import CliRunner

import rl.studies.bench as rl_bench
from cli.common import bench_config
from cli.main import main
from conftest import read_config_yaml
from enkf.config import hash_of

TINY_L96 = {"spinup": {"steps": 20000, "thin": 10},
            "paths": {"n_paths": 6, "n_cycles": 30, "train_paths": [1, 5], "burn_in": 5, "workers": 1},
            "ppo": {"n_steps": 8, "batch_size": 32, "n_epochs": 1},
            "train": {"paths_per_env": 2}}


def small_ppo(cfg):
    return dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, n_steps=16, batch_size=16, n_epochs=1),
                               agent=dataclasses.replace(cfg.agent, lstm_hidden=min(cfg.agent.lstm_hidden, 32)))


def small_update(cfg):
    """One rollout of 4 cycles cut into 2 minibatches, a smaller LSTM."""
    agent_steps = 4 * cfg.train.paths_per_env * cfg.model.n
    return dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, n_steps=4, batch_size=agent_steps // 2, n_epochs=1),
                               agent=dataclasses.replace(cfg.agent, lstm_hidden=min(cfg.agent.lstm_hidden, 32)))


@pytest.fixture
def measured(monkeypatch) -> dict:
    """Every RL measurement, run small; name -> list of what each call returned."""
    seen = {"env": [], "ppo": [], "pointwise": [], "per_path": [], "batched": [], "limit": [], "profile": []}
    env, ppo, pointwise = rl_bench._env_steps_per_s, rl_bench._ppo_speed, rl_bench.pointwise_speed
    profile = rl_bench.update_profile
    per_path, batched, limit = rl_bench.per_path_loop_speed, rl_bench.batched_loop_speed, rl_bench.kernel_limit

    def keep(name, value):
        seen[name].append(value)
        return value
    monkeypatch.setattr(rl_bench, "_env_steps_per_s", lambda cfg, data, norm, steps: keep("env", env(cfg, data, norm, 60)))
    monkeypatch.setattr(rl_bench, "_ppo_speed", lambda cfg, data, norm, steps, policy_class=None: keep(
        "ppo", ppo(small_ppo(cfg), data, norm, 32, policy_class)))
    monkeypatch.setattr(rl_bench, "pointwise_speed", lambda cfg, data, norm, rollouts, env_seconds, device="cpu": keep(
        "pointwise", pointwise(small_ppo(cfg), data, norm, 1, 0.2, device)))
    monkeypatch.setattr(rl_bench, "per_path_loop_speed", lambda cfg, data, norm, P, seconds: keep(
        "per_path", per_path(cfg, data, norm, P, 0.1)))
    monkeypatch.setattr(rl_bench, "batched_loop_speed", lambda cfg, data, norm, P, seconds: keep(
        "batched", batched(cfg, data, norm, P, 0.1)))
    monkeypatch.setattr(rl_bench, "kernel_limit", lambda cfg, data, P, repeats: keep("limit", limit(cfg, data, P, 1)))
    monkeypatch.setattr(rl_bench, "update_profile", lambda cfg, data, norm, device="cpu": keep(
        "profile", profile(small_update(cfg), data, norm, device)))
    return seen


def test_bench_records_the_measured_numbers_and_their_ratios(in_tmp, measured):
    raw = read_config_yaml()
    raw["experiments"]["L96_1"] = dict(raw["experiments"]["L96_1"], **TINY_L96)
    (in_tmp / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (in_tmp / "results").mkdir()
    (in_tmp / "results/bench.json").write_text(json.dumps({"ray_study": {"x": 1}, "rl": {"old": True}}))
    result = CliRunner().invoke(main, ["bench", "--config", "config.yaml", "--record"])
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.output
    res = json.loads((in_tmp / "results/bench.json").read_text())
    assert set(res) == {"kernels", "rl", "provenance", "ray_study"} and res["ray_study"] == {"x": 1}
    assert res["provenance"]["config_hash"] == hash_of(bench_config("config.yaml"))
    assert res["provenance"]["command"] == "enkfrl bench --record"

    # kernels: every ratio printed is numba's speed over numpy's (for times: numpy's over numba's)
    k = res["kernels"]
    assert set(k) >= {"single", "ensemble", "enkf_sakov2008", "spinup", "precompute", "total_s"}
    assert k["spinup"]["steps"] == 20000 and k["precompute"]["target_cycles"] == 30
    for key, label in (("single", "1 trajectory"), ("ensemble", "members")):
        row = next(line for line in out.splitlines() if label in line and "L96 RK4" in line)
        assert f"{k[key]['numba_steps_per_s'] / k[key]['numpy_steps_per_s']:.1f}x" in row, row
    e = k["enkf_sakov2008"]
    row = next(line for line in out.splitlines() if line.startswith("EnKF L96_sakov2008, N="))
    assert f"{e['numba_cycles_per_s'] / e['numpy_cycles_per_s']:.1f}x" in row
    row = next(line for line in out.splitlines() if "spin-up, 20,000 steps" in line)
    assert f"{k['spinup']['numpy_wall_s_extrapolated'] / k['spinup']['wall_s']:.1f}x" in row
    assert k["spinup"]["numpy_wall_s_extrapolated"] == pytest.approx(20000 / k["single"]["numpy_steps_per_s"])
    # one cycle from the same start agrees with numpy to rounding (trajectory, ensemble, one EnKF
    # forecast + analysis with the same draws); the 2000 chaotic EnKF cycles only statistically
    one = max(k["single"]["max_abs_diff_one_cycle"], k["ensemble"]["max_abs_diff_one_cycle"],
              e["max_abs_diff_one_analysis"])
    assert one <= 1e-9
    assert e["analysis_rmse_numba"] == pytest.approx(e["analysis_rmse_numpy"], rel=0.05)
    verdict = next(line for line in out.splitlines() if line.startswith("numba vs numpy on one cycle"))
    assert verdict.endswith(": agree") and "DIFFER" not in verdict

    # RL: the recorded numbers are what the measurements returned, the ratios are theirs
    rl = res["rl"]
    variants = {"scratch": 16, "scratch_1epoch": 32, "scratch_1epoch_b1024": 32, "scratch_p32": 32,
                "scratch_p32_bf16": 32}  # config.yaml: paths per env
    assert set(rl) == {"env_steps_per_s", "batched_env_only", "batched", "ppo_local", "recurrent_L96_1",
                       "recurrent_smoke", "load_average_before", "load_average_after", "batched_update_profile", "cpu_bfloat16",
                       "matmul_gflop_per_s_all_cores", "cpu_model",
                       *(f"batched_{v}_all_cores" for v in variants)}
    assert rl["cpu_model"] == rl_bench.cpu_model() and rl["cpu_model"] in out
    assert rl["env_steps_per_s"] == pytest.approx(measured["env"][0])
    assert rl["cpu_bfloat16"] == {"amx_tile": th.cpu._is_amx_tile_supported(),
                                  "avx512_bf16": th.cpu._is_avx512_bf16_supported()}
    e = rl["batched_env_only"]
    cores = e["cores"]
    assert e["per_path_loop_P4"] == pytest.approx(measured["per_path"][0])
    assert [e["kernel_limit_1_core"], e["kernel_limit_all_cores"]] == pytest.approx(measured["limit"])
    keys = [f"batched_P{P}_threads{t}" for t in sorted({1, cores}) for P in (4, 32, 99)]
    assert [e[k] for k in keys] == pytest.approx(measured["batched"])
    default, *scratch = measured["pointwise"]
    assert rl["batched"] == pytest.approx(default)
    repeats = rl_bench.SCRATCH_REPEATS
    assert len(scratch) == repeats * len(variants)
    for i, v in enumerate(variants):  # interleaved: v's repeats are every len(variants)-th call; the median kept
        got = scratch[i::len(variants)]
        speeds = [g["ppo_path_steps_per_s"] for g in got]
        median = got[speeds.index(sorted(speeds)[(repeats - 1) // 2])]
        row = dict(rl[f"batched_{v}_all_cores"])
        assert row.pop("repeats_ppo_path_steps_per_s") == pytest.approx(speeds)
        assert row == pytest.approx(dict(median, variant=v))
    for pw in (rl["batched"], *(rl[f"batched_{v}_all_cores"] for v in variants)):
        assert pw["ratio_to_env_only"] == pytest.approx(pw["ppo_path_steps_per_s"] / pw["env_only_path_steps_per_s"])
        shares = pw["share_env_step"] + pw["share_policy_forward_in_rollouts"] + pw["share_ppo_updates"]
        assert shares == pytest.approx(1.0) and 0 < pw["share_env_step"] < 1
    assert rl["batched"]["paths_per_env"] == 2
    for pw in (rl["batched"], *(rl[f"batched_{v}_all_cores"] for v in variants)):  # work x rate / time share
        policy = pw["flop_policy_rollout_per_path_step"] + pw["flop_policy_update_per_path_step"]
        assert pw["flop_policy_per_path_step"] == policy
        assert pw["gflop_per_s_policy"] == pytest.approx(
            policy * pw["ppo_path_steps_per_s"] / (1 - pw["share_env_step"]) / 1e9, rel=1e-9)
        assert pw["gflop_per_s_forecast_in_env_step"] == pytest.approx(
            pw["flop_forecast_per_path_step"] * pw["ppo_path_steps_per_s"] / pw["share_env_step"] / 1e9, rel=1e-9)
    for pw in (rl["batched"], *(rl[f"batched_{v}_all_cores"] for v in variants)):
        # the LSTM alone: n windows forward per path-step in the rollout, n_epochs x n forward and
        # backward in the update, at the per-window times measured; the bound on PPO's share of env-only
        n = 20
        per_path_step = (n * pw["lstm_forward_s_per_rollout_step"] / (pw["paths_per_env"] * n)
                         + pw["n_epochs"] * n * pw["lstm_forward_backward_s_per_minibatch"] / pw["batch_size"])
        L, E = pw["lstm_kernels_path_steps_per_s"], pw["env_only_path_steps_per_s"]
        assert L == pytest.approx(1 / per_path_step, rel=1e-9)
        assert pw["ratio_bound_lstm_kernels"] == pytest.approx(L / (E + L), rel=1e-9)
    for v in variants:
        pw = rl[f"batched_{v}_all_cores"]
        i = next(i for i, line in enumerate(out.splitlines()) if f"pointwise PPO, {v} (" in line)
        row = next(line for line in out.splitlines()[i:] if "LSTM kernels alone" in line)
        assert f"{pw['lstm_kernels_path_steps_per_s']:,.0f}; {pw['ratio_bound_lstm_kernels']:.0%}" in row, row
    mm = rl["matmul_gflop_per_s_all_cores"]
    assert set(mm) == {"float32", "bfloat16"} and min(mm.values()) > 0
    row = next(line for line in out.splitlines() if "2048 x 2048 matrix product" in line)
    assert f"{mm['float32']:.0f} / {mm['bfloat16']:.0f}" in row, row
    forecast = rl["batched"]["flop_forecast_per_path_step"]
    assert e["kernel_limit_gflop_per_s_all_cores"] == pytest.approx(e["kernel_limit_all_cores"] * forecast / 1e9)
    assert e["kernel_limit_gflop_per_s_1_core"] == pytest.approx(e["kernel_limit_1_core"] * forecast / 1e9)
    for v, paths in variants.items():  # the printed row is the record's
        pw = rl[f"batched_{v}_all_cores"]
        assert pw["paths_per_env"] == paths
        row = next(line for line in out.splitlines() if f"pointwise PPO, {pw['variant']} (" in line)
        assert f"{pw['ppo_path_steps_per_s']:,.0f} ({pw['ratio_to_env_only']:.0%} of env-only)" in row, row
        dtype = raw["ablations"]["pointwise"]["variants"][v].get("agent", {}).get("lstm_dtype", "float32")
        assert pw["lstm_dtype"] == dtype and f"LSTM {dtype})" in row, row  # config.yaml's, measured as such
    assert rl["batched_scratch_p32_bf16_all_cores"]["lstm_dtype"] == "bfloat16"
    # one update taken apart: the measured shares, of the profiled variant, summing to the whole
    prof = rl["batched_update_profile"]
    assert prof == pytest.approx(dict(measured["profile"][0], variant=rl_bench.PROFILED_VARIANT))
    parts = [prof[f"share_{k}"] for k in ("lstm_kernels", "dense_layers", "optimizer_step", "other_ops", "outside_torch_ops")]
    assert sum(parts) == pytest.approx(1.0) and all(0 <= p <= 1 for p in parts)
    assert prof["share_lstm_kernels"] > 0 and prof["share_dense_layers"] > 0 and prof["share_optimizer_step"] > 0
    assert prof["minibatches"] == 2 and prof["wall_s"] > 0
    row = next(line for line in out.splitlines() if "one PPO update of" in line)
    assert " / ".join(f"{p:.0%}" for p in parts) in row, row
    local, *recurrent = measured["ppo"]
    assert rl["ppo_local"] == {"agent": "local", "steps_per_s": pytest.approx(local[0]),
                               "env_step_share": pytest.approx(local[1])}
    up_l96, ours_l96, up_smoke, ours_smoke = (r[0] for r in recurrent)
    for key, up, ours in (("recurrent_L96_1", up_l96, ours_l96), ("recurrent_smoke", up_smoke, ours_smoke)):
        assert rl[key] == {"upstream_steps_per_s": pytest.approx(up), "ours_steps_per_s": pytest.approx(ours),
                           "ratio": pytest.approx(ours / up)}
        exp = key.split("_", 1)[1]
        row = next(line for line in out.splitlines() if f"4 envs, {exp}: upstream / ours" in line)
        assert f"{up:,.0f} / {ours:,.0f} ({ours / up:.1f}x)" in row, row
    row = next(line for line in out.splitlines() if "pointwise PPO (lstm" in line)
    assert f"({rl['batched']['ratio_to_env_only']:.0%} of env-only)" in row
    row = next(line for line in out.splitlines() if "batched loop, P = 99" in line)
    assert f"{e['batched_P99_threads1']:,.0f} / {e[f'batched_P99_threads{cores}']:,.0f}" in row, row
    assert out.strip().endswith("wrote results/bench.json")


def test_a_bench_row_is_the_repeat_of_median_speed():
    """Of the interleaved repeats the row keeps the middle one, whole (its shares belong to it)."""
    for speeds in ((900.0, 1400.0, 2000.0), (1400.0, 2000.0, 900.0)):  # the median at another place each
        rows = [{"ppo_path_steps_per_s": v, "share_env_step": v / 10} for v in speeds]
        assert rl_bench.median_repeat(rows) == {"ppo_path_steps_per_s": 1400.0, "share_env_step": 140.0}
    assert rl_bench.median_repeat(rows[1:])["ppo_path_steps_per_s"] == 900.0  # even count: the lower middle


def test_work_per_path_step_counted_by_hand():
    """L96_1: 20 members x 400 RK4 steps x 20 variables x 29 flop = 4,640,000. Per agent-step the
    LSTM's gates over 3 cycles, 3 x 4 x 2 x (36 inputs + 64 hidden) x 64 = 153,600, and two heads
    64 -> 64 -> 64 -> 1, 2 x (4096 + 4096 + 64) = 16,512 each: 186,624, x 20 points = 3,732,480 a
    path-step; the update 3 forward-equivalents per epoch. The MLP per point reads the 3 x 36
    window flattened: heads 2 x (108 x 64 + 4096 + 64) = 22,144 each."""
    from rl.config import load_config
    from conftest import CONFIG
    cfg = load_config(CONFIG, "L96_1")
    cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, n_epochs=2))
    assert rl_bench.work_per_path_step(cfg) == {"flop_forecast_per_path_step": 4_640_000,
                                                "flop_policy_rollout_per_path_step": 3_732_480,
                                                "flop_policy_update_per_path_step": 6 * 3_732_480,
                                                "flop_policy_per_path_step": 7 * 3_732_480}
    mlp = dataclasses.replace(cfg, agent=dataclasses.replace(cfg.agent, point_net="mlp"))
    assert rl_bench.work_per_path_step(mlp)["flop_policy_rollout_per_path_step"] == 20 * 2 * 22_144
    with pytest.raises(ValueError):
        rl_bench.work_per_path_step(load_config(CONFIG, "L63"))
