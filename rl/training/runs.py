"""The run folder logs/<E>/<run_id>/: its name, its description, and what keeps it whole under
kill, races and tampering. Every command that makes a run makes it here.

- A run folder is made with one atomic mkdir: two runs never share one. Its name follows one rule
  (run_name), and run.json says what the run is; runs are selected by run.json, never by name.
- Every file is written to a temporary name and renamed when complete (enkf.io.atomic_path).
- Every model is its policy's weights (safetensors: evaluation, reports and plots load only these,
  into the network the run's config.yaml describes) and SB3's zip beside them (to resume; only
  its tensors are read back, by torch's weights-only loader). checksums.json keeps the sha256 of
  every model file the run wrote; a file whose sum is not the recorded one is refused unless
  trusted. Nothing in a run folder is unpickled (docs/design.md: what a planted folder can do).
- A checkpoint is its curriculum state (written first) and its model (written last, then
  recorded): it is complete only when both are there, valid, and the model's sums recorded.
- timing.json lists every training segment (the fresh run, each resume) and sums them.
"""
from __future__ import annotations

import json
import logging
import os
import time
import zipfile
from pathlib import Path

from enkf.io import DataError, atomic_path, atomic_write_json, ensure_writable, sha256_file

log = logging.getLogger("enkfrl.train")

CHECKSUMS = "checksums.json"
LINK_HINT = "a run folder holds its own files (copy the target in place of the link)"


# ---- the folder ---------------------------------------------------------------------------------
RUN_JSON = "run.json"
"""What the run is: experiment, seed, study, variant, agent kind, config hash, when and by what it
was made, and the resolved config it was made with (resume compares config.yaml with it)."""
def check_name(name: str, what: str) -> str:
    """A name that becomes part of a path (run id, study, variant): rl.config.is_name, so it
    cannot leave its folder."""
    from rl.config import NAME_RULE, is_name
    if not is_name(name):
        raise DataError(f"{what} {name!r}: a name {NAME_RULE}")
    return name


def run_name(seed: int, config_hash: str, study: str | None = None, variant: str | None = None,
             stamp: str | None = None) -> str:
    """The one naming rule of run folders: [<study>-<variant>-]s<seed>-<config hash[:8]>-<date>-<time>
    (every command that makes a run: train, train --study/--variant, train-many)."""
    prefix = "" if study is None else f"{check_name(study, '--study')}-{check_name(variant, '--variant')}-"
    return f"{prefix}s{int(seed)}-{config_hash[:8]}-{stamp or time.strftime('%Y%m%d-%H%M%S')}"


def run_info(cfg, study: str | None = None, variant: str | None = None, made_by: str = "train") -> dict:
    """The run.json of a new run of cfg."""
    return {"experiment": cfg.experiment, "seed": cfg.train.seed, "study": study, "variant": variant,
            "agent": cfg.agent.kind, "config_hash": cfg.hash(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "made_by": made_by,
            "config": cfg.to_dict()}


def create_run_dir(parent: Path, cfg, study: str | None = None, variant: str | None = None,
                   run_id: str | None = None, made_by: str = "train") -> Path:
    """A new run folder of cfg under parent, made by one atomic mkdir, with its run.json. A given
    run_id that exists is refused; the default name (run_name) takes a suffix -2, -3, ... when
    another run of the same setting was made in the same second."""
    ensure_writable(parent)
    if run_id is not None:
        run_dir = Path(parent) / check_name(run_id, "--run-id")
        try:
            run_dir.mkdir()
        except FileExistsError:
            raise DataError(f"{run_dir} exists: choose another --run-id, or continue it with "
                            f"--resume {run_dir}") from None
    else:
        stamp = run_name(cfg.train.seed, cfg.hash(), study, variant)
        for i in range(1, 1000):
            run_dir = Path(parent) / (stamp if i == 1 else f"{stamp}-{i}")
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise DataError(f"could not make a new run folder {Path(parent) / stamp}-N (999 exist)")
    atomic_write_json(run_dir / RUN_JSON, run_info(cfg, study, variant, made_by))
    return run_dir


def read_run_info(run_dir: Path) -> dict | None:
    """run.json of a run folder; None for a folder without one (made before run.json was kept);
    a DataError when it is not a JSON mapping with the keys a run.json has."""
    f = Path(run_dir) / RUN_JSON
    if not f.is_file():
        return None
    try:
        info = json.loads(f.read_text())
    except (OSError, ValueError):
        raise DataError(f"{f} is not readable JSON") from None
    keys = ("experiment", "seed", "study", "variant", "agent", "config_hash", "created")
    if not isinstance(info, dict) or any(k not in info for k in keys):
        raise DataError(f"{f} is not a run description (needs {', '.join(keys)})")
    return info


def inferred_run_info(run_dir: Path, cfg) -> dict:
    """run.json of a folder made before run.json was kept: from its config.yaml and command.txt."""
    import shlex
    words = []
    try:
        words = shlex.split((Path(run_dir) / "command.txt").read_text())
    except (OSError, ValueError):
        pass
    study = words[words.index("--study") + 1] if "--study" in words[:-1] else None
    variant = words[words.index("--variant") + 1] if "--variant" in words[:-1] else None
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z",
                            time.localtime((Path(run_dir) / "config.yaml").stat().st_mtime))
    return dict(run_info(cfg, study, variant, made_by="inferred from config.yaml and command.txt"),
                created=created)


def find_runs(log_root: Path, experiment: str, **match) -> list[tuple[Path, dict]]:
    """(folder, run.json) of every run of experiment under log_root/<experiment>/ whose run.json
    has the given values (e.g. study=None, seed=0), oldest first. Folders without a readable
    run.json are no runs to select."""
    out = []
    for f in sorted((Path(log_root) / experiment).glob(f"*/{RUN_JSON}")):
        try:
            info = read_run_info(f.parent)
        except DataError:
            continue
        if info["experiment"] == experiment and all(info.get(k) == v for k, v in match.items()):
            out.append((f.parent, info))
    return sorted(out, key=lambda r: (r[1]["created"], r[0].name))


def select_runs(log_root: Path, experiment: str, study: str | None = None, variant: str | None = None,
                final: bool = False, evaluated: bool = False,
                newest_per_seed: bool = False) -> list[tuple[Path, dict]]:
    """Runs of experiment by their run.json: of a study (and variant), or with final only those of
    no study; with evaluated only those whose final model has a test-set evaluation; with
    newest_per_seed the newest such run of each seed. Oldest first (by seed with newest_per_seed)."""
    match = {}
    if final:
        match.update(study=None, variant=None)
    if study is not None:
        match["study"] = study
    if variant is not None:
        match["variant"] = variant
    runs = [(d, i) for d, i in find_runs(log_root, experiment, **match) if not evaluated or is_evaluated(d)]
    if newest_per_seed:
        newest = {i["seed"]: (d, i) for d, i in runs}
        runs = [newest[s] for s in sorted(newest)]
    return runs


RESUME_MAY_CHANGE = ("train.total_steps", "train.checkpoint_freq", "train.eval_freq", "train.log_interval",
                     "train.device", "train.torch_threads", "train.env_threads", "train.block_columns",
                     "train.subproc", "paths.burn_in", "paths.workers")
"""Keys of a run's config.yaml a resume applies: how long and how it runs, what it logs and when,
how evaluations summarise. Every other key describes the trained network, its optimiser, its data
or its environment, and a resume refuses a change to it."""


def _changed(made: dict, now: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(made) | set(now), key=str):
        a, b = made.get(k), now.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def check_resumable(run_dir: Path, cfg) -> None:
    """DataError when the run's config.yaml (cfg) changed, since the run was made (run.json), a key
    a resume cannot apply to the run (anything outside RESUME_MAY_CHANGE), or the run is SAC/TD3's
    (docs/design.md: its replay buffer is not kept, so it cannot continue as it was)."""
    from rl.config import with_added_settings
    if cfg.train.algo != "ppo":
        raise DataError(f"{run_dir}: a {cfg.train.algo} run cannot resume: its replay buffer is not kept "
                        f"(SB3 stores it with pickle, which no run folder may hold), and without it the run "
                        f"would not continue as it was; start a new run")
    info = read_run_info(run_dir)
    if info is None or not isinstance(info.get("config"), dict):
        return  # made before run.json kept its config: nothing to compare with
    made, now = with_added_settings(info["config"]), cfg.to_dict()
    changed = [k for k in _changed(made, now) if k not in RESUME_MAY_CHANGE]
    if changed:
        def value(d, key):
            for part in key.split("."):
                d = d.get(part) if isinstance(d, dict) else None
            return d
        k = changed[0]
        more = f" (and {', '.join(changed[1:4])}{', ...' if len(changed) > 4 else ''})" if len(changed) > 1 else ""
        raise DataError(f"{Path(run_dir) / 'config.yaml'}: {k} changed since the run was made "
                        f"({value(made, k)!r} -> {value(now, k)!r}){more}: a resume continues the trained "
                        f"network as it was made; start a new run for the new setting "
                        f"(`enkfrl train --exp {cfg.experiment}`)")


def check_no_links(run_dir: Path) -> None:
    """DataError when anything a run reads or writes inside its folder is a symbolic link (a linked
    checkpoints/ or model file would let the run read or write outside its folder)."""
    run_dir = Path(run_dir)
    for p in [run_dir / n for n in ("checkpoints", "tb", "plots", CHECKSUMS, RUN_JSON, "config.yaml")] \
            + sorted(run_dir.glob("*_model.*")) + sorted((run_dir / "checkpoints").glob("*")):
        if p.is_symlink():
            raise DataError(f"{p} is a symbolic link: {LINK_HINT}")


def is_evaluated(run_dir: Path) -> bool:
    """metrics.json holds an evaluation of the final model with the test set."""
    try:
        m = json.loads((Path(run_dir) / "metrics.json").read_text())
        return "test" in m and m["models"]["rl"]["which"] == "final"
    except (OSError, ValueError, TypeError, KeyError):
        return False


# ---- one owner per run ------------------------------------------------------------------------------
LOCK = "owner.lock"


class RunAbandoned(DataError):
    """The process that started this run (a Ray driver) is gone: the run stops without writing."""


class RunLock:
    """An exclusive lock (fcntl.flock) on run_dir/owner.lock, held by whoever trains the run (train,
    train --resume, a train-many trial) for the whole run; the kernel drops it when the owner dies,
    however it dies. A second owner waits up to wait_s seconds, then gets a DataError naming the
    holder's pid. owner.lock holds the holder's pid, host, start time and command."""

    def __init__(self, run_dir: Path, command: str = "", wait_s: float = 0.0):
        self.path, self.command, self.wait_s = Path(run_dir) / LOCK, command, wait_s
        self.fd = None

    def holder(self) -> dict:
        try:
            info = json.loads(self.path.read_text())
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def __enter__(self) -> "RunLock":
        import fcntl
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if self.path.is_symlink():
                raise DataError(f"{self.path} is a symbolic link: {LINK_HINT}") from None
            raise DataError(f"cannot open {self.path} ({e.strerror or e})") from None
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    h = self.holder()
                    since = f" since {h['since']}" if h.get("since") else ""
                    raise DataError(f"{self.path.parent} is in use by pid {h.get('pid', '?')} on "
                                    f"{h.get('host', '?')}{since} ({h.get('command') or 'enkfrl'}): one "
                                    f"process owns a run; wait for it to end or stop it") from None
                time.sleep(0.2)
        import socket
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": self.command}).encode() + b"\n")
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import fcntl
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def process_alive(pid: int, host: str | None = None) -> bool:
    """pid runs (on this host; a process on another host counts as alive: it cannot be seen)."""
    import socket
    if host is not None and host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- model files and their checksums ------------------------------------------------------------
# Every model is saved twice, side by side:
#   <name>.safetensors  the policy's weights (tensors and a text header only: nothing in it can run);
#                       evaluation, reports and plots rebuild the policy from the run's config.yaml
#                       (rl.agents.policy.build_policy) and load these
#   <name>.zip          SB3's file, to resume training; only its weights and optimiser state are read
#                       back (torch's weights-only loader, rl.training.runs.load_for_resume), never the
#                       pickled objects SB3 keeps beside them
# checksums.json keeps the sha256 of both: a file whose sum is not the recorded one is refused
# unless trusted (--trust).
WEIGHTS_FORMAT = "enkfrl-policy-weights/1"


def weights_file(zip_path: Path) -> Path:
    """<name>.safetensors beside <name>.zip."""
    return Path(zip_path).with_suffix(".safetensors")


def _record_key(run_dir: Path, path: Path) -> str:
    """path relative to run_dir, as written (a link is not followed)."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(run_dir)).as_posix()
    except ValueError:
        raise DataError(f"{path} lies outside the run folder {run_dir}") from None


def recorded_checksums(run_dir: Path) -> dict:
    f = Path(run_dir) / CHECKSUMS
    if f.is_symlink():
        raise DataError(f"{f} is a symbolic link: {LINK_HINT}")
    if not f.is_file():
        return {}
    try:
        sums = json.loads(f.read_text())
    except (OSError, ValueError):
        raise DataError(f"{f} is not readable JSON: the run's model checksums are lost (pass --trust "
                        f"only for a run you made yourself)") from None
    return sums if isinstance(sums, dict) else {}


def save_model(model, path: Path, run_dir: Path, steps: int, averaged_steps: list[int] | None = None) -> Path:
    """The policy's weights (<name>.safetensors, with steps in its header, and the checkpoints'
    steps when they are a mean of checkpoints: average_checkpoints) and model.save(path)
    (<name>.zip), each through a temporary file, then both sha256 into run_dir/checksums.json."""
    from safetensors.torch import save_model as save_weights
    path = Path(path)
    check_no_links(run_dir)
    weights = weights_file(path)
    meta = {"format": WEIGHTS_FORMAT, "steps": str(int(steps)), "num_timesteps": str(int(model.num_timesteps))}
    if averaged_steps:
        meta["averaged_steps"] = ",".join(str(int(s)) for s in averaged_steps)
    with atomic_path(weights) as tmp:
        save_weights(model.policy, str(tmp), metadata=meta)
        weights_sum = sha256_file(tmp)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            model.save(f)
        zip_sum = sha256_file(tmp)
    sums = recorded_checksums(run_dir)
    sums[_record_key(run_dir, weights)] = weights_sum
    sums[_record_key(run_dir, path)] = zip_sum
    atomic_write_json(Path(run_dir) / CHECKSUMS, dict(sorted(sums.items())))
    return path


def check_file(path: Path, run_dir: Path, trust: bool = False) -> str:
    """DataError unless path is a plain file (no link) whose sha256 is the one the run recorded
    when it wrote the file (with trust: any plain file). Returns its sha256."""
    path = Path(path)
    if path.is_symlink():
        raise DataError(f"{path} is a symbolic link: {LINK_HINT}")
    if not path.is_file():
        raise DataError(f"{path} not found: train the run first")
    digest = sha256_file(path)
    if trust:
        return digest
    recorded = recorded_checksums(run_dir).get(_record_key(run_dir, path))
    if recorded is None:
        raise DataError(f"{path} has no sha256 in {Path(run_dir) / CHECKSUMS}: not written by this run, "
                        f"or the run was killed while writing it (then `enkfrl train --resume {run_dir}` "
                        f"writes it again)")
    if digest != recorded:
        raise DataError(f"{path} differs from the file this run wrote (sha256 mismatch with {CHECKSUMS}): "
                        f"`enkfrl train --resume {run_dir}` writes it again; --trust takes it as it is")
    return digest


def check_model(path: Path, run_dir: Path, trust: bool = False) -> None:
    """check_file of a model zip that is also a complete zip."""
    path = Path(path)
    if path.is_file() and not path.is_symlink() and not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a model zip (empty, truncated or corrupt): resume the run "
                        f"to write it again")
    check_file(path, run_dir, trust)


def is_recorded(path: Path, run_dir: Path) -> bool:
    """path is a plain file with the sha256 the run recorded for it (a zip: a complete one)."""
    try:
        (check_model if Path(path).suffix == ".zip" else check_file)(path, run_dir)
    except DataError:
        return False
    return True


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def _refuse_non_finite(path: Path, module) -> None:
    bad = [name for name, p in module.named_parameters() if not bool(p.isfinite().all())]
    if bad:
        raise DataError(f"{path} has non-finite weights (NaN/inf) in {', '.join(bad[:3])}"
                        f"{', ...' if len(bad) > 3 else ''}: resume from an earlier checkpoint")


def load_weights(cfg, path: Path, run_dir: Path, trust: bool = False, device: str = "cpu"):
    """The network of the run's config (cfg) with the weights of the safetensors file path, which
    must be the one the run recorded (or trust). Nothing is unpickled. Returns (policy, its
    description for records: file, steps, sha256)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model as load_into
    from rl.agents.policy import build_policy
    path = Path(path)
    check_no_links(run_dir)
    digest = check_file(path, run_dir, trust)
    policy = build_policy(cfg, device)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        missing, unexpected = load_into(policy, str(path), strict=False, device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a policy weights file ({_first_line(e)})") from None
    except RuntimeError as e:  # load_state_dict: a tensor of another shape
        raise DataError(f"{path} does not fit the network {Path(run_dir) / 'config.yaml'} describes "
                        f"({_first_line(e)})") from None
    missing, unexpected = sorted(missing), sorted(unexpected)
    if missing or unexpected:
        raise DataError(f"{path} does not fit the network {Path(run_dir) / 'config.yaml'} describes (missing "
                        f"{', '.join(missing[:3]) or 'nothing'}; unexpected {', '.join(unexpected[:3]) or 'nothing'})")
    _refuse_non_finite(path, policy)
    policy.set_training_mode(False)
    steps = meta.get("steps")
    return policy, {"file": _record_key(run_dir, path), "steps": int(steps) if str(steps).isdigit() else None,
                    "sha256": digest}


def load_policy(cfg, run_dir: Path, which: str = "final", trust: bool = False, device: str = "cpu"):
    """The policy of a run folder, for evaluation: load_weights of <which>_model.safetensors (best
    falls back to final when the run has no best model). Returns (policy, its description for
    records: which, file, steps, sha256)."""
    run_dir = Path(run_dir)
    if which == "best" and not any((run_dir / f"best_model.{ext}").exists() for ext in ("safetensors", "zip")):
        which = "final"
    path = run_dir / f"{which}_model.safetensors"
    if not path.exists() and not path.is_symlink() and (run_dir / f"{which}_model.zip").is_file():
        raise DataError(f"{path} not found: the run was made before policy weights were kept apart from "
                        f"the model zip; `enkfrl train --resume {run_dir}` writes them from the run's own zips")
    policy, info = load_weights(cfg, path, run_dir, trust, device)
    return policy, {"which": which, **info}


def load_for_resume(cfg, path: Path, run_dir: Path, env, device: str, trust: bool = False):
    """The model to continue training: a fresh model of the run's config (rl.agents.policy.build_model)
    with the weights and optimiser state of the checkpoint zip, read by torch's weights-only loader
    (SB3's set_parameters: the zip's pickled objects are never loaded), and its step counters from
    the zip's JSON part. The zip must be the one this run recorded (or trust)."""
    from rl.agents.policy import build_model, fused_optimisers
    check_model(path, run_dir, trust)
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
        counters = {k: int(data[k]) for k in ("num_timesteps", "_n_updates")}
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} has no readable step counters ({_first_line(e)}): not an SB3 model zip") from None
    model = build_model(cfg, env, tensorboard_log=None, device=device, seed=cfg.train.seed)
    try:
        model.set_parameters(str(path), exact_match=True, device=device)
    except Exception as e:  # torch's weights-only unpickler, load_state_dict: anything on a bad zip
        raise DataError(f"{path} could not be loaded as this run's {type(model).__name__} model "
                        f"({_first_line(e)})") from None
    _refuse_non_finite(path, model.policy)
    model.num_timesteps, model._n_updates = counters["num_timesteps"], counters["_n_updates"]
    return fused_optimisers(model)  # the zip's optimiser state carries the flags it was saved with


def write_missing_weights(cfg, run_dir: Path, unit: int, trust: bool = False) -> list[Path]:
    """<name>.safetensors for every recorded model zip of the run that has none (a run made before
    weights were kept apart): the policy's weights read from the zip by torch's weights-only
    loader, into the network of the run's config. Returns the files written."""
    from stable_baselines3.common.save_util import load_from_zip_file
    from rl.agents.policy import build_policy
    from safetensors.torch import save_model as save_weights
    written = []
    for name in ("final_model", "best_model", "pretrained_model"):
        path = Path(run_dir) / f"{name}.zip"
        if not path.exists() or weights_file(path).exists():
            continue
        check_model(path, run_dir, trust)
        policy = build_policy(cfg)
        try:
            _, params, _ = load_from_zip_file(str(path), load_data=False, device="cpu")
            policy.load_state_dict(params["policy"])
        except Exception as e:
            raise DataError(f"{path} could not be read as this run's policy ({_first_line(e)})") from None
        steps = (model_steps(path) or 0) // unit
        with atomic_path(weights_file(path)) as tmp:
            save_weights(policy, str(tmp), metadata={"format": WEIGHTS_FORMAT, "steps": str(steps),
                                                      "num_timesteps": str(model_steps(path) or 0)})
            digest = sha256_file(tmp)
        sums = recorded_checksums(run_dir)
        sums[_record_key(run_dir, weights_file(path))] = digest
        atomic_write_json(Path(run_dir) / CHECKSUMS, dict(sorted(sums.items())))
        written.append(weights_file(path))
    return written


def describe_files(files: dict) -> dict:
    """{name: {file, sha256 (and the HDF5 file's data_hash / spinup_hash)}} of the input files an
    evaluation read: a record names its data."""
    import h5py
    out = {}
    for name, path in files.items():
        entry = {"file": str(path), "sha256": sha256_file(path)}
        try:
            with h5py.File(path, "r") as f:
                entry.update({k: str(f.attrs[k]) for k in ("data_hash", "spinup_hash") if k in f.attrs})
        except OSError:
            pass
        out[name] = entry
    return out


def model_steps(path: Path) -> int | None:
    """num_timesteps stored in an SB3 zip (read from its JSON part: nothing is unpickled)."""
    try:
        with zipfile.ZipFile(path) as z:
            return int(json.loads(z.read("data"))["num_timesteps"])
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def is_finished(run_dir: Path, total_steps: int, trust: bool = False) -> bool:
    """final_model.zip is valid (recorded) and holds total_steps or more."""
    final = Path(run_dir) / "final_model.zip"
    if not (is_recorded(final, run_dir) or (trust and zipfile.is_zipfile(final))):
        return False
    return (model_steps(final) or 0) >= total_steps


# ---- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(model, curriculum_state: dict, run_dir: Path, step: int) -> None:
    """checkpoints/curriculum_<step>.json first, model_<step>.zip last: the model's presence (and
    its recorded sum) marks the checkpoint complete."""
    folder = Path(run_dir) / "checkpoints"
    atomic_write_json(folder / f"curriculum_{step}.json", curriculum_state)
    save_model(model, folder / f"model_{step}.zip", run_dir, step)


def average_checkpoints(cfg, policy, run_dir: Path, trust: bool = False) -> list[int]:
    """Set policy's weights to the mean of the weights of the run's checkpoints at the newest
    cfg.train.average_checkpoints multiples of cfg.train.checkpoint_freq (each file checked against
    the run's record, as evaluation loads weights); returns their steps, oldest first. The mean of
    late iterates (stochastic weight averaging, Izmailov et al. 2018) removes much of the movement a
    constant learning rate leaves at the end of a run."""
    import torch as th
    k, freq = cfg.train.average_checkpoints, cfg.train.checkpoint_freq
    folder = Path(run_dir) / "checkpoints"
    steps = sorted(int(p.stem.split("_", 1)[1]) for p in folder.glob("model_*.safetensors")
                   if p.stem.split("_", 1)[1].isdigit())
    grid = [s for s in steps if s % freq == 0][-k:]
    if len(grid) < k:
        raise DataError(f"{run_dir}: train.average_checkpoints = {k} needs checkpoints at {k} multiples of "
                        f"{freq} path-steps, found {len(grid)} ({', '.join(map(str, grid)) or 'none'})")
    states = [load_weights(cfg, folder / f"model_{s}.safetensors", run_dir, trust)[0].state_dict() for s in grid]
    with th.no_grad():
        mean = {name: sum(st[name] for st in states) / k for name in states[0]}
    policy.load_state_dict(mean)
    return grid


def newest_checkpoint(run_dir: Path, trust: bool = False) -> tuple[Path, dict, int]:
    """(model zip, curriculum state, step) of the newest complete checkpoint. Incomplete ones
    (a missing or broken part, a model whose sum was never recorded) are skipped with a warning;
    a model whose sum differs from the recorded one is refused (DataError) unless trust."""
    folder = Path(run_dir) / "checkpoints"
    steps = sorted((int(p.stem.split("_")[1]) for p in folder.glob("model_*.zip")
                    if p.stem.split("_")[1].isdigit()), reverse=True)
    sums = recorded_checksums(run_dir)
    skipped = []
    for step in steps:
        model, state_file = folder / f"model_{step}.zip", folder / f"curriculum_{step}.json"
        try:
            state = json.loads(state_file.read_text())
            if not isinstance(state, dict):
                raise ValueError
        except (OSError, ValueError):
            skipped.append(f"{state_file.name} missing or unreadable")
            continue
        if not zipfile.is_zipfile(model):
            skipped.append(f"{model.name} is not a complete zip")
            continue
        if not trust and _record_key(run_dir, model) not in sums:
            skipped.append(f"{model.name} has no recorded sha256")
            continue
        check_model(model, run_dir, trust)  # a recorded sum that differs: refused
        for reason in skipped:
            log.warning("skipping a checkpoint: %s", reason)
        return model, state, step
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise DataError(f"{run_dir} has no complete checkpoint to resume from{detail}: start a new run")


# ---- logs that survive a resume -------------------------------------------------------------------
def keep_progress_csv(run_dir: Path, step: int) -> Path | None:
    """SB3 reopens tb/progress.csv with "w" on resume: move the earlier rows to
    progress_until_<step>.csv, never over an existing file (then _2, _3, ...); an empty file (a
    segment killed before its first row) is removed."""
    csv = Path(run_dir) / "tb" / "progress.csv"
    if not csv.is_file():
        return None
    if csv.stat().st_size == 0:
        csv.unlink()
        return None
    target = csv.with_name(f"progress_until_{step}.csv")
    i = 2
    while target.exists():
        target = csv.with_name(f"progress_until_{step}_{i}.csv")
        i += 1
    csv.rename(target)
    return target


class Timing:
    """timing.json: one entry per training segment (the fresh run, each resume) with its steps
    and wall time, and train_wall_s, their sum; rewritten (atomically) at every update, so a
    killed segment keeps the time up to its last update."""

    def __init__(self, run_dir: Path, start_step: int):
        self.file = Path(run_dir) / "timing.json"
        old = {}
        if self.file.is_file():
            try:
                old = json.loads(self.file.read_text())
            except ValueError:
                old = {}
        segments = old.get("segments")
        if segments is None and "train_wall_s" in old:  # written before segments were listed
            segments = [{"from_step": 0, "to_step": old.get("train_steps", 0),
                         "wall_s": old["train_wall_s"]}]
        self.segments = list(segments or [])
        self.segment = {"from_step": int(start_step), "to_step": int(start_step), "wall_s": 0.0}
        self.segments.append(self.segment)
        self.t0 = time.perf_counter()

    def update(self, step: int) -> dict:
        self.segment["to_step"] = int(step)
        self.segment["wall_s"] = time.perf_counter() - self.t0
        record = {"train_wall_s": float(sum(s["wall_s"] for s in self.segments)),
                  "train_steps": int(step), "segments": self.segments}
        atomic_write_json(self.file, record)
        return record
