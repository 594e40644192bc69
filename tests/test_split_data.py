"""The test split: its config (test_split), its own spin-up and reference runs (made by
`enkfrl generate/precompute` beside the training data), determinism and staleness."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cli.common import read_split
from enkf import config as C
from enkf import datafiles
from rl.config import experiment_names, load_config
from enkf.io import DataError
from enkf.precompute import read_paths
from enkf.spinup import read_spinup

from conftest import CONFIG, write_config
from test_pipeline import assert_one_line_error, cli, ok, read_h5


def split_files(root, split):
    prefix = "" if split == "train" else "test_"
    return [root / f"data/smoke/{prefix}spinup.h5", root / f"data/smoke/{prefix}paths.h5"]


def make(split, config="config.yaml", *record):
    ok(cli("generate", "--exp", "smoke", "--config", config, "--split", split))
    ok(cli("precompute", "--exp", "smoke", "--config", config, "--split", split, *record))


@pytest.mark.parametrize("experiment", experiment_names(CONFIG))
def test_test_split_config_is_valid_and_differs_only_in_seed_and_paths(experiment):
    """test_split: master seed = test.seed, n_paths = test.n_paths, eval path 0, every other
    section unchanged; its data hash differs from the training data's."""
    cfg = load_config(CONFIG, experiment)
    t = C.test_split(cfg)
    assert t.seed == cfg.test.seed != cfg.seed
    assert t.paths.n_paths == cfg.test.n_paths and t.paths.eval_path == 0
    assert t.paths.train_paths == [1, cfg.test.n_paths - 1]
    a, b = cfg.to_dict(), t.to_dict()
    for k in a:
        if k not in ("seed", "paths"):
            assert a[k] == b[k], k
    assert {k: v for k, v in a["paths"].items() if k not in ("n_paths", "eval_path", "train_paths")} \
        == {k: v for k, v in b["paths"].items() if k not in ("n_paths", "eval_path", "train_paths")}
    assert datafiles.data_hash(t) != datafiles.data_hash(cfg)
    assert C.split_config(cfg, "train") is cfg


@pytest.mark.parametrize("test_block, key", [
    ({"seed": 0}, "test.seed: must differ from the master seed"),
    ({"seed": -1}, "test.seed: must be >= 0"),
    ({"n_paths": 1}, "test.n_paths"),
    ({"n_paths": 20000}, "test.n_paths"),
    ({"n_paths": 2.5}, "test.n_paths: expected an integer"),
    ({"size": 3}, "test.size: unknown key"),
])
def test_bad_test_block_is_a_one_line_config_error(tmp_path, test_block, key):
    path = write_config(tmp_path / "c.yaml", "smoke", {"test": test_block})
    with pytest.raises(C.ConfigError) as e:
        load_config(path, "smoke")
    assert key in str(e.value) and "\n" not in str(e.value)


def test_test_split_shares_no_state_with_the_training_spinup(in_tmp):
    """The test spin-up is another trajectory: no test start state and no state of a test path's
    truth lies on the training spin-up (every one of its states recorded), while the training
    paths' truth does (the overlap the test split avoids)."""
    write_config(in_tmp / "c.yaml", "smoke", {"spinup": {"thin": 1}})
    make("train", "c.yaml")
    make("test", "c.yaml")
    train_sp, train_pa = (read_h5(f) for f in split_files(in_tmp, "train"))
    test_sp, test_pa = (read_h5(f) for f in split_files(in_tmp, "test"))
    trajectory = train_sp["thinned"][0]  # all spin-up states, (steps, n)
    assert trajectory.shape[0] == 20000
    assert test_sp["/"]["seed"] == 1000 and train_sp["/"]["seed"] == 0
    assert not np.allclose(test_sp["x0"][0], train_sp["x0"][0])

    def min_distance(states):
        states = states.reshape(-1, states.shape[-1])
        return min(np.sqrt(((trajectory - s) ** 2).sum(axis=1)).min() for s in states)

    # the training paths' truth lies on the training spin-up (truth of cycle 0 of a start step
    # inside the recorded range is a recorded state) ...
    cfg = load_config(in_tmp / "c.yaml", "smoke")
    first = train_pa["truth"][0][:, 0]  # cycle-0 truth of every training path, (P, n)
    inside = train_sp["start_steps"][0] + cfg.steps_per_cycle <= 20000
    assert inside.any() and min_distance(first[inside]) < 1e-9
    # ... no state of the test split does
    assert min_distance(test_sp["starts"][0]) > 1e-3
    assert min_distance(test_pa["truth"][0]) > 1e-3


def test_test_split_files_are_byte_identical_on_rerun_and_leave_training_files_alone(in_tmp):
    make("train")
    train_bytes = [f.read_bytes() for f in split_files(in_tmp, "train")]
    make("test", "config.yaml", "--record")
    first = [f.read_bytes() for f in split_files(in_tmp, "test")]
    make("test")
    assert [f.read_bytes() for f in split_files(in_tmp, "test")] == first
    assert [f.read_bytes() for f in split_files(in_tmp, "train")] == train_bytes
    cfg = load_config("config.yaml", "smoke")
    scfg, spin, paths = read_split(cfg, "test")
    assert spin["starts"].shape == (3, 8) and paths["truth"].shape == (3, 60, 8)
    record = json.loads((in_tmp / "results/data/smoke_test.json").read_text())
    assert record["split"] == "test" and record["n_paths"] == 3
    assert record["provenance"]["config_hash"] == datafiles.data_hash(scfg) == record["data_hash"]
    assert record["provenance"]["config"]["seed"] == 1000


def test_stale_test_split_is_refused_with_the_test_command(in_tmp):
    """Test data made with another test.seed or test.n_paths: readers and precompute refuse,
    naming the test file and the command that remakes it; the training data stay valid (the test
    block is not part of their hash)."""
    make("train")
    make("test")
    for change in ({"seed": 7}, {"n_paths": 4}):
        path = write_config(in_tmp / "other.yaml", "smoke", {"test": change})
        cfg = load_config(path, "smoke")
        with pytest.raises(DataError, match=r"test_spinup\.h5 was made with other settings.*enkfrl generate --exp smoke`"):
            read_split(cfg, "test")
        read_split(cfg, "train")  # unchanged
        line = assert_one_line_error(cli("precompute", "--exp", "smoke", "--config", str(path),
                                         "--split", "test"), code=1)
        assert "test_spinup.h5" in line and "enkfrl generate --exp smoke`" in line
    # a test spin-up is never taken for the training one, nor the other way round
    cfg = load_config("config.yaml", "smoke")
    with pytest.raises(DataError):
        read_spinup(cfg, datafiles.spinup_file("data/smoke", "test"))
    with pytest.raises(DataError):
        read_paths(C.test_split(cfg), datafiles.paths_file("data/smoke", "train"))


def test_missing_test_data_says_what_to_run(in_tmp):
    make("train")
    line = assert_one_line_error(cli("precompute", "--exp", "smoke", "--split", "test"), code=1)
    assert "test_spinup.h5 not found" in line and "enkfrl generate --exp smoke`" in line
    with pytest.raises(DataError, match=r"test_spinup\.h5 not found.*enkfrl generate --exp smoke`"):
        read_split(load_config("config.yaml", "smoke"), "test")
