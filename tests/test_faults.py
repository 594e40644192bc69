"""Bad input, kill -9, races and tampering, tried as a user would on the smoke experiment.

CASES is the list of bad inputs: each runs a command through the CLI on a copy of a finished
smoke run and its data, and must give the stated exit code and, on failure, exactly one line on
stderr (no traceback) containing the expected text. The kill tests run the CLI in a subprocess
that the ENKFRL_FAULT hook (enkf/io.py atomic_path) kills with SIGKILL just before it renames a
named file into place, then resume and evaluate.

What every case and test showed the user is what the faults table lists: with
ENKFRL_FAULTS_DIR=<folder> set, each writes its line to <folder>/<case>.json (no state shared
between tests: they pass in any order), and scripts/faults_table.py runs this file that way and
writes results/faults.json (rendered into the readme by scripts/fill_readme.py):
    python scripts/faults_table.py
"""
from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cli.main import main
from rl.config import load_config
from enkf.io import FAULT_ENV

from test_env import ROOT, one_torch_thread, smoke_workdir  # noqa: F401

RUN = "logs/smoke/base"
FAULTS_DIR = "ENKFRL_FAULTS_DIR"


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
    """What the user saw, into $ENKFRL_FAULTS_DIR/<case>.json (scripts/faults_table.py); the
    table's order is ORDER's."""
    folder = os.environ.get(FAULTS_DIR)
    if not folder:
        return
    order = ORDER.index(case) if case in ORDER else len(ORDER)
    Path(folder, f"{case}.json").write_text(json.dumps(
        {"order": order, "case": case, "fault": fault, "command": command, "exit_code": exit_code,
         "message": message}))


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
            with np.load(f, allow_pickle=False) as z:
                [z[k] for k in z.files]
        elif f.suffix == ".safetensors":
            from safetensors.torch import load_file
            load_file(f)


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


def rewrite_weights(run: Path, change: Callable[[dict], dict]) -> None:
    """final_model.safetensors with change(tensors), written and recorded the way the run writes models."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    from enkf.io import atomic_write_json, sha256_file
    f = run / "final_model.safetensors"
    with safe_open(str(f), "pt") as g:
        meta = g.metadata()
    save_file(change(load_file(f)), f, metadata=meta)
    sums = json.loads((run / "checksums.json").read_text())
    sums["final_model.safetensors"] = sha256_file(f)
    atomic_write_json(run / "checksums.json", sums)


def rewrite_zip_policy(run: Path, name: str, change: Callable[[dict], dict]) -> None:
    """The SB3 zip run/name with change(its policy's tensors), its sha256 written into checksums.json:
    another run's model, recorded as this run's."""
    import io
    import torch
    from enkf.io import atomic_write_json, sha256_file
    path = run / name
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    buffer = io.BytesIO()
    torch.save(change(torch.load(io.BytesIO(parts["policy.pth"]), weights_only=True)), buffer)
    parts["policy.pth"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as z:
        for n, content in parts.items():
            z.writestr(n, content)
    sums = json.loads((run / "checksums.json").read_text())
    sums[name] = sha256_file(path)
    atomic_write_json(run / "checksums.json", sums)


def forget_checksums(run: Path, *names: str) -> None:
    """checksums.json without the entries of names: a kill between a model's rename and its record."""
    sums = json.loads((run / "checksums.json").read_text())
    for n in names:
        del sums[n]
    (run / "checksums.json").write_text(json.dumps(sums))


def _evaluates(d: Path) -> None:
    """The run evaluates again (the weights a resume wrote are recorded)."""
    result = invoke(EVAL)
    assert result.exit_code == 0, result.output


def _link_out(d: Path, name: str) -> None:
    """name moved out of the run folder (to d/outside/) and a symbolic link left in its place."""
    target = d / "outside" / Path(name).name
    target.parent.mkdir(exist_ok=True)
    shutil.move(str(d / name), str(target))
    (d / name).symlink_to(target, target_is_directory=target.is_dir())
    (d / "outside.before").write_text(json.dumps(sorted(str(p.relative_to(d)) for p in target.parent.rglob("*"))))


def _outside_unchanged(d: Path) -> None:
    now = sorted(str(p.relative_to(d)) for p in (d / "outside").rglob("*"))
    assert now == json.loads((d / "outside.before").read_text()), "something was written outside the run folder"


def _unfinish(d: Path) -> None:
    """The run as if killed after its last checkpoint: no final model."""
    _unfinish_run(d / RUN)


def _unfinish_run(run: Path) -> None:
    for ext in ("zip", "safetensors"):
        (run / f"final_model.{ext}").unlink()


def _edit_run_config(d: Path, section: str, **values) -> None:
    raw = yaml.safe_load((d / RUN / "config.yaml").read_text())
    raw[section].update(values)
    (d / RUN / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _edit_metrics(d: Path, edit: Callable[[dict], None]) -> None:
    m = json.loads((d / RUN / "metrics.json").read_text())
    edit(m)
    (d / RUN / "metrics.json").write_text(json.dumps(m))


def _not_there(p: Path) -> None:
    assert not p.exists(), f"{p} was made"


def _retype(path: Path, name: str, dtype) -> None:
    with h5py.File(path, "r+") as f:
        values = f[name][()].astype(dtype)
        del f[name]
        f[name] = values


def _replace_dataset(path: Path, name: str, value) -> None:
    with h5py.File(path, "r+") as f:
        del f[name]
        if value is not None:
            f[name] = value


def _disk_full(d: Path, request) -> None:
    """Every fsync fails with ENOSPC, as on a full disk (atomic writes sync before they rename)."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    request.getfixturevalue("monkeypatch").setattr(os, "fsync", full)


CURVES_ARGS = ["curves", "--record", "x=bad.json", "--out", "c.png"]


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


def REPORT(runs: str) -> list[str]:
    return ["report", "--runs", runs, "--init", "clone", "--out", "record.json"]


def no_record(d: Path) -> None:
    assert not (d / "record.json").exists(), "a record was written"


def _corrupt_checkpoint(d, request):
    _unfinish(d)
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
         write_yaml("c.yaml", "shared: [1]\nexperiments: {smoke: {}}\nablations: {}\nsweep: {}\nfilters: {}\n")),
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
    # run folders and model files (evaluation reads the weights, final_model.safetensors)
    Case("empty_model", "final_model.safetensors of 0 bytes", EVAL, 1,
         "final_model.safetensors differs from the file this run wrote (sha256 mismatch",
         lambda d, request: (d / RUN / "final_model.safetensors").write_bytes(b"")),
    Case("swapped_model", "final_model.safetensors replaced by a checkpoint's", EVAL, 1,
         "final_model.safetensors differs from the file this run wrote (sha256 mismatch",
         lambda d, request: shutil.copy(d / RUN / "checkpoints/model_512.safetensors", d / RUN / "final_model.safetensors")),
    Case("swapped_model_trusted", "the same, with `--trust`", EVAL + ["--trust"], 0, "wrote logs/smoke/base/metrics.json",
         lambda d, request: shutil.copy(d / RUN / "checkpoints/model_512.safetensors", d / RUN / "final_model.safetensors")),
    Case("no_checksums", "run folder without checksums.json", EVAL, 1, "has no sha256 in",
         lambda d, request: (d / RUN / "checksums.json").unlink()),
    Case("not_a_model", "a zip in place of the weights, with `--trust`", EVAL + ["--trust"], 1,
         "final_model.safetensors is not a policy weights file",
         lambda d, request: shutil.copy(d / RUN / "final_model.zip", d / RUN / "final_model.safetensors")),
    Case("other_network", "weights of another network (a tensor missing; checksum recorded)", EVAL, 1,
         "final_model.safetensors does not fit the network logs/smoke/base/config.yaml describes",
         lambda d, request: rewrite_weights(d / RUN, lambda t: dict(list(t.items())[1:]))),
    Case("nan_weights", "final_model.safetensors with NaN weights (checksum recorded)", EVAL, 1,
         "final_model.safetensors has non-finite weights (NaN/inf)",
         lambda d, request: rewrite_weights(d / RUN, lambda t: {k: v * float("nan") for k, v in t.items()})),
    Case("unrecorded_model", "final model renamed, its checksum not yet recorded (a kill in between)", EVAL, 1,
         "or the run was killed while writing it (then `enkfrl train --resume logs/smoke/base` writes it again)",
         lambda d, request: forget_checksums(d / RUN, "final_model.zip", "final_model.safetensors")),
    Case("weights_missing", "a run made before weights were kept apart (zips only)", EVAL, 1,
         "the run was made before policy weights were kept apart from the model zip; "
         "`enkfrl train --resume logs/smoke/base` writes them",
         lambda d, request: [f.unlink() for f in (d / RUN).glob("*.safetensors")]),
    Case("weights_missing_resume", "... then `train --resume` of it", ["train", "--resume", RUN], 0,
         "wrote logs/smoke/base/final_model.safetensors (the policy's weights, from the run's own zip)",
         lambda d, request: [f.unlink() for f in (d / RUN).glob("*.safetensors")],
         check=lambda d, before: _evaluates(d)),
    Case("other_run_zip", "another network's checkpoint zip (a tensor missing), its checksum written in; `train --resume`",
         ["train", "--resume", RUN], 1, "checkpoints/model_1024.zip could not be loaded as this run's PPO model",
         lambda d, request: (_unfinish(d), rewrite_zip_policy(d / RUN, "checkpoints/model_1024.zip",
                                                              lambda t: dict(list(t.items())[1:]))),
         check=unchanged("timing.json"), keep=("timing.json",)),
    Case("symlinked_model", "final_model.safetensors a symbolic link (to a copy of itself)", EVAL, 1,
         "final_model.safetensors is a symbolic link: a run folder holds its own files",
         lambda d, request: _link_out(d, RUN + "/final_model.safetensors")),
    Case("symlinked_checkpoints", "checkpoints/ a symbolic link out of the run folder; `train --resume`",
         ["train", "--resume", RUN], 1, "checkpoints is a symbolic link: a run folder holds its own files",
         lambda d, request: (_unfinish(d), _link_out(d, RUN + "/checkpoints")),
         check=lambda d, before: _outside_unchanged(d)),
    Case("nan_metric", "an evaluation that yields a NaN metric (injected into summarise)", EVAL, 1,
         "evaluation gave non-finite metrics (0.rl.rmse_norm_vs_enkf)", nan_metric,
         check=unchanged("metrics.json", "eval.h5"), keep=("metrics.json", "eval.h5")),
    Case("run_without_config", "`evaluate --run` on a folder without config.yaml", EVAL, 2,
         "logs/smoke/base is not a run folder (it has no config.yaml)",
         lambda d, request: (d / RUN / "config.yaml").unlink()),
    Case("resume_without_config", "`train --resume` on a folder without config.yaml", ["train", "--resume", RUN],
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
    Case("resume_finished", "`train --resume` of a finished run", ["train", "--resume", RUN], 0,
         "is finished (final_model.zip at 1024 of 1024 path-steps): nothing to resume"),
    Case("resume_corrupt_checkpoint", "`train --resume`, newest checkpoint 0 bytes, no final_model.zip",
         ["train", "--resume", RUN], 0, "resumed from model_512.zip", _corrupt_checkpoint),
    Case("resume_flag_ignored", "`train --resume` with `--seed 1` (a flag resume cannot apply)",
         ["train", "--resume", RUN, "--seed", "1"], 2, "--seed with --resume: a resume continues the run with its own config.yaml"),
    Case("resume_other_experiment", "`train --exp L96_1 --resume` of a smoke run", ["train", "--exp", "L96_1", "--resume", RUN],
         2, "--exp L96_1 with --resume of a run of smoke"),
    Case("resume_config_flag", "`train --config c.yaml --resume`", ["train", "--config", "c.yaml", "--resume", RUN],
         2, "--config with --resume", write_yaml("c.yaml", "shared: {}\n")),
    Case("resume_broken_cwd_config", "`train --resume` beside a broken ./config.yaml it does not use",
         ["train", "--resume", RUN], 0, "is finished (final_model.zip at 1024 of 1024 path-steps)",
         write_yaml("config.yaml", "shared: [\n")),
    Case("resume_changed_network", "`agent.lstm_hidden` edited in the run's config.yaml, then `train --resume`",
         ["train", "--resume", RUN], 1, "agent.lstm_hidden changed since the run was made (16 -> 32): a resume "
         "continues the trained network as it was made; start a new run",
         lambda d, request: (_unfinish(d), _edit_run_config(d, "agent", lstm_hidden=32)),
         check=lambda d, before: unchanged("timing.json")(d, before), keep=("timing.json",)),
    Case("resume_changed_ppo", "`ppo.learning_rate` edited in the run's config.yaml, then `train --resume`",
         ["train", "--resume", RUN], 1, "ppo.learning_rate changed since the run was made",
         lambda d, request: (_unfinish(d), _edit_run_config(d, "ppo", learning_rate=0.1))),
    Case("trust_without_resume", "`train --trust` of a new run", TRAIN + ["--trust"], 2, "--trust goes with --resume",
         check=lambda d, before: no_new_run(d)),
    # names that become paths
    Case("run_id_parent", "`train --run-id ../escape`", TRAIN + ["--run-id", "../escape"], 1,
         "--run-id '../escape': a name may hold letters, digits and _ . + = - only",
         check=lambda d, before: (no_new_run(d), _not_there(d / "logs/escape"))),
    Case("run_id_slash", "`train --run-id a/b`", TRAIN + ["--run-id", "a/b"], 1, "--run-id 'a/b': a name may hold",
         check=lambda d, before: no_new_run(d)),
    Case("variant_parent", "a study variant named `../up`", ["train", "--exp", "smoke", "--config", "c.yaml",
         "--study", "pointwise", "--variant", "../up"], 2, "ablations.pointwise.variants: '../up': a variant name may hold",
         edit_config("c.yaml", lambda r: r["ablations"]["pointwise"]["variants"].update({"../up": {}})),
         check=lambda d, before: (no_new_run(d), _not_there(d / "logs/up"))),
    Case("study_repeats_seed", "a study listing a seed twice (`seeds: [0, 0]`)",
         ["ablate", "--question", "enkf_inflation", "--config", "c.yaml"], 2,
         "ablations.enkf_inflation.seeds: 0 listed more than once",
         edit_config("c.yaml", lambda r: r["ablations"]["enkf_inflation"].update(seeds=[0, 0]))),
    Case("study_repeats_experiment", "a study listing an experiment twice",
         ["ablate", "--question", "enkf_inflation", "--config", "c.yaml"], 2,
         "ablations.enkf_inflation.experiments: smoke listed more than once",
         edit_config("c.yaml", lambda r: r["ablations"]["enkf_inflation"].update(experiments=["smoke", "smoke"]))),
    Case("study_repeats_variant", "a study listing a variant twice (one name written twice)",
         ["ablate", "--question", "enkf_inflation", "--config", "c.yaml"], 2, "duplicate key 'inflation_1.0'",
         lambda d, request: (d / "c.yaml").write_text((d / "config.yaml").read_text().replace(
             "      inflation_1.0: {filter: {inflation: 1.0}}\n",
             "      inflation_1.0: {filter: {inflation: 1.0}}\n      inflation_1.0: {filter: {inflation: 1.5}}\n"))),
    Case("study_same_variant", "a study whose two variants give the same settings",
         ["ablate", "--question", "enkf_inflation", "--config", "c.yaml"], 2,
         "ablations.enkf_inflation.variants: inflation_1.0 and again_1.0 give L96_1 the same settings",
         edit_config("c.yaml", lambda r: r["ablations"]["enkf_inflation"]["variants"].update(
             {"again_1.0": {"filter": {"inflation": 1.0}}}))),
    Case("train_many_repeats_experiment", "`train-many --exp smoke,smoke`", ["train-many", "--exp", "smoke,smoke"], 2,
         "--exp lists smoke more than once"),
    # datasets of the data files
    Case("integer_dataset", "paths.h5 `analysis_mean` stored as integers", TRAIN, 1,
         "data/smoke/paths.h5: dataset analysis_mean has dtype int64, expected floating point numbers",
         lambda d, request: _retype(d / "data/smoke/paths.h5", "analysis_mean", np.int64),
         check=lambda d, before: no_new_run(d)),
    Case("string_dataset", "spinup.h5 `clim_max` a string", EVAL, 1,
         "data/smoke/spinup.h5: dataset clim_max has dtype",
         lambda d, request: _replace_dataset(d / "data/smoke/spinup.h5", "clim_max", np.bytes_("hot"))),
    Case("missing_dataset", "paths.h5 without `forecast_spread`", TRAIN, 1,
         "data/smoke/paths.h5 lacks forecast_spread", lambda d, request: _replace_dataset(
             d / "data/smoke/paths.h5", "forecast_spread", None), check=lambda d, before: no_new_run(d)),
    # numbers the policy turns into a distribution, keys named right
    Case("log_std_huge", "`agent.log_std_init: 50`", TRAIN + ["--config", "c.yaml"], 2,
         "agent.log_std_init: must be 'auto' or in [-10.0, 2.0]",
         edit_config("c.yaml", lambda r: smoke_block(r)["agent"].update(log_std_init=50.0)),
         check=lambda d, before: no_new_run(d)),
    Case("log_std_tiny", "`agent.log_std_init: -1000`", TRAIN + ["--config", "c.yaml"], 2,
         "agent.log_std_init: must be 'auto' or in [-10.0, 2.0]",
         edit_config("c.yaml", lambda r: smoke_block(r)["agent"].update(log_std_init=-1000.0)),
         check=lambda d, before: no_new_run(d)),
    Case("paths_per_env_zero", "`train.paths_per_env: 0`", TRAIN + ["--config", "c.yaml"], 2,
         "train.paths_per_env: must be >= 1, got 0",
         edit_config("c.yaml", lambda r: smoke_block(r)["train"].update(paths_per_env=0))),
    # a full disk
    Case("disk_full_evaluate", "no space left on the device during `evaluate`", EVAL, 1,
         "no space left on device while writing logs/smoke/base/", _disk_full,
         check=unchanged("metrics.json", "eval.h5"), keep=("metrics.json", "eval.h5")),
    Case("disk_full_train", "no space left on the device during `train`", TRAIN, 1,
         "no space left on device while writing logs/smoke/", _disk_full),
    # run selection and fit records
    Case("report_same_seed_twice", "`report` listing one run (one seed) twice", REPORT(f"{RUN},{RUN}"), 1,
         "--runs lists seed 0 more than once: one run per seed", check=lambda d, before: no_record(d)),
    Case("report_missing_run", "`report` on a run folder that does not exist", REPORT("logs/smoke/nope"), 1,
         "logs/smoke/nope is not a run folder", check=lambda d, before: no_record(d)),
    Case("report_without_run_json", "`report` on a run folder without run.json", REPORT(RUN), 1,
         "has no run.json (made before run folders described themselves): `enkfrl train --resume",
         lambda d, request: (d / RUN / "run.json").unlink(), check=lambda d, before: no_record(d)),
    Case("report_malformed_metrics", "`report` on a run whose metrics.json is not JSON", REPORT(RUN), 1,
         "metrics.json is not readable JSON", lambda d, request: (d / RUN / "metrics.json").write_text("{"),
         check=lambda d, before: no_record(d)),
    Case("report_best_model", "`report` on a run evaluated with `--model best`", REPORT(RUN), 1,
         "evaluates the best model (chosen on the eval path itself): a fit record needs the final one",
         lambda d, request: _edit_metrics(d, lambda m: m["models"]["rl"].update(which="best")),
         check=lambda d, before: no_record(d)),
    Case("report_unnamed_model", "`report` on a metrics.json that does not name its model", REPORT(RUN), 1,
         "does not name the model it evaluated", lambda d, request: _edit_metrics(d, lambda m: m.pop("models")),
         check=lambda d, before: no_record(d)),
    Case("report_not_evaluated", "`report` on a run that was never evaluated (no metrics.json)", REPORT(RUN), 1,
         "logs/smoke/base/metrics.json not found", lambda d, request: (d / RUN / "metrics.json").unlink(),
         check=lambda d, before: no_record(d)),
    Case("curves_missing", "`curves` on a record that does not exist", CURVES_ARGS, 1,
         "--record x=bad.json: expected LABEL=path/to/record.json of an existing file"),
    Case("curves_malformed", "`curves` on a record that is not JSON", CURVES_ARGS, 1, "bad.json is not readable JSON",
         write_yaml("bad.json", "{")),
    Case("curves_not_a_record", "`curves` on a JSON that is no fit record", CURVES_ARGS, 1,
         "bad.json is not a fit record", write_yaml("bad.json", "{}")),
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
    started in the same second: every run has a folder of its own, named by the one rule, and a
    run.json that says what it is."""
    from rl.training.runs import create_run_dir, read_run_info
    cfg = load_config(work / "config.yaml", "smoke")
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-120000")
    made, barrier = [], threading.Barrier(8)

    def make():
        barrier.wait()
        made.append(create_run_dir(work / "logs/race", cfg))
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
    name = f"s0-{cfg.hash()[:8]}-20260101-120000"
    assert runs == [name, name + "-2"]
    for r in runs:
        assert (work / "logs/smoke" / r / "final_model.zip").is_file()
        assert (work / "logs/smoke" / r / "train.log").read_text().count("done: 1024 path-steps") == 1
        info = read_run_info(work / "logs/smoke" / r)
        assert {k: info[k] for k in ("experiment", "seed", "study", "variant", "agent", "config_hash")} == {
            "experiment": "smoke", "seed": 0, "study": None, "variant": None, "agent": cfg.agent.kind,
            "config_hash": cfg.hash()}


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


# ---- a planted run folder, two owners, an orphaned trial ---------------------------------------------
class Payload:
    """Unpickled, it runs `touch <target>`: what a crafted model file could do."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def plant_payload(zip_path: Path, target: Path) -> None:
    """zip_path rewritten as an SB3 zip whose pickled parts run `touch target` when unpickled: an
    object in its data JSON (what SB3's load cloudpickles) and policy.pth (what torch.load reads)."""
    import base64
    import pickle
    blob = pickle.dumps(Payload(target))
    with zipfile.ZipFile(zip_path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    data = json.loads(parts["data"])
    data["policy_kwargs"] = {":type:": "<class 'dict'>", ":serialized:": base64.b64encode(blob).decode()}
    parts["data"] = json.dumps(data).encode()
    parts["policy.pth"] = blob
    with zipfile.ZipFile(zip_path, "w") as z:
        for name, content in parts.items():
            z.writestr(name, content)


def test_a_planted_model_file_runs_no_code(work):
    """A copied run folder whose every model zip carries a pickle payload, each with its sha256
    written into checksums.json (so every zip is "recorded"), and made the newest run: evaluate
    (named, newest, --model best), report, curves, plot and train --resume (finished; without its
    weights files; without its final model) never run it: no file appears."""
    from enkf.io import sha256_file
    target = work / "PWNED"
    planted = work / "logs/smoke/planted"
    shutil.copytree(work / RUN, planted)
    info = json.loads((planted / "run.json").read_text())
    (planted / "run.json").write_text(json.dumps(dict(info, created="2999-01-01T00:00:00")))  # the newest
    sums = json.loads((planted / "checksums.json").read_text())
    for z in [*planted.glob("*.zip"), *planted.glob("checkpoints/*.zip")]:
        plant_payload(z, target)
        sums[z.relative_to(planted).as_posix()] = sha256_file(z)
    (planted / "checksums.json").write_text(json.dumps(sums))
    # the payload is real: unpickling the zip's data the way SB3 does runs it
    from stable_baselines3.common.save_util import json_to_data
    with zipfile.ZipFile(planted / "final_model.zip") as z:
        json_to_data(z.read("data").decode())
    assert target.exists()
    target.unlink()

    run = "logs/smoke/planted"
    commands = [(["evaluate", "--exp", "smoke", "--run", run], 0), (["evaluate", "--exp", "smoke"], 0),
                (["evaluate", "--exp", "smoke", "--run", run, "--model", "best"], 0),
                (["evaluate", "--exp", "smoke", "--run", run, "--no-test"], 0),
                (["report", "--runs", run, "--init", "clone", "--out", "record.json"], 1),  # --no-test above
                (["plot", "--exp", "smoke", "--run", run, "--stage", "all"], 0),
                (["train", "--resume", run], 0)]
    for argv, code in commands:
        result = invoke(argv)
        assert result.exit_code == code, (argv, result.output)
        assert "Traceback" not in result.output, (argv, result.output)
        assert not target.exists(), f"`enkfrl {' '.join(argv)}` ran the payload"
        if argv == ["evaluate", "--exp", "smoke"]:  # the newest run is the planted one
            assert f"wrote {run}/metrics.json" in result.output, result.output
    (planted / "metrics.json").unlink()
    assert invoke(["evaluate", "--exp", "smoke", "--run", run]).exit_code == 0
    result = invoke(["report", "--runs", run, "--init", "clone", "--out", "record.json"])
    assert result.exit_code == 0 and not target.exists(), result.output
    result = invoke(["curves", "--record", "planted=record.json", "--out", "curves.png"])
    assert result.exit_code == 0 and not target.exists(), result.output
    # what is left needs the zips: resume reads only their tensors (torch's weights-only loader)
    for f in planted.glob("*.safetensors"):
        f.unlink()
    result = invoke(["train", "--resume", run])
    assert result.exit_code == 1 and "could not be read as this run's policy" in result.stderr, result.output
    assert not target.exists()
    for f in planted.glob("final_model.*"):
        f.unlink()
    result = invoke(["train", "--resume", run])
    assert result.exit_code == 1 and "could not be loaded as this run's PPO model" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not target.exists()
    record("planted_pickle", "a copied run folder whose every model zip runs `touch` when unpickled, "
           "its checksums written in; evaluate, report, curves, plot, then train --resume (its line below)",
           "enkfrl train --resume logs/smoke/planted", result.exit_code, "no file appears; " + result.stderr.strip())


def test_a_record_names_what_it_measured(work):
    """evaluate --model best names the best model (file, steps, sha256 of its weights) and the data
    files (sha256) in metrics.json; report refuses it for a fit record in one line; after an
    evaluation of the final model the record names that model, per seed."""
    from enkf.io import sha256_file
    run = work / RUN
    result = invoke(EVAL + ["--model", "best"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    best = json.loads((run / "best.json").read_text())
    assert metrics["models"]["rl"] == {"which": "best", "file": "best_model.safetensors", "steps": best["steps"],
                                       "sha256": sha256_file(run / "best_model.safetensors")}
    assert {k: v["sha256"] for k, v in metrics["data"].items()} == {
        k: sha256_file(work / "data/smoke" / f"{k}.h5") for k in ("spinup", "paths", "test_spinup", "test_paths")}
    refused = invoke(REPORT(RUN))
    assert refused.exit_code == 1 and "Traceback" not in refused.output, refused.output
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "evaluates the best model (chosen on the eval path itself)" in lines[0], lines
    no_record(work)
    assert invoke(EVAL).exit_code == 0
    result = invoke(REPORT(RUN))
    assert result.exit_code == 0, result.output
    seed = json.loads((work / "record.json").read_text())["per_seed"][0]
    assert seed["models"]["rl"] == {"which": "final", "file": "final_model.safetensors", "steps": 1024,
                                    "sha256": sha256_file(run / "final_model.safetensors")}
    record("record_names_model", "`evaluate --model best`, then `report` of it", "enkfrl " + " ".join(REPORT(RUN)),
           refused.exit_code, lines[0] + " (metrics.json names the model: best, its steps, the sha256 of its "
           "weights, and the sha256 of every data file)")


def test_two_resumes_of_one_run(work):
    """Two `train --resume` of one run: the second exits at once with one line naming the first's
    pid, while the first finishes the run."""
    run = work / "logs/smoke/two"
    shutil.copytree(work / RUN, run)
    _unfinish_run(run)
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["train"]["total_steps"] = 3072  # long enough for the second to start while the first trains
    (run / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop(FAULT_ENV, None)
    first = subprocess.Popen([sys.executable, "-m", "cli.main", "train", "--resume", str(run)], cwd=work, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # the first holds the lock once its pid is in owner.lock
            try:
                if json.loads((run / "owner.lock").read_text())["pid"] == first.pid:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert first.poll() is None, first.communicate()
            time.sleep(0.1)
        second = cli_subprocess(["train", "--resume", str(run)], work)
        still_running = first.poll() is None
        out, err = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
    assert still_running, "the first resume ended before the second was refused"
    assert second.returncode == 1, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"is in use by pid {first.pid}" in lines[0], second.stderr
    assert first.returncode == 0, err
    assert json.loads((run / "timing.json").read_text())["train_steps"] == 3072
    assert (run / "train.log").read_text().count("resumed from") == 1  # one owner trained
    record("two_resumes", "two `train --resume` of one run at once", "enkfrl train --resume logs/smoke/two (twice)",
           second.returncode, lines[0].replace(str(first.pid), "<pid>").replace(str(work) + "/", ""))


def test_a_trial_whose_driver_died_stops_writing(work, monkeypatch):
    """A train-many trial checks that its driver is alive: with the driver gone, training stops
    at its next check and writes no checkpoint, model or timing more; the lock is let go."""
    from rl.envs.normalisation import read_inputs
    from rl.training.runs import RunLock, create_run_dir, process_alive
    from rl.training.train import train
    cfg = load_config(work / "config.yaml", "smoke")
    run = create_run_dir(work / "logs/smoke", cfg, made_by="train-many")
    import rl.training.train
    monkeypatch.setattr(rl.training.train, "OWNER_CHECK_S", 0.0)  # check at every step
    driver = subprocess.Popen(["sleep", "600"])
    data, norm = read_inputs(cfg, work / "data/smoke")
    calls = []

    def alive():
        calls.append(1)
        if len(calls) == 3:  # the driver dies while the trial trains
            driver.kill()
            driver.wait()
        return process_alive(driver.pid)
    from rl.training.runs import RunAbandoned
    with pytest.raises(RunAbandoned, match="the process that started this run is gone"):
        with RunLock(run, "trial"):
            train(cfg, data, norm, run, command="trial", owner_alive=alive)
    assert len(calls) >= 3
    assert not (run / "final_model.zip").exists() and not list(run.glob("checkpoints/model_*"))
    with RunLock(run, "next"):  # the lock was let go
        pass
    record("orphaned_trial", "the train-many driver killed while a trial trains", "enkfrl train-many",
           -signal.SIGKILL, "the trial stops at its next check (1 s), writes nothing more, lets go of the run's lock")


def test_a_resume_repairs_a_model_killed_before_its_record(work):
    """A kill between the final model's rename and its checksum record: evaluate says so and
    points to resume; the resume writes the final model again from the last checkpoint."""
    forget_checksums(work / RUN, "final_model.zip", "final_model.safetensors")
    assert invoke(EVAL).exit_code == 1
    result = invoke(["train", "--resume", RUN])
    assert result.exit_code == 0, result.output
    line = first_line_with(result.output, "resumed from")
    assert "resumed from model_1024.zip (1024 path-steps" in line
    assert invoke(EVAL).exit_code == 0
    record("unrecorded_model_resume", "... then `train --resume` of it", f"enkfrl train --resume {RUN}", 0,
           line + "; final model written and recorded again")


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


@contextlib.contextmanager
def ctrl_c_reaches_children():
    """Commands started inside get SIGINT as a terminal's Ctrl-C delivers it. A test session
    started in the background (`pytest &` in a script) has SIGINT ignored, and a child inherits
    an ignored signal: precompute would never see the SIGINT this file sends it. A handled signal
    is reset to the default in the child, so the session handles it while the child starts."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=["TERM", "INT", "KILL"])
def test_precompute_workers_die_with_their_parent(work, sig):
    """Signal precompute while its pool works (waited for up to 300 s): it ends (within 300 s:
    ending needs CPU time, which a loaded machine hands out slowly) and no worker outlives it
    (polled for up to 60 s more)."""
    edit_config("long.yaml", lambda r: smoke_block(r)["paths"].update(n_cycles=100000, workers=2))(work, None)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    with ctrl_c_reaches_children():
        parent = subprocess.Popen([sys.executable, "-m", "cli.main", "precompute", "--exp", "smoke",
                                   "--config", "long.yaml"], cwd=work, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = []
        for _ in range(3000):  # the pool starts after the imports: 60 s here on the loaded machine
            workers = children(parent.pid)
            if len(workers) >= 2 or parent.poll() is not None:
                break
            time.sleep(0.1)
        assert len(workers) >= 2, "the pool never started"
        time.sleep(0.5)
        parent.send_signal(sig)
        parent.wait(timeout=300)
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
    left = [p.name for p in (work / "data/smoke").glob("paths.h5.tmp-*")]  # atomic_path's temporaries
    assert not left, f"{left} left behind by precompute after {sig.name}"
    record(f"precompute_{sig.name}", f"{sig.name} to `precompute` while its pool works",
           "enkfrl precompute --exp smoke", parent.returncode, "no pool worker outlives it")


# ---- the order of the faults table -------------------------------------------------------------------------
ORDER = [c.id for c in CASES] + [
    "planted_pickle", "record_names_model", "two_resumes", "orphaned_trial", "unrecorded_model_resume",
    "kill_checkpoint", "kill_checkpoint_resume", "kill_final", "kill_final_resume", "kill_eval.h5",
    "kill_metrics.json", "precompute_SIGTERM", "precompute_SIGINT", "precompute_SIGKILL"]
