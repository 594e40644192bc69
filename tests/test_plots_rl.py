"""`enkfrl plot` on a whole smoke run through the CLI: data, training and evaluation figures, the
note when eval.h5 is missing, and a halted agent with a diverging no-DA baseline.

Every figure is inspected as matplotlib drew it (Figure.savefig is wrapped to describe the figure
first): its curves are the run's numbers, a halt is marked where the agent halted, the truth RMSE
goes to a log scale when no-DA diverges, and neither happens when nothing halts or diverges."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import h5py
import matplotlib.figure
import numpy as np
import pytest
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cli.main import main
from conftest import copy_smoke_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_PNGS = ["spinup_timeseries.png", "spinup_hovmoller.png", "spinup_energy.png", "path0_rmse.png",
             "path0_states.png", "paths_rmse.png"]
TRAIN_PNGS = ["training_curves.png", "clone_curve.png"]  # smoke clones (pretrain.epochs 2)
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
        assert f.read_bytes()[:8] == PNG_MAGIC, f


def describe(fig) -> dict:
    """What a figure shows: per axes its title, y scale, curves (label, x, y), the x of its vertical
    marker lines and its texts; the figure's title and legend labels."""
    axes = []
    for ax in fig.axes:
        curves, vlines = [], []
        for line in ax.get_lines():
            x = np.asarray(line.get_xdata(), float)
            y = np.asarray(line.get_ydata(), float)
            if len(x) == 2 and x[0] == x[1] and list(y) == [0.0, 1.0]:  # axvline: axes-fraction y
                vlines.append(float(x[0]))
            else:
                curves.append((line.get_label(), x, y))
        axes.append({"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "yscale": ax.get_yscale(), "curves": curves,
                     "vlines": vlines, "texts": [t.get_text() for t in ax.texts]})
    legends = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    return {"axes": axes, "suptitle": fig._suptitle.get_text() if fig._suptitle else "", "legend": legends}


@pytest.fixture
def figures(monkeypatch) -> dict:
    """file name -> describe(figure) of every figure saved while the test runs."""
    seen = {}
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        seen[Path(fname).name] = describe(fig)
        return save(fig, fname, *args, **kwargs)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


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
    """A folder of this module's own with config.yaml, the smoke data (a copy of the session's),
    a trained and evaluated run logs/smoke/p and the output of `plot --stage all`."""
    d = copy_smoke_data(tmp_path_factory, tmp_path_factory.mktemp("plots_rl"))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(d)
            invoke("train", "--exp", "smoke", "--run-id", "p")
            invoke("evaluate", "--exp", "smoke", "--run", "logs/smoke/p")
        yield d
    finally:
        train_log = logging.getLogger("enkfrl.train")
        for h in list(train_log.handlers):  # rl/training/train.py leaves its file handler open
            h.close()
            train_log.removeHandler(h)


@pytest.fixture
def run(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    return workdir / "logs/smoke/p"


def axis(fig: dict, title_start: str) -> dict:
    found = [a for a in fig["axes"] if a["title"].startswith(title_start)]
    assert len(found) == 1, [a["title"] for a in fig["axes"]]
    return found[0]


def curve(ax: dict, label_start: str):
    found = [(x, y) for label, x, y in ax["curves"] if label.startswith(label_start)]
    assert len(found) == 1, [label for label, *_ in ax["curves"]]
    return found[0]


def test_plot_all_writes_every_figure(run, figures):
    out = invoke("plot", "--exp", "smoke", "--stage", "all")
    assert out.count("wrote ") == len(DATA_PNGS + TRAIN_PNGS + EVAL_PNGS), out
    assert "note:" not in out
    assert_pngs(run.parents[0] / "plots", DATA_PNGS)
    assert_pngs(run / "plots", TRAIN_PNGS + EVAL_PNGS)
    assert set(figures) == set(DATA_PNGS + TRAIN_PNGS + EVAL_PNGS)
    # training curves: the evaluation panel draws the logged eval RMSE against path-steps (the
    # unit of the run's log; TensorBoard holds SB3's agent-steps, model.n per path-step for the
    # pointwise agent), the clone figure the cloning history of pretrain.json
    ea = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    logged = [(e.step, e.value) for e in ea.Scalars("eval/rmse_vs_enkf")]
    n = 8  # smoke: model.n, pointwise agent
    x, y = curve(axis(figures["training_curves.png"], "evaluation on path 0"), "RMSE vs EnKF")
    np.testing.assert_array_equal(x, [s / n for s, _ in logged])
    assert {a["xlabel"] for a in figures["training_curves.png"]["axes"] if a["xlabel"]} == \
        {"path-steps (cycles, summed over paths)"}
    np.testing.assert_allclose(y, [v for _, v in logged], rtol=1e-6)
    history = json.loads((run / "pretrain.json").read_text())
    pre = figures["clone_curve.png"]["axes"][0]
    np.testing.assert_allclose(curve(pre, "training paths")[1], history["train_rmse"], rtol=1e-6)
    np.testing.assert_allclose(curve(pre, "held-out paths")[1], history["val_rmse"], rtol=1e-6)
    # evaluation: every actor's curve is its eval.h5 series, its legend its metrics.json mean
    metrics = json.loads((run / "metrics.json").read_text())["0"]
    fig = figures["eval_rmse_truth_path0.png"]
    with h5py.File(run / "eval.h5", "r") as f:
        for actor, label in (("rl", "RL agent"), ("copy_obs", "copy obs"), ("no_da", "no DA")):
            x, y = curve(fig["axes"][0], label)
            np.testing.assert_array_equal(y, f[f"path_0/{actor}/rmse_vs_truth"][()])
            assert f"(mean {metrics[actor]['rmse_vs_truth']:.3f}" in next(t for t in fig["legend"] if t.startswith(label))


def halt_and_diverge(run: Path, dest: Path, halt_at: int | None, no_da_factor: float) -> Path:
    """A copy of the run's config.yaml and eval.h5 where rl halts after `halt_at` cycles (NaN
    afterwards; None: it completes) and no_da's RMSE vs truth is scaled by no_da_factor."""
    dest.mkdir()
    for f in ("config.yaml", "eval.h5"):
        shutil.copy(run / f, dest / f)
    with h5py.File(dest / "eval.h5", "r+") as f:
        rl = f["path_0/rl"]
        if halt_at is not None:
            for key in rl:
                d = rl[key][()]
                d[halt_at + 1:] = np.nan
                rl[key][...] = d
            rl.attrs["cycles_completed"] = halt_at
        for actor in f["path_0"]:
            if isinstance(f["path_0"][actor], h5py.Group):
                assert f["path_0"][actor].attrs["cycles_completed"] == (60 if actor != "rl" else halt_at or 60)
        f["path_0/no_da/rmse_vs_truth"][...] = f["path_0/no_da/rmse_vs_truth"][()] * no_da_factor
    return dest


def test_plot_eval_with_a_halted_agent(run, tmp_path, figures):
    """rl halts after 20 of 60 cycles (NaN afterwards) and no_da is far off: the halt is marked
    (a vertical line at cycle 20 and a label in three figures), the truth RMSE goes to a log
    scale, metrics.json is optional."""
    halted = halt_and_diverge(run, tmp_path / "halted", halt_at=20, no_da_factor=50)
    out = invoke("plot", "--exp", "smoke", "--stage", "eval", "--run", str(halted))
    assert out.count("wrote ") == len(EVAL_PNGS)
    assert_pngs(halted / "plots", EVAL_PNGS)
    truth = figures["eval_rmse_truth_path0.png"]
    ax = truth["axes"][0]
    assert ax["yscale"] == "log" and "log scale" in ax["ylabel"]
    assert ax["vlines"] == [20.0] and ax["texts"] == ["rl halts"]
    assert any(t.startswith("RL agent") and "halted after 20/60" in t for t in truth["legend"])
    enkf = figures["eval_rmse_enkf_path0.png"]["axes"][0]
    assert enkf["yscale"] == "linear" and enkf["vlines"] == [20.0] and enkf["texts"] == ["rl halts"]
    states = figures["eval_states_path0.png"]
    assert all(a["vlines"] == [20.0] for a in states["axes"]) and "rl halted after cycle 20" in states["suptitle"]
    assert "halted after 20/60, grey after" in figures["eval_hovmoller_path0.png"]["axes"][0]["title"]


def test_plot_eval_without_a_halt_or_divergence_marks_nothing(run, tmp_path, figures):
    """The same figures when rl completes the path and no_da stays at the EnKF's level: a linear
    scale, no halt marker, no halt in any label."""
    calm = halt_and_diverge(run, tmp_path / "calm", halt_at=None, no_da_factor=1.0)
    with h5py.File(calm / "eval.h5", "r+") as f:  # no_da at the stored EnKF's error
        f["path_0/no_da/rmse_vs_truth"][...] = f["path_0/enkf_rmse_vs_truth"][()]
    invoke("plot", "--exp", "smoke", "--stage", "eval", "--run", str(calm))
    truth = figures["eval_rmse_truth_path0.png"]
    assert truth["axes"][0]["yscale"] == "linear"
    for name in EVAL_PNGS:
        fig = figures[name]
        assert all(not a["vlines"] and not a["texts"] for a in fig["axes"] if a["title"] or a["curves"]), name
        assert not any("halt" in t for t in fig["legend"] + [fig["suptitle"]] + [a["title"] for a in fig["axes"]]), name


def test_plot_all_without_eval_h5_notes_it(run, workdir):
    noeval = workdir / "logs/smoke/noeval"
    shutil.copytree(run, noeval, ignore=shutil.ignore_patterns("eval.h5", "plots"))
    try:
        newest = max(p.stat().st_mtime for p in (workdir / "logs/smoke").glob("*/config.yaml"))
        os.utime(noeval / "config.yaml", (newest + 10, newest + 10))
        info = json.loads((noeval / "run.json").read_text())  # the newest run by run.json: plot picks it without --run
        (noeval / "run.json").write_text(json.dumps(dict(info, created="9999-12-31T23:59:59+0000")))
        out = invoke("plot", "--exp", "smoke", "--stage", "all")
        assert "note: no evaluation figures" in out and "evaluate --run" in out
        assert_pngs(noeval / "plots", TRAIN_PNGS)
        assert not list((noeval / "plots").glob("eval_*.png"))
        result = CliRunner().invoke(main, ["plot", "--exp", "smoke", "--stage", "eval", "--run", str(noeval)])
        assert result.exit_code == 1 and "eval.h5 not found" in result.output
    finally:
        shutil.rmtree(noeval)
