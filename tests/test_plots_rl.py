"""`enkfrl plot` on a whole smoke run through the CLI: data, training and evaluation figures, the
note when eval.h5 is missing, and a halted agent with a diverging no-DA baseline."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_PNGS = ["spinup_timeseries.png", "spinup_hovmoller.png", "spinup_energy.png", "path0_rmse.png",
             "path0_states.png", "paths_rmse.png"]
TRAIN_PNGS = ["training_curves.png", "pretrain_curve.png"]  # smoke pre-trains (pretrain.epochs 2)
EVAL_PNGS = ["eval_rmse_truth_path0.png", "eval_rmse_enkf_path0.png", "eval_states_path0.png",
             "eval_hovmoller_path0.png"]


def invoke(*args) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def assert_pngs(folder: Path, names: list[str]) -> None:
    for name in names:
        f = folder / name
        assert f.is_file(), f
        head = f.read_bytes()[:8]
        assert head == PNG_MAGIC and f.stat().st_size > 1000, (f, head)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny nets on shared cores: one torch thread (restored afterwards)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, one_torch_thread):
    """cwd = a folder with config.yaml, the smoke data, a trained and evaluated run logs/smoke/p
    and the output of `plot --stage all`."""
    d = tmp_path_factory.mktemp("plots_rl")
    shutil.copy(ROOT / "config.yaml", d / "config.yaml")
    old = os.getcwd()
    os.chdir(d)
    try:
        invoke("generate", "--exp", "smoke")  # both splits: evaluate runs the eval path and the test split
        invoke("precompute", "--exp", "smoke")
        invoke("train", "--exp", "smoke", "--run-id", "p")
        invoke("evaluate", "--exp", "smoke", "--run", "logs/smoke/p")
        d.joinpath("plot_all.txt").write_text(invoke("plot", "--exp", "smoke", "--stage", "all"))
        yield d
    finally:
        os.chdir(old)
        train_log = logging.getLogger("enkfrl.train")
        for h in list(train_log.handlers):  # rl/training/train.py leaves its file handler open
            h.close()
            train_log.removeHandler(h)


def test_plot_all_writes_every_figure(workdir):
    assert_pngs(workdir / "logs/smoke/plots", DATA_PNGS)
    assert_pngs(workdir / "logs/smoke/p/plots", TRAIN_PNGS + EVAL_PNGS)
    out = (workdir / "plot_all.txt").read_text()
    assert out.count("wrote ") == len(DATA_PNGS + TRAIN_PNGS + EVAL_PNGS), out
    assert "note:" not in out


def test_training_figure_counts_path_steps_as_the_log_does(workdir, monkeypatch):
    """The run logs train.total_steps path-steps; TensorBoard holds SB3's agent-steps (model.n
    per path-step for the pointwise agent): the figure's x axis ends at the path-steps."""
    import rl.studies.plots as plots
    from rl.config import load_run_config
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.plot_training(workdir / "logs/smoke/p", workdir / "unused")
    cfg = load_run_config(workdir / "logs/smoke/p/config.yaml")
    assert cfg.agent.kind == "pointwise" and cfg.model.n > 1
    labelled = [ax for ax in figures[0].axes if ax.get_xlabel()]  # the bottom row
    assert len(labelled) == 2 and all("path-steps" in ax.get_xlabel() for ax in labelled)
    for ax in figures[0].axes:
        assert ax.get_xlim()[1] == pytest.approx(cfg.train.total_steps * 1.02, rel=0.1)


def test_plot_all_without_eval_h5_notes_it(workdir):
    run = workdir / "logs/smoke/noeval"
    shutil.copytree(workdir / "logs/smoke/p", run, ignore=shutil.ignore_patterns("eval.h5", "plots"))
    os.utime(run / "config.yaml")  # the newest run: plot picks it without --run
    try:
        out = invoke("plot", "--exp", "smoke", "--stage", "all")
        assert "note: no evaluation figures" in out and "evaluate --run" in out
        assert_pngs(run / "plots", TRAIN_PNGS)
        assert not list((run / "plots").glob("eval_*.png"))
        result = CliRunner().invoke(main, ["plot", "--exp", "smoke", "--stage", "eval", "--run", str(run)])
        assert result.exit_code == 1 and "eval.h5 not found" in result.output
    finally:
        shutil.rmtree(run)


def test_plot_eval_with_a_halted_agent(workdir):
    """rl halts after 20 of 60 cycles (NaN afterwards) and no_da is far off: the halt is marked,
    the truth RMSE goes to a log scale, metrics.json is optional."""
    run = workdir / "logs/smoke/halted"
    run.mkdir()
    for f in ("config.yaml", "eval.h5"):
        shutil.copy(workdir / "logs/smoke/p" / f, run / f)
    with h5py.File(run / "eval.h5", "r+") as f:
        rl = f["path_0/rl"]
        for key in rl:
            d = rl[key][()]
            d[21:] = np.nan
            rl[key][...] = d
        rl.attrs["cycles_completed"] = 20
        f["path_0/no_da/rmse_vs_truth"][...] = f["path_0/no_da/rmse_vs_truth"][()] * 50
    try:
        out = invoke("plot", "--exp", "smoke", "--stage", "eval", "--run", str(run))
        assert out.count("wrote ") == len(EVAL_PNGS)
        assert_pngs(run / "plots", EVAL_PNGS)
    finally:
        shutil.rmtree(run)
