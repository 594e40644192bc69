"""The readme's commands on the smoke experiment, in order and with no flag but --exp —
generate, precompute, train, evaluate, plot — in a copy of the repository (its files as git
tracks them, committed in a fresh repository): every command succeeds, evaluate finds the test
split that generate and precompute made, and afterwards git sees nothing changed or added (the
commands write only the ignored data/ and logs/; results/ changes only when asked)."""
from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from conftest import ROOT

CARD = ["generate", "precompute", "train", "evaluate", "plot"]


def git(repo: Path, *args: str) -> str:
    return subprocess.check_output(["git", "-c", "user.name=test", "-c", "user.email=test@example.org",
                                    *args], cwd=repo, text=True)


def copy_of_repository(dest: Path) -> Path:
    """dest holding every file git tracks here (as it is in the working tree), committed."""
    listed = subprocess.check_output(["git", "ls-files", "-z"], cwd=ROOT, text=True).split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "the repository as the test found it")
    return dest


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    """The copy after the card's commands: {command: its output}."""
    repo = copy_of_repository(tmp_path_factory.mktemp("card"))
    outputs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)  # the commands read config.yaml and write data/, logs/, results/ relative to here
        for command in CARD:
            result = CliRunner().invoke(main, [command, "--exp", "smoke"])
            assert result.exit_code == 0, (command, result.output, result.exception)
            outputs[command] = result.output
    train_log = logging.getLogger("enkfrl.train")
    for h in list(train_log.handlers):  # the training's file handler points into the copy
        h.close()
        train_log.removeHandler(h)
    return repo, outputs


def test_the_card_runs_in_order(card):
    repo, outputs = card
    run = [d for d in (repo / "logs/smoke").iterdir() if (d / "run.json").is_file()]
    assert len(run) == 1
    assert (run[0] / "final_model.safetensors").is_file() and (run[0] / "metrics.json").is_file()
    assert "test" in outputs["evaluate"].lower()  # the test split made by generate/precompute is measured
    assert (repo / "data/smoke/test_paths.h5").is_file()
    assert (run[0] / "plots/training_curves.png").is_file() and any((repo / "logs/smoke/plots").glob("*.png"))


def test_the_card_leaves_git_clean(card):
    repo, _ = card
    assert git(repo, "status", "--porcelain") == ""
