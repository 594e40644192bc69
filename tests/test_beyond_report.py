"""The beyond-imitation record (rl/studies/beyond.py, `enkfrl beyond`): hand-made evaluated run
folders of a tiny beyond study and a hand-made filters record -> every variant's RL error vs the
truth (mean over seeds), its ratios to the best classical filter and to the stored filter, the
headline over the RL variants only (the ceiling's supervised map is not RL), the variants not run,
and one-line errors for a missing or foreign filters record. Numbers are chosen so that a ratio
on the wrong filter, a ceiling counted as RL or a mean over the wrong axis changes the result."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from conftest import CONFIG
from enkf.io import DataError
from rl.config import load_ablation
from rl.studies.beyond import beyond_record, markdown_table
from test_report import ALL, CURVES, SCRATCH, SEEDS, make_run

STUDY = "beyond_smoke"
SCALE = {"truth_stored": 0.8, "truth_tuned": 0.85, "next_obs": 1.0, "ceiling": 0.7, "sac_tuned": 0.9}  # the runs' RL errors vs truth, x SEEDS'
BEST, STORED = 0.4, 0.5
TUNED = {"method": "etkf", "inflation": 1.2, "inflation_stage": "analysis", "centre_perturbations": False,
         "rotate": False, "loc_radius": None}


def write_config(folder: Path) -> Path:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["ablations"] = {STUDY: {
        "question": "Can RL reach the best filter of the smoke ensemble?", "measure": "train",
        "experiments": ["smoke"], "seeds": [0, 1], "overrides": {"pretrain": {"epochs": 0}},
        "variants": {"truth_stored": {"reward": {"target": "truth"}},
                     "next_obs": {"reward": {"target": "next_obs"}},
                     "ceiling": {"pretrain": {"epochs": 1, "target": "truth"}, "reward": {"target": "truth"}},
                     "truth_tuned": {"reward": {"target": "truth"}, "env": {"ensemble_filter": TUNED}},
                     "sac_tuned": {"reward": {"target": "truth"}, "env": {"ensemble_filter": TUNED}, "train": {"algo": "sac"}},
                     "td3_tuned": {"reward": {"target": "truth"}, "env": {"ensemble_filter": TUNED}, "train": {"algo": "td3"}},
                     "correlation_tuned": {"reward": {"target": "truth"}, "env": {"features": [
                         "forecast_mean", "obs", "innovation", "spread", "correlation"]}}}}}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def filters_record(experiment="smoke") -> dict:
    row = lambda method, infl, loc, m, div=0: {  # noqa: E731
        "method": method, "inflation": infl, "inflation_stage": "analysis", "loc_radius": loc,
        "rmse_vs_truth": {"mean": m, "std": 0.01}, "diverged_paths": div, "blown_up_paths": 0, "wall_s": 1.0}
    rows = [row("letkf", 1.2, 4.0, BEST), row("etkf", 1.2, None, 0.42), row("etkf", 1.05, None, 0.3, div=2),
            row("enkf", 5.0, None, STORED)]
    return {"experiment": experiment, "best": {k: rows[0][k] for k in rows[0] if k not in ("blown_up_paths", "wall_s")},
            "stored": dict(rows[3], inflation_stage="forecast"), "filters": rows,
            "provenance": {"config_hash": "abc"}}


@pytest.fixture
def study_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    cfg_path = write_config(tmp_path)
    _, runs = load_ablation(cfg_path, STUDY)
    for r in runs:
        if r.variant not in SCALE:
            continue  # correlation_tuned, td3_tuned: not run
        actors = ALL if r.variant == "ceiling" else SCRATCH
        folder = make_run(tmp_path / "logs" / "smoke" / f"{r.variant}_s{r.seed}", r.cfg, r.seed, actors, CURVES[r.seed],
                          command=f"enkfrl train --exp smoke --study {STUDY} --variant {r.variant} --seed {r.seed}")
        metrics = json.loads((folder / "metrics.json").read_text())
        for p in metrics["test"]["paths"].values():
            p["rl"]["rmse_vs_truth"] *= SCALE[r.variant]
        over = metrics["test"]["over_paths"]["rl"]["rmse_vs_truth"]
        for k in over:
            over[k] *= SCALE[r.variant]
        (folder / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "results" / "filters").mkdir(parents=True)
    (tmp_path / "results" / "filters" / "smoke.json").write_text(json.dumps(filters_record()))
    return tmp_path


def rl_truth(variant: str) -> float:
    return float(np.mean([SEEDS[s]["rl"][1] * SCALE[variant] for s in (0, 1)]))


def test_every_variant_its_ratios_and_a_headline_over_the_rl_variants_only(study_dir):
    rec = beyond_record(STUDY, study_dir / "config.yaml", Path("logs"), Path("results/filters/smoke.json"), "cmd")
    assert rec["experiment"] == "smoke" and rec["not_run"] == ["td3_tuned", "correlation_tuned"]
    assert list(rec["variants"]) == ["truth_stored", "truth_tuned", "next_obs", "ceiling", "sac_tuned"]
    assert rec["variants"]["sac_tuned"]["algo"] == "sac" and rec["variants"]["truth_stored"]["algo"] == "ppo"
    for v, e in rec["variants"].items():
        assert e["seeds"] == [0, 1]
        assert e["rl"]["mean"] == pytest.approx(rl_truth(v), rel=1e-12)
        assert e["per_seed_rl"] == pytest.approx([SEEDS[s]["rl"][1] * SCALE[v] for s in (0, 1)])
        assert e["ratio_to_best_filter"] == pytest.approx(rl_truth(v) / BEST)
        assert e["ratio_to_stored_filter"] == pytest.approx(rl_truth(v) / STORED)
    sup = np.mean([SEEDS[s]["supervised"][1] for s in (0, 1)])
    assert rec["variants"]["ceiling"]["supervised"]["mean"] == pytest.approx(sup)
    assert rec["variants"]["ceiling"]["supervised_ratio_to_best_filter"] == pytest.approx(sup / BEST)
    assert rec["variants"]["next_obs"]["reward_target"] == "next_obs"
    h = rec["headline"]  # the ceiling (0.7x) is lower, but it is no RL analysis
    assert h["best_rl_variant"] == "truth_stored"
    assert h["ratio_to_best_filter"] == pytest.approx(rl_truth("truth_stored") / BEST)  # 1.15
    assert (h["goal_at_most_1.0_best_filter"], h["milestone_at_most_1.2_best_filter"],
            h["milestone_at_most_0.8_stored_filter"], h["no_truth_below_stored_filter"]) == (False, True, False, False)
    assert rec["filters"]["best_global"]["method"] == "etkf" and rec["filters"]["best_global"]["inflation"] == 1.2
    table = markdown_table(rec)
    steps = max(SEEDS[s]["train_steps"] for s in (0, 1))  # the longest seed's
    assert f"| truth_stored | truth | stored | {steps:,} | 2 | {rl_truth('truth_stored'):.4f}" in table
    assert "| ceiling: the cloned map alone | (regression on the truth) | stored | 0 | 2 |" in table


def test_the_learners_figure_draws_ppo_sac_and_td3_of_one_env_and_reward(study_dir, monkeypatch):
    """PPO (truth_tuned) and SAC (sac_tuned, the run there is) on one figure, their curves the eval
    curves of the records against path-steps; no figure while neither SAC nor TD3 has run."""
    from rl.studies import plots
    rec = beyond_record(STUDY, study_dir / "config.yaml", Path("logs"), Path("results/filters/smoke.json"), "cmd")
    drawn = {}

    def keep(fig, out):
        drawn.update({line.get_label(): line.get_xydata() for line in fig.axes[0].get_lines()})
        drawn["xlabel"] = fig.axes[0].get_xlabel()
        return out
    monkeypatch.setattr(plots, "_write_figure", keep)
    assert plots.plot_learner_curves(rec, Path("learners.png")) == Path("learners.png")
    curves = {label: xy for label, xy in drawn.items() if "seeds)" in label}
    assert sorted(curves) == ["PPO (truth_tuned, 2 seeds)", "SAC (sac_tuned, 2 seeds)"]
    for label, v in (("PPO (truth_tuned, 2 seeds)", "truth_tuned"), ("SAC (sac_tuned, 2 seeds)", "sac_tuned")):
        steps, ys = plots._seed_curves(rec["fit_records"][v], 2)
        np.testing.assert_allclose(curves[label], np.column_stack([steps, ys.mean(0)]))
    assert drawn["xlabel"].startswith("path-steps")
    del rec["fit_records"]["sac_tuned"]
    drawn.clear()
    assert plots.plot_learner_curves(rec, Path("learners.png")) is None and not drawn


def test_a_missing_or_foreign_filters_record_is_one_line(study_dir):
    with pytest.raises(DataError, match=r"not found: run `enkfrl filters --exp smoke --record` first"):
        beyond_record(STUDY, study_dir / "config.yaml", Path("logs"), Path("results/filters/none.json"), "cmd")
    Path("results/filters/smoke.json").write_text(json.dumps(filters_record("L96_1")))
    with pytest.raises(DataError, match="record of 'L96_1', not 'smoke'"):
        beyond_record(STUDY, study_dir / "config.yaml", Path("logs"), Path("results/filters/smoke.json"), "cmd")


def test_the_command_writes_logs_unless_asked_to_record(study_dir):
    runner = CliRunner()
    res = runner.invoke(main, ["beyond", "--study", STUDY, "--config", "config.yaml"])
    assert res.exit_code == 0, res.output
    assert "not run yet: td3_tuned, correlation_tuned" in res.output
    assert Path("logs/beyond/smoke.json").exists() and Path("logs/beyond/smoke_beyond_curves.png").stat().st_size > 0
    assert Path("logs/beyond/smoke_beyond_learners.png").stat().st_size > 0  # a SAC run is in the record
    assert not Path("results/beyond").exists()
    res = runner.invoke(main, ["beyond", "--study", STUDY, "--config", "config.yaml", "--record"])
    assert res.exit_code == 0, res.output
    rec = json.loads(Path("results/beyond/smoke.json").read_text())
    assert rec["headline"]["best_rl_variant"] == "truth_stored" and Path("docs/smoke_beyond_curves.png").exists()
    assert rec["study"] == STUDY and rec["provenance"]["config"]["study"] == STUDY


def test_the_tuned_ensembles_of_config_yaml_are_the_best_global_filters_of_the_records():
    """config.yaml's beyond studies run their tuned variants with the best global filter of
    results/filters/<E>.json: a filters record made again with another minimum shows here."""
    from rl.config import ablation_names
    from rl.studies.beyond import best_global, read_filters
    studies = [q for q in ablation_names(CONFIG) if q.startswith("beyond_")]
    assert studies
    for q in studies:
        _, runs = load_ablation(CONFIG, q)
        tuned = [r for r in runs if r.cfg.env.ensemble_filter is not None]
        assert tuned, q
        best = best_global(read_filters(CONFIG.parent / "results" / "filters" / f"{runs[0].experiment}.json",
                                        runs[0].experiment))
        for r in tuned:
            f = r.cfg.env.ensemble_filter
            assert (f.method, f.inflation_stage, f.inflation, f.loc_radius) == \
                (best["method"], best["inflation_stage"], best["inflation"], best["loc_radius"]), (q, r.variant)
            assert (f.centre_perturbations, f.rotate) == (r.cfg.filter.centre_perturbations, r.cfg.filter.rotate)
