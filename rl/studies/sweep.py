"""Many runs on Ray Tune: each (experiment, variant, seed) of an ablation study and each
(experiment, training seed) of `enkfrl train-many` is one trial.

Ray: without an address (--address or RAY_ADDRESS) Ray starts on this machine with all its cores;
with one, the driver attaches to that cluster (`ray start --head` on one machine, `ray start
--address HEAD:6379` on the others; the project and data/ at the same path on every node).
Resources: a trial reserves sweep.cpus_per_trial CPUs and sweep.gpus_per_trial GPUs, and runs
torch, numba and BLAS with exactly that many threads, so trials never oversubscribe a machine.
Data: before the trials start, the driver generates (as Ray tasks, one per data set) the data that
several trials share: data/<E>/ when they are the experiment's own, data/<E>/<data_hash>/ for a
study's variant data; a trial whose data are its own (an EnKF variant and seed) computes them in
memory. No two trials ever write the same file.
Records and resume: a finished study trial writes <records_dir>/<Q>/<E>__<variant>__seed<S>.json at
once (tmp + rename); a rerun skips every trial whose record holds the same resolved config and
measure, so a killed study loses nothing finished. A train-many trial trains into a run folder
the driver made (rl/training/runs.py; run.json says made_by train-many), resumed from its newest
checkpoint when an earlier train-many of the same config stopped part way, and evaluates it
there; a run folder with final_model.zip and metrics.json is skipped.
"""
from __future__ import annotations

import json
import os
import socket
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from enkf import datafiles
from enkf.config import ConfigError
from rl.config import AblationRun, Config, load_ablation, load_config, load_sweep, read_yaml, seed_config
from enkf.io import DataError, atomic_write_json

PROJECT_ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


# ---- Ray and the threads of one trial ---------------------------------------------------------------
def connect(address: str | None, cpus_per_trial: int, num_cpus: int | None = None) -> dict:
    """Attach to `address` (else RAY_ADDRESS), else start Ray here with num_cpus (None: all cores).
    Workers import this checkout's code and start with cpus_per_trial threads. Returns the
    cluster's resources. Reuses a connection this process already has."""
    import ray
    if not ray.is_initialized():
        env = {v: str(cpus_per_trial) for v in THREAD_VARS}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, runtime_env={"env_vars": env})
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env})
    return ray.cluster_resources()


def limit_threads(cpus: int) -> None:
    """torch, numba and BLAS/OpenMP (also of child processes) use `cpus` threads in this process.
    Once numba's thread pool runs its size is fixed, and numba refuses a NUMBA_NUM_THREADS that
    differs from it at its next compile: then the variable keeps the pool's size (a Ray worker's
    pool is already cpus_per_trial, from connect's runtime env)."""
    import numba
    import torch as th
    from numba.np.ufunc import parallel
    for v in THREAD_VARS:
        keep_pool = v == "NUMBA_NUM_THREADS" and parallel._is_initialized
        os.environ[v] = str(numba.config.NUMBA_NUM_THREADS if keep_pool else cpus)
    th.set_num_threads(cpus)
    numba.set_num_threads(min(cpus, numba.config.NUMBA_NUM_THREADS))


def _check_resources(resources: dict, cpus: int, gpus: float) -> None:
    if resources.get("CPU", 0) < cpus:
        raise DataError(f"sweep.cpus_per_trial is {cpus} but the Ray cluster has {resources.get('CPU', 0):g} CPUs")
    if resources.get("GPU", 0) < gpus:
        raise DataError(f"sweep.gpus_per_trial is {gpus:g} but the Ray cluster has "
                        f"{resources.get('GPU', 0):g} GPUs")


def _trial_resources(cpus: int, gpus: float) -> dict:
    return {"cpu": cpus, "gpu": gpus} if gpus > 0 else {"cpu": cpus}


# ---- shared data, generated once before the trials ----------------------------------------------------
def generate_data(cfg: Config, folder: Path, cpus: int) -> str:
    """spinup.h5 and paths.h5 of cfg into folder, in at most `cpus` processes."""
    limit_threads(cpus)
    t0 = time.perf_counter()
    spin, data = datafiles.compute(cfg, cpus)
    datafiles.write(cfg, folder, spin, data)
    return f"{folder}: {cfg.paths.n_paths} paths x {cfg.paths.n_cycles} cycles in {time.perf_counter() - t0:.0f} s"


def shared_data(configs: list[Config], own_hashes: dict[str, str], data_root: Path) -> list[tuple[Config, Path]]:
    """The data sets to generate before the trials: those that two or more of `configs` need, or
    that are an experiment's own (own_hashes: experiment -> its data hash), and are missing."""
    by_hash = defaultdict(list)
    for cfg in configs:
        by_hash[datafiles.data_hash(cfg)].append(cfg)
    todo = []
    for h, cfgs in by_hash.items():
        cfg = cfgs[0]
        exp_dir = Path(data_root) / cfg.experiment
        own = own_hashes.get(cfg.experiment) == h
        if (len(cfgs) < 2 and not own) or datafiles.is_current(cfg, exp_dir) or datafiles.is_current(cfg, exp_dir / h):
            continue
        todo.append((cfg, exp_dir if own else exp_dir / h))
    return todo


def generate_shared(todo: list[tuple[Config, Path]], cpus: int, echo) -> None:
    """Generate the data sets as Ray tasks (cpus each), all before any trial starts."""
    import ray
    if not todo:
        return
    task = ray.remote(num_cpus=cpus)(generate_data)
    echo(f"generating {len(todo)} shared data set(s) before the trials: " + ", ".join(str(f) for _, f in todo))
    try:
        for line in ray.get([task.remote(cfg, folder.resolve(), cpus) for cfg, folder in todo]):
            echo(f"  {line}")
    except ray.exceptions.RayTaskError as e:
        raise DataError(f"generating the shared data failed: {e.cause}") from None


# ---- running trials on Tune -----------------------------------------------------------------------
def run_trials(trainable, names: list[str], sweep, max_concurrent: int, storage: Path, echo, on_done) -> list[str]:
    """Run trainable(config={"index": i}) for every i as one Tune trial named names[i]; on_done(i)
    after each finished trial. Returns one line per failed trial."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # verbose=0 below then means silent
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.done = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.done += 1
            i = trial.config["index"]
            try:
                line = on_done(i)
            except (OSError, ValueError, KeyError, StopIteration) as e:  # a report, not a result
                line = f"{names[i]} finished (no summary: {e})"
            echo(f"[{self.done}/{len(names)}] {line}")

    tuner = tune.Tuner(
        tune.with_resources(trainable, _trial_resources(sweep.cpus_per_trial, sweep.gpus_per_trial)),
        param_space={"index": tune.grid_search(list(range(len(names))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or None, reuse_actors=True,
                                    trial_name_creator=lambda t: names[t.config["index"]],
                                    trial_dirname_creator=lambda t: names[t.config["index"]]),
        run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(storage.resolve()),
                                  callbacks=[Progress()], verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)))
    grid = tuner.fit()
    failed = []
    for result in grid:
        if result.error is not None:
            last = (str(result.error).strip().splitlines() or ["?"])[-1]
            failed.append(f"{names[result.config['index']]}: {last} (log: {result.path})")
    return failed


def _start_line(folder: Path) -> None:
    """Append this trial start to folder/starts.log (how often a trial ran, where)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "starts.log", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} node {socket.gethostname()}\n")


# ---- ablation studies -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyJob:
    """What every trial of a study needs (shipped to the workers once, through Ray's object store)."""
    name: str
    meta: dict
    runs: list[AblationRun]
    data_root: Path
    records_dir: Path
    trials_dir: Path
    cpus: int
    gpus: float
    command: str


def study_trial(config: dict, job: StudyJob) -> None:
    """One Tune trial: measure run job.runs[index], write its record at once."""
    import numba
    import torch as th
    from ray import tune
    from rl.studies.ablate import measure_run, record_path, trial_key, trial_record
    from rl.training.train import resolve_device
    run = job.runs[config["index"]]
    limit_threads(job.cpus)
    _start_line(job.trials_dir / job.name / trial_key(run))
    t0 = time.perf_counter()
    result, source = measure_run(run, job.meta["measure"], job.data_root, job.cpus)
    wall = time.perf_counter() - t0
    trial = {"cpus": job.cpus, "gpus": job.gpus, "node": socket.gethostname(), "data": source,
             "torch_threads": th.get_num_threads(), "numba_threads": numba.get_num_threads(),
             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if job.meta["measure"] in ("clone", "finetune"):
        trial["device"] = resolve_device(run.cfg.train.device)
    if th.cuda.is_available():  # what torch really used of the GPU Ray gave the trial
        trial["cuda_device_name"] = th.cuda.get_device_name(0)
        trial["cuda_max_memory_allocated_bytes"] = int(th.cuda.max_memory_allocated())
    atomic_write_json(record_path(job.records_dir, job.name, run),
                      trial_record(job.name, job.meta, run, result, wall, job.command, trial))
    tune.report({"wall_s": wall})


def run_study(config_path: Path, name: str, data_root: Path, command: str, address: str | None = None,
              max_concurrent: int | None = None, records_dir: Path | None = None, num_cpus: int | None = None,
              echo=print) -> Path:
    """Every trial of ablations.<name> without a finished record, on Ray; then the table
    <records_dir>/<name>.json from all records. Returns the table's path."""
    from rl.studies.ablate import finished_record, markdown_table, record_path, study_table, trial_key
    t0 = time.perf_counter()
    sweep = load_sweep(config_path)
    meta, runs = load_ablation(config_path, name)
    if meta["measure"] == "train":  # full training runs, one command each: not trials of a study
        raise ConfigError(f"--question {name}: a training study (measure: train), not an ablation: run "
                          f"`enkfrl train --exp E --study {name} --variant V --seed S` per run "
                          f"(scripts/train_concurrent.sh --study {name} --variant V for every seed)")
    study = read_yaml(config_path)["ablations"][name]
    records_dir = Path(records_dir or sweep.records_dir).resolve()
    pending = [r for r in runs if finished_record(record_path(records_dir, name, r), r, meta["measure"]) is None]
    echo(f"{name}: {meta['question']} ({len(runs)} trials, measure {meta['measure']}; "
         f"{len(runs) - len(pending)} already recorded, {len(pending)} to run)")
    if pending:
        resources = connect(address, sweep.cpus_per_trial, num_cpus)
        _check_resources(resources, sweep.cpus_per_trial, sweep.gpus_per_trial)
        limit = sweep.max_concurrent if max_concurrent is None else max_concurrent
        echo(f"Ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; per trial "
             f"{sweep.cpus_per_trial} CPU, {sweep.gpus_per_trial:g} GPU; at most {limit or 'as many as fit'} at once")
        own = {e: datafiles.data_hash(load_config(config_path, e)) for e in {r.experiment for r in pending}}
        generate_shared(shared_data([r.cfg for r in pending], own, Path(data_root)), sweep.cpus_per_trial, echo)
        job = StudyJob(name, meta, pending, Path(data_root).resolve(), records_dir,
                       Path(sweep.trials_dir).resolve(), sweep.cpus_per_trial, sweep.gpus_per_trial, command)

        def done(i):
            rec = json.loads(record_path(records_dir, name, pending[i]).read_text())
            return f"{trial_key(pending[i])} ({rec['wall_s']:.1f} s): " + ", ".join(
                f"{k} {v:.4g}" for k, v in rec["result"].items())

        from ray import tune
        failed = run_trials(tune.with_parameters(study_trial, job=job), [trial_key(r) for r in pending],
                            sweep, limit, job.trials_dir / name, echo, done)
        if failed:
            raise DataError(f"{len(failed)} of {len(pending)} trials failed (rerun the same command to run "
                            f"only the unfinished ones): " + "; ".join(failed))
    table = study_table(name, meta, study, runs, records_dir, command, time.perf_counter() - t0)
    out = atomic_write_json(records_dir / f"{name}.json", table)
    echo(markdown_table(table))
    return out


# ---- multi-seed training ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainJob:
    cfgs: list[Config]
    run_dirs: list[Path]
    data_root: Path
    cpus: int
    command: str
    driver: tuple[int, str] = (0, "")
    """(pid, host) of the driver: a trial whose driver is gone stops writing."""


LOCK_WAIT_S = 30.0
"""How long a train-many trial waits for a run's lock: an orphan of a killed driver notices within
a second that its driver is gone and lets go."""


def train_trial(config: dict, job: TrainJob) -> None:
    """One Tune trial: train (or resume) cfgs[index] in its run folder, then evaluate it there."""
    from ray import tune
    from rl.envs.normalisation import read_inputs
    from rl.training.evaluate import evaluate_run
    from rl.training.train import train
    from rl.training.runs import RunLock, process_alive
    cfg, run_dir = job.cfgs[config["index"]], job.run_dirs[config["index"]]
    limit_threads(job.cpus)
    with RunLock(run_dir, f"{job.command} (trial of driver pid {job.driver[0]})", wait_s=LOCK_WAIT_S):
        _start_line(run_dir)
        exp_dir = job.data_root / cfg.experiment
        data, norm = read_inputs(cfg, exp_dir)
        if not (run_dir / "final_model.zip").exists():  # the driver made the folder (runs.create_run_dir)
            resume = (run_dir / "config.yaml").exists() and any((run_dir / "checkpoints").glob("model_*.zip"))
            train(cfg, data, norm, run_dir, resume=resume, command=job.command,
                  owner_alive=lambda: process_alive(*job.driver))
        test_cfg, _, test_data = datafiles.read(cfg, exp_dir, "test")
        evaluate_run(run_dir, cfg, data, norm, (test_cfg, test_data),
                     data_files=datafiles.files(exp_dir, ("train", "test")))
    tune.report({"done": 1})


def train_many(config_path: Path, experiments: list[str], data_root: Path, log_root: Path, command: str,
               address: str | None = None, max_concurrent: int | None = None, num_cpus: int | None = None,
               echo=print) -> list[Path]:
    """Every (experiment, seed of train.seeds) as a trial: train, then evaluate, in a run folder of
    its own (rl/training/runs.py: run.json made_by train-many). A run train-many made before with
    the same config is continued, or skipped when finished. Returns all run folders."""
    from rl.training.runs import create_run_dir, find_runs
    sweep = load_sweep(config_path)
    twice = sorted({e for e in experiments if experiments.count(e) > 1})
    if twice:
        raise ConfigError(f"--exp lists {', '.join(twice)} more than once: one trial per (experiment, seed)")
    cfgs = []
    for exp in experiments:
        base = load_config(config_path, exp)
        if base.train.env_threads > sweep.cpus_per_trial:
            raise ConfigError(f"train.env_threads: {base.train.env_threads} threads in a trial of "
                              f"sweep.cpus_per_trial {sweep.cpus_per_trial} CPUs")
        if base.train.torch_threads > sweep.cpus_per_trial:
            raise ConfigError(f"train.torch_threads: {base.train.torch_threads} threads in a trial of "
                              f"sweep.cpus_per_trial = {sweep.cpus_per_trial} CPUs would oversubscribe it ({exp})")
        cfgs += [seed_config(base, seed) for seed in base.train.seeds]
    # a run train-many made earlier with the same config is continued (or skipped when finished)
    run_dirs = []
    for cfg in cfgs:
        earlier = find_runs(log_root, cfg.experiment, study=None, seed=cfg.train.seed,
                            config_hash=cfg.hash(), made_by="train-many")
        run_dirs.append(earlier[-1][0].resolve() if earlier else None)
    for exp in experiments:  # every run is evaluated on the test split too: made once, before the trials
        cfg = load_config(config_path, exp)
        if datafiles.ensure(cfg, datafiles.experiment_dir(data_root, cfg), "test"):
            echo(f"made the test split of {exp}: {datafiles.paths_file(datafiles.experiment_dir(data_root, cfg), 'test')}")
    pending = [i for i, d in enumerate(run_dirs)
               if d is None or not ((d / "final_model.zip").exists() and (d / "metrics.json").exists())]
    for i in pending:
        if run_dirs[i] is None:
            run_dirs[i] = create_run_dir(Path(log_root) / cfgs[i].experiment, cfgs[i],
                                         made_by="train-many").resolve()
    echo(f"train-many: {len(cfgs)} runs ({', '.join(experiments)} x seeds), "
         f"{len(cfgs) - len(pending)} finished, {len(pending)} to run")
    if pending:
        resources = connect(address, sweep.cpus_per_trial, num_cpus)
        _check_resources(resources, sweep.cpus_per_trial, sweep.gpus_per_trial)
        own = {c.experiment: datafiles.data_hash(c) for c in cfgs}
        generate_shared(shared_data([cfgs[i] for i in pending], own, Path(data_root)), sweep.cpus_per_trial, echo)
        job = TrainJob([cfgs[i] for i in pending], [run_dirs[i] for i in pending], Path(data_root).resolve(),
                       sweep.cpus_per_trial, command, (os.getpid(), socket.gethostname()))
        names = [f"{c.experiment}__seed{c.train.seed}" for c in job.cfgs]

        def done(i):
            m = json.loads((job.run_dirs[i] / "metrics.json").read_text())
            rl = next(iter(m.values()))["rl"]
            return (f"{names[i]}: rl cycles {rl['cycles_completed']}, RMSE_norm vs EnKF "
                    f"{rl['rmse_norm_vs_enkf']:.4f}, RMSE vs truth {rl['rmse_vs_truth']:.4f} -> {job.run_dirs[i]}")

        from ray import tune
        limit = sweep.max_concurrent if max_concurrent is None else max_concurrent
        failed = run_trials(tune.with_parameters(train_trial, job=job), names, sweep, limit,
                            Path(sweep.trials_dir).resolve() / "train-many", echo, done)
        if failed:
            raise DataError(f"{len(failed)} of {len(pending)} runs failed (rerun the same command to "
                            f"continue them): " + "; ".join(failed))
    return run_dirs
