"""Bad input, kill -9, races and tampering, tried as a user would on the smoke experiment.

CASES is the list of bad inputs: each runs a command through the CLI on a copy of a finished
smoke run and its data, and must give the stated exit code and, on failure, exactly one line on
stderr (no traceback) containing the expected text. The kill tests run the CLI in a subprocess
that the ENKFRL_FAULT hook (enkf/io.py atomic_path) kills with SIGKILL just before it renames a
named file into place, then resume and evaluate.

What every case and kill test showed the user is recorded; with ENKFRL_FAULTS_JSON=<file> set,
the module writes it there (results/faults.json, rendered into the readme by
scripts/fill_readme.py):
    ENKFRL_FAULTS_JSON=results/faults.json python -m pytest tests/test_faults.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from rl.config import load_config
from enkf.io import FAULT_ENV, provenance

from test_env import ROOT, one_torch_thread, smoke_workdir  # noqa: F401

RUN = "logs/smoke/base"
OBSERVED: list[dict] = []
T_START = time.perf_counter()


# ---- helpers ------------------------------------------------------------------------------------
def invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def cli_subprocess(args: list[str], cwd: Path, fault: str | None = None, timeout: float = 300):
    """`enkfrl *args` in its own process (this worktree's code), optionally with a kill point."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def record(case: str, fault: str, command: str, exit_code: int, message: str) -> None:
    OBSERVED.append({"case": case, "fault": fault, "command": command, "exit_code": exit_code,
                     "message": message})


def first_line_with(text: str, part: str) -> str:
    """The first line of text containing part, without a log line's time stamp."""
    line = next((line.strip() for line in text.splitlines() if part in line), "")
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", line)


def complete_files(folder: Path) -> list[Path]:
    """Files under their final names (not temporaries)."""
    return [p for p in folder.rglob("*") if p.is_file() and ".tmp-" not in p.name]


def assert_nothing_corrupt(folder: Path) -> None:
    """No file that looks finished is broken: every zip, JSON, HDF5 and npz reads whole."""
    for f in complete_files(folder):
        if f.suffix == ".zip":
            with zipfile.ZipFile(f) as z:
                assert z.testzip() is None, f
        elif f.suffix == ".json":
            json.loads(f.read_text())
        elif f.suffix == ".h5":
            with h5py.File(f, "r") as h:
                h.visit(lambda name: None)
        elif f.suffix == ".npz":
            with np.load(f) as z:
                [z[k] for k in z.files]


def make_read_only(folder: Path, request) -> None:
    """chmod 555, and chattr +i where we run as root (root ignores the mode); skip if neither
    makes the folder unwritable here."""
    folder.chmod(0o555)
    request.addfinalizer(lambda: folder.chmod(0o755))
    probe = folder / "probe"
    try:
        probe.touch()
    except OSError:
        return
    probe.unlink()
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)]).returncode == 0:
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(folder)]))
        try:
            probe.touch()
        except OSError:
            return
        probe.unlink()
    pytest.skip("cannot make a read-only folder here")


def set_h5(file: str, dataset: str, index: tuple, value: float) -> Callable:
    def prepare(d: Path, request) -> None:
        with h5py.File(d / file, "r+") as f:
            f[dataset][index] = value
    return prepare


def write_yaml(name: str, text: str) -> Callable:
    def prepare(d: Path, request) -> None:
        (d / name).write_text(text)
    return prepare


def edit_config(name: str, edit: Callable[[dict], None]) -> Callable:
    def prepare(d: Path, request) -> None:
        raw = yaml.safe_load((d / "config.yaml").read_text())
        edit(raw)
        (d / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return prepare


def smoke_block(raw: dict) -> dict:
    raw["experiments"]["smoke"] = raw["experiments"]["smoke"] or {}
    return raw["experiments"]["smoke"]


def no_new_run(d: Path) -> None:
    assert [p.name for p in (d / "logs/smoke").iterdir()] == ["base"], "a run folder was made"


def nan_metric(d: Path, request) -> None:
    import rl.training.evaluate
    summarise = rl.training.evaluate.summarise
    calls = []

    def with_nan(ep, *args):
        s = summarise(ep, *args)
        calls.append(1)
        if len(calls) == 1:  # the first actor is the policy, "rl"
            s["rmse_norm_vs_enkf"] = float("nan")
        return s
    request.getfixturevalue("monkeypatch").setattr(rl.training.evaluate, "summarise", with_nan)


def nan_weights(d: Path, request) -> None:
    """final_model.zip with NaN weights, written (and recorded) the way the run writes models."""
    from rl.agents.policy import algo_class
    from rl.training.runs import load_model, save_model
    run = d / RUN
    cfg = load_config(d / "config.yaml", "smoke")
    model = load_model(algo_class(cfg), run / "final_model.zip", run, device="cpu")
    for p in model.policy.parameters():
        p.data.fill_(float("nan"))
    save_model(model, run / "final_model.zip", run)
    (run / "pretrained_model.zip").unlink()


def unchanged(*names: str) -> Callable:
    """A check that the named run files kept the bytes they had before the command."""
    def check(d: Path, before: dict) -> None:
        for n in names:
            assert (d / RUN / n).read_bytes() == before[n], n
    return check


# ---- the cases ------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    fault: str
    """What was tried (the readme table's first column)."""
    argv: list[str]
    exit_code: int
    expect: str
    """Part of the line the user sees."""
    prepare: Callable = lambda d, request: None
    check: Callable | None = None
    keep: tuple = ()
    """Run files whose bytes `check` compares with the ones before the command."""


EVAL = ["evaluate", "--exp", "smoke", "--run", RUN]
TRAIN = ["train", "--exp", "smoke"]


def _corrupt_checkpoint(d, request):
    (d / RUN / "final_model.zip").unlink()
    (d / RUN / "checkpoints/model_1024.zip").write_bytes(b"")


CASES = [
    # config files
    Case("nan_forcing", "`forcing: .nan` in the experiment's model block", ["config", "--exp", "smoke", "--config", "c.yaml"],
         2, "experiments.smoke.model.forcing: must be a finite number",
         edit_config("c.yaml", lambda r: smoke_block(r)["model"].update(forcing=float("nan")))),
    Case("inf_inflation", "`inflation: .inf` in shared", ["config", "--exp", "smoke", "--config", "c.yaml"],
         2, "c.yaml: shared.filter.inflation: must be a finite number",
         edit_config("c.yaml", lambda r: r["shared"]["filter"].update(inflation=float("inf")))),
    Case("negative_seed", "`seed: -1` in shared", ["config", "--exp", "smoke", "--config", "c.yaml"],
         2, "shared.seed: must be >= 0",
         edit_config("c.yaml", lambda r: r["shared"].update(seed=-1))),
    Case("shared_list", "`shared: [1]`", ["config", "--exp", "smoke", "--config", "c.yaml"],
         2, "c.yaml: shared: expected a mapping",
         write_yaml("c.yaml", "shared: [1]\nexperiments: {smoke: {}}\nablations: {}\nsweep: {}\n")),
    Case("duplicate_key", "a key written twice (`filter: {n_ens: 12, n_ens: 10}`)",
         ["config", "--exp", "smoke", "--config", "c.yaml"], 2, "duplicate key 'n_ens'",
         lambda d, request: (d / "c.yaml").write_text((d / "config.yaml").read_text().replace(
             "filter: {n_ens: 10}", "filter: {n_ens: 12, n_ens: 10}"))),
    Case("unknown_key_shared", "misspelt key in shared (`lstm_hiden`)", ["config", "--exp", "smoke", "--config", "c.yaml"],
         2, "c.yaml: shared.agent.lstm_hiden: unknown key",
         edit_config("c.yaml", lambda r: r["shared"]["agent"].update(lstm_hiden=8))),
    Case("bad_value_experiment", "`n_ens: 1` in the experiment's block", ["config", "--exp", "smoke", "--config", "c.yaml"],
         2, "c.yaml: experiments.smoke.filter.n_ens: must be >= 2",
         edit_config("c.yaml", lambda r: smoke_block(r)["filter"].update(n_ens=1))),
    # data files
    Case("stale_names_config", "data made with another `filter.n_ens` than `--config c.yaml` has",
         TRAIN + ["--config", "c.yaml"], 1, "paths.h5 was made with other settings than c.yaml has now (filter.n_ens)",
         edit_config("c.yaml", lambda r: smoke_block(r)["filter"].update(n_ens=12))),
    Case("nan_analysis", "one NaN in paths.h5 `analysis_mean`", TRAIN, 1,
         "data/smoke/paths.h5: dataset analysis_mean holds 1 non-finite value(s)",
         set_h5("data/smoke/paths.h5", "analysis_mean", (2, 5, 3), np.nan),
         check=lambda d, before: no_new_run(d)),
    Case("nan_initial_ensemble", "one NaN in paths.h5 `initial_ensemble`", EVAL, 1,
         "dataset initial_ensemble holds 1 non-finite value(s)",
         set_h5("data/smoke/paths.h5", "initial_ensemble", (0, 1, 2), np.nan),
         check=unchanged("metrics.json", "eval.h5"), keep=("metrics.json", "eval.h5")),
    Case("inf_climatology", "+inf in spinup.h5 `clim_max`", EVAL, 1,
         "data/smoke/spinup.h5: dataset clim_max holds 1 non-finite value(s)",
         set_h5("data/smoke/spinup.h5", "clim_max", (4,), np.inf)),
    Case("wrong_shape", "paths.h5 `obs` with a cycle missing", TRAIN, 1,
         "dataset obs has shape (6, 59, 8), the config needs (6, 60, 8)",
         lambda d, request: _shorten_obs(d / "data/smoke/paths.h5")),
    Case("read_only_data", "read-only data/smoke/ for `precompute`", ["precompute", "--exp", "smoke"], 1,
         "cannot write into data/smoke", lambda d, request: _read_only_before_compute(d, request, "data/smoke")),
    Case("read_only_logs", "read-only logs/smoke/ for `train`", TRAIN, 1, "cannot write into logs/smoke",
         lambda d, request: make_read_only(d / "logs/smoke", request)),
    # run folders and model zips
    Case("empty_model", "final_model.zip of 0 bytes", EVAL, 1, "final_model.zip is not a model zip",
         lambda d, request: (d / RUN / "final_model.zip").write_bytes(b"")),
    Case("swapped_model", "final_model.zip replaced by another zip", EVAL, 1,
         "final_model.zip differs from the file this run wrote (sha256 mismatch",
         lambda d, request: shutil.copy(d / RUN / "checkpoints/model_512.zip", d / RUN / "final_model.zip")),
    Case("swapped_model_trusted", "the same, with `--trust`", EVAL + ["--trust"], 0, "wrote logs/smoke/base/metrics.json",
         lambda d, request: shutil.copy(d / RUN / "checkpoints/model_512.zip", d / RUN / "final_model.zip")),
    Case("no_checksums", "run folder without checksums.json", EVAL, 1, "has no sha256 in",
         lambda d, request: (d / RUN / "checksums.json").unlink()),
    Case("not_a_model", "a zip that is no SB3 model, with `--trust`", EVAL + ["--trust"], 1,
         "final_model.zip could not be loaded as a",
         lambda d, request: zipfile.ZipFile(d / RUN / "final_model.zip", "w").close()),
    Case("nan_weights", "final_model.zip with NaN weights (checksum recorded)", EVAL, 1,
         "final_model.zip has non-finite weights (NaN/inf)", nan_weights),
    Case("nan_metric", "an evaluation that yields a NaN metric (injected into summarise)", EVAL, 1,
         "evaluation gave non-finite metrics (0.rl.rmse_norm_vs_enkf)", nan_metric,
         check=unchanged("metrics.json", "eval.h5"), keep=("metrics.json", "eval.h5")),
    Case("run_without_config", "`evaluate --run` on a folder without config.yaml", EVAL, 2,
         "logs/smoke/base is not a run folder (it has no config.yaml)",
         lambda d, request: (d / RUN / "config.yaml").unlink()),
    Case("resume_without_config", "`train --resume` on a folder without config.yaml", TRAIN + ["--resume", RUN],
         2, "is not a run folder", lambda d, request: (d / RUN / "config.yaml").unlink()),
    Case("yaml_tag", "a YAML tag (`!!python/object/apply:os.system`) in the run's config.yaml", EVAL, 2,
         "could not determine a constructor for the tag",
         lambda d, request: (d / RUN / "config.yaml").write_text(
             "seed: !!python/object/apply:os.system ['touch pwned']\n")),
    Case("paths_out_of_range", "`evaluate --paths 0,99`", EVAL + ["--paths", "0,99"], 1,
         "--paths 0,99: '99' is not a path number in [0, 6)"),
    Case("paths_not_a_number", "`evaluate --paths a`", EVAL + ["--paths", "a"], 1, "--paths a: 'a' is not a path number"),
    Case("run_id_taken", "`train --run-id` of an existing run", TRAIN + ["--run-id", "base"], 1,
         "logs/smoke/base exists: choose another --run-id"),
    Case("resume_finished", "`train --resume` of a finished run", TRAIN + ["--resume", RUN], 0,
         "is finished (final_model.zip at 1024 of 1024 path-steps): nothing to resume"),
    Case("resume_corrupt_checkpoint", "`train --resume`, newest checkpoint 0 bytes, no final_model.zip",
         TRAIN + ["--resume", RUN], 0, "resumed from model_512.zip", _corrupt_checkpoint),
    Case("evaluate_newest_with_model", "`evaluate` without --run; the newest run folder has no model",
         ["evaluate", "--exp", "smoke"], 0, "wrote logs/smoke/base/metrics.json",
         lambda d, request: _newer_run_without_model(d)),
]


def _shorten_obs(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        obs = f["obs"][:, :-1]
        del f["obs"]
        f["obs"] = obs


def _read_only_before_compute(d: Path, request, folder: str) -> None:
    import enkf.precompute

    def must_not_run(*args, **kwargs):
        raise AssertionError("precompute started computing before checking data/ is writable")
    request.getfixturevalue("monkeypatch").setattr(enkf.precompute, "precompute", must_not_run)
    make_read_only(d / folder, request)


def _newer_run_without_model(d: Path) -> None:
    newer = d / "logs/smoke/newer"
    newer.mkdir()
    shutil.copy(d / RUN / "config.yaml", newer / "config.yaml")
    t = (d / RUN / "final_model.zip").stat().st_mtime + 10
    os.utime(newer / "config.yaml", (t, t))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A folder with config.yaml, the smoke data and a finished, evaluated smoke run logs/smoke/base."""
    d = tmp_path_factory.mktemp("faults_base")
    src = smoke_workdir(tmp_path_factory)
    shutil.copy(src / "config.yaml", d / "config.yaml")
    shutil.copytree(src / "data", d / "data")
    old = os.getcwd()
    os.chdir(d)
    try:
        for args in (TRAIN + ["--run-id", "base"], EVAL):
            result = invoke(args)
            assert result.exit_code == 0, (args, result.output, result.exception)
    finally:
        os.chdir(old)
    return d


@pytest.fixture
def work(base, tmp_path, monkeypatch) -> Path:
    """A copy of base to break; cwd."""
    d = tmp_path / "w"
    shutil.copytree(base, d, symlinks=True)
    monkeypatch.chdir(d)
    return d


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line(case, work, request):
    case.prepare(work, request)
    before = {n: (work / RUN / n).read_bytes() for n in case.keep}
    result = invoke(case.argv)
    assert "Traceback" not in result.output
    assert result.exit_code == case.exit_code, (result.output, result.exception)
    if case.exit_code != 0:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        message = lines[0]
    else:
        message = first_line_with(result.output, case.expect)
    assert case.expect in message, (case.expect, result.output)
    if case.check:
        case.check(work, before)
    assert not (work / "pwned").exists()
    record(case.id, case.fault, "enkfrl " + " ".join(case.argv), result.exit_code, message)


# ---- races and staleness -----------------------------------------------------------------------------
def test_runs_started_in_the_same_second_get_their_own_folders(work, monkeypatch):
    """Eight concurrent create_run_dir calls with one clock reading; then two `train` runs
    started in the same second: every run has a folder of its own."""
    from rl.training.runs import create_run_dir
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-120000")
    made, barrier = [], threading.Barrier(8)

    def make():
        barrier.wait()
        made.append(create_run_dir(work / "logs/race"))
    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)
    for _ in range(2):
        result = invoke(TRAIN)
        assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in (work / "logs/smoke").iterdir() if p.name != "base")
    assert runs == ["s0-20260101-120000", "s0-20260101-120000-2"]
    for r in runs:
        assert (work / "logs/smoke" / r / "final_model.zip").is_file()
        assert (work / "logs/smoke" / r / "train.log").read_text().count("done: 1024 path-steps") == 1


def test_settings_that_change_no_stored_array_do_not_make_data_stale(work):
    """paths.workers, paths.burn_in and spinup.thin may change without a rebuild; filter.n_ens
    may not, and the message names the config file read and the changed key."""
    def edit(r):
        s = smoke_block(r)
        s["paths"].update(workers=1, burn_in=7)
        s["spinup"]["thin"] = 20
    edit_config("c.yaml", edit)(work, None)
    from enkf.precompute import read_paths
    from enkf.spinup import read_spinup
    cfg = load_config(work / "c.yaml", "smoke")
    read_spinup(cfg, work / "data/smoke/spinup.h5")
    read_paths(cfg, work / "data/smoke/paths.h5")


def test_data_files_written_before_the_rule_stay_valid(work):
    """A paths.h5 whose stored config still lists workers/burn_in, and a spinup.h5 with only
    the old hash (which included spinup.thin), are accepted while the settings match."""
    from enkf.precompute import read_paths
    from enkf.spinup import _legacy_spinup_hash, read_spinup
    cfg = load_config(work / "config.yaml", "smoke")
    d = cfg.to_dict()
    with h5py.File(work / "data/smoke/paths.h5", "r+") as f:
        f.attrs["config"] = yaml.safe_dump({k: d[k] for k in ("seed", "model", "obs", "filter", "spinup", "paths")})
        f.attrs["data_hash"] = "0123456789abcdef"
    with h5py.File(work / "data/smoke/spinup.h5", "r+") as f:
        del f.attrs["settings"]
        f.attrs["spinup_hash"] = _legacy_spinup_hash(cfg)
    read_paths(cfg, work / "data/smoke/paths.h5")
    read_spinup(cfg, work / "data/smoke/spinup.h5")


def test_stale_temporaries_are_removed_on_the_next_write(work):
    """generate removes spinup.h5.tmp-<pid> files whose process is gone, and keeps a live one's."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = work / f"data/smoke/spinup.h5.tmp-{dead.pid}"
    live = work / f"data/smoke/spinup.h5.tmp-{os.getppid()}"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    result = invoke(["generate", "--exp", "smoke"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and live.exists()


# ---- kill -9 at chosen points, then resume / evaluate -------------------------------------------------
def progress_rows(run: Path) -> list[str]:
    rows = []
    for f in sorted((run / "tb").glob("progress*.csv")):
        rows += f.read_text().splitlines()[1:]
    return rows


def test_kill_during_checkpoint_then_resume(work, base):
    """kill -9 while checkpoints/model_1024.zip is written, twice; each time `train --resume`
    continues from the newest complete checkpoint (512), and the finished run's curriculum
    state equals the uninterrupted run's; every earlier progress row and segment is kept."""
    run = work / "logs/smoke/k"
    killed = cli_subprocess(TRAIN + ["--run-id", "k"], work, fault="model_1024.zip")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list((run / "checkpoints").glob("model_1024.zip.tmp-*"))
    assert not (run / "checkpoints/model_1024.zip").exists() and not (run / "final_model.zip").exists()
    assert_nothing_corrupt(run)
    rows = progress_rows(run)
    assert rows
    record("kill_checkpoint", "kill -9 while checkpoints/model_1024.zip is written", "enkfrl train --exp smoke",
           killed.returncode, "killed: model_1024.zip.tmp-<pid> left, no model_1024.zip")

    # resumed, killed at the same point again, resumed again
    again = cli_subprocess(TRAIN + ["--resume", str(run)], work, fault="model_1024.zip")
    assert again.returncode == -signal.SIGKILL, again.stderr
    assert_nothing_corrupt(run)
    rows_again = progress_rows(run)
    resumed = cli_subprocess(TRAIN + ["--resume", str(run)], work)
    assert resumed.returncode == 0, resumed.stderr
    line = first_line_with(resumed.stdout, "resumed from")
    assert "resumed from model_512.zip (512 path-steps" in line
    record("kill_checkpoint_resume", "... then `train --resume` (after a second kill at the same point)",
           f"enkfrl train --exp smoke --resume {run.relative_to(work)}", resumed.returncode, line)
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]
    assert_nothing_corrupt(run)
    for step in (512, 1024):
        assert (json.loads((run / f"checkpoints/curriculum_{step}.json").read_text())
                == json.loads((base / RUN / f"checkpoints/curriculum_{step}.json").read_text())), step
    assert set(rows) <= set(rows_again) <= set(progress_rows(run))
    assert len(list((run / "tb").glob("progress_until_512*.csv"))) == 2
    timing = json.loads((run / "timing.json").read_text())  # the killed segments count too
    assert [s["from_step"] for s in timing["segments"]] == [0, 512, 512]
    assert all(512 < s["to_step"] <= 1024 and s["wall_s"] > 0 for s in timing["segments"])
    assert timing["segments"][-1]["to_step"] == 1024
    assert timing["train_wall_s"] == pytest.approx(sum(s["wall_s"] for s in timing["segments"]))
    assert timing["train_steps"] == 1024

    finished = cli_subprocess(TRAIN + ["--resume", str(run)], work)
    assert finished.returncode == 0 and "is finished" in finished.stdout


def test_kill_during_final_model_then_resume(work, base):
    """kill -9 while final_model.zip is written: the 1024-step checkpoint is complete, so
    `train --resume` writes final_model.zip from it without training (no error) and the run
    equals the uninterrupted one."""
    run = work / "logs/smoke/f"
    killed = cli_subprocess(TRAIN + ["--run-id", "f"], work, fault="final_model.zip")
    assert killed.returncode == -signal.SIGKILL
    assert not (run / "final_model.zip").exists() and list(run.glob("final_model.zip.tmp-*"))
    assert_nothing_corrupt(run)
    record("kill_final", "kill -9 while final_model.zip is written", "enkfrl train --exp smoke",
           killed.returncode, "killed: final_model.zip.tmp-<pid> left, no final_model.zip")
    resumed = cli_subprocess(TRAIN + ["--resume", str(run)], work)
    assert resumed.returncode == 0, resumed.stderr
    line = first_line_with(resumed.stdout, "resumed from")
    assert "resumed from model_1024.zip (1024 path-steps" in line
    record("kill_final_resume", "... then `train --resume`", f"enkfrl train --exp smoke --resume {run.relative_to(work)}",
           0, line + "; final_model.zip written")
    from rl.training.runs import is_finished
    assert is_finished(run, 1024)
    assert_nothing_corrupt(run)
    assert (json.loads((run / "checkpoints/curriculum_1024.json").read_text())
            == json.loads((base / RUN / "checkpoints/curriculum_1024.json").read_text()))


@pytest.mark.parametrize("target", ["eval.h5", "metrics.json"])
def test_kill_during_evaluation_keeps_the_earlier_results(work, target):
    """kill -9 while evaluate writes eval.h5 or metrics.json: the earlier file stays whole (same
    bytes), and the next evaluate succeeds."""
    run = work / RUN
    before = (run / target).read_bytes()
    killed = cli_subprocess(EVAL, work, fault=target)
    assert killed.returncode == -signal.SIGKILL
    assert (run / target).read_bytes() == before
    assert_nothing_corrupt(run)
    record(f"kill_{target}", f"kill -9 while `evaluate` writes {target}", "enkfrl " + " ".join(EVAL),
           killed.returncode, f"killed: the earlier {target} kept whole")
    again = cli_subprocess(EVAL, work)
    assert again.returncode == 0, again.stderr
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name]
    json.loads((run / "metrics.json").read_text())


# ---- precompute workers die with their parent ---------------------------------------------------------
def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"])
def test_precompute_workers_die_with_their_parent(work, sig):
    """Signal precompute while its pool works: no worker outlives it (polled for up to 60 s)."""
    edit_config("long.yaml", lambda r: smoke_block(r)["paths"].update(n_cycles=100000, workers=2))(work, None)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    parent = subprocess.Popen([sys.executable, "-m", "cli.main", "precompute", "--exp", "smoke",
                               "--config", "long.yaml"], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = []
        for _ in range(600):
            workers = children(parent.pid)
            if len(workers) >= 2 or parent.poll() is not None:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, "the pool never started"
        time.sleep(0.5)
        parent.send_signal(sig)
        parent.wait(timeout=60)
        for _ in range(600):
            if not any(running(w) for w in workers):
                break
            time.sleep(0.1)
        alive = [w for w in workers if running(w)]
    finally:
        for w in children(parent.pid) + workers:
            if running(w):
                os.kill(w, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
    assert not alive, f"workers {alive} outlived precompute after {sig.name}"
    assert not (work / "data/smoke/paths.h5.tmp").exists()
    record(f"precompute_{sig.name}", f"{sig.name} to `precompute` while its pool works",
           "enkfrl precompute --exp smoke", parent.returncode, "no pool worker outlives it")


# ---- the record for the readme --------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def write_observed():
    """With ENKFRL_FAULTS_JSON=<file>: what every case showed the user, with provenance."""
    yield
    out = os.environ.get("ENKFRL_FAULTS_JSON")
    if not out or not OBSERVED:
        return
    cfg = load_config(ROOT / "config.yaml", "smoke")
    from enkf.io import atomic_write_json
    atomic_write_json(ROOT / out if not Path(out).is_absolute() else out, {
        "cases": OBSERVED,
        "provenance": provenance(cfg.to_dict(), cfg.hash(),
                                 f"ENKFRL_FAULTS_JSON={out} python -m pytest tests/test_faults.py",
                                 time.perf_counter() - T_START)})
