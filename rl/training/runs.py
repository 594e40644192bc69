"""The run folder logs/<E>/<run_id>/: its name, its description, and what keeps it whole under
kill, races and tampering. Every command that makes a run makes it here.

- A run folder is made with one atomic mkdir: two runs never share one. Its name follows one rule
  (run_name), and run.json says what the run is; runs are selected by run.json, never by name.
- Every file is written to a temporary name and renamed when complete (enkf.io.atomic_path).
- Model zips are pickles (loading one can run any code): checksums.json keeps the sha256 of every
  model the run wrote, and a model whose sum is not the recorded one is refused unless trusted.
- A checkpoint is its curriculum state (written first) and its model zip (written last, then
  recorded): it is complete only when both are there, valid, and the model's sum recorded.
- timing.json lists every training segment (the fresh run, each resume) and sums them.
"""
from __future__ import annotations

import json
import logging
import re
import time
import zipfile
from pathlib import Path

from enkf.io import DataError, atomic_path, atomic_write_json, ensure_writable, sha256_file

log = logging.getLogger("enkfrl.train")

CHECKSUMS = "checksums.json"
PICKLE_WARNING = ("model zips are pickles, and loading one can run any code: pass --trust only "
                  "for a file you made yourself")


# ---- the folder ---------------------------------------------------------------------------------
RUN_JSON = "run.json"
"""What the run is: experiment, seed, study, variant, agent kind, config hash, when and by what it
was made, and the resolved config it was made with (resume compares config.yaml with it)."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=-]*")


def check_name(name: str, what: str) -> str:
    """A name that becomes part of a path (run id, study, variant): letters, digits, _ . + = -,
    not starting with a dot or dash, never '..' (so it cannot leave its folder)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise DataError(f"{what} {name!r}: a name may hold letters, digits and _ . + = - only "
                        f"(no '/', no '..', not starting with '.' or '-')")
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


def is_evaluated(run_dir: Path) -> bool:
    """metrics.json holds an evaluation with the test set."""
    try:
        return "test" in json.loads((Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


# ---- model files and their checksums ------------------------------------------------------------
def _record_key(run_dir: Path, path: Path) -> str:
    return Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()


def recorded_checksums(run_dir: Path) -> dict:
    f = Path(run_dir) / CHECKSUMS
    if not f.is_file():
        return {}
    try:
        sums = json.loads(f.read_text())
    except (OSError, ValueError):
        raise DataError(f"{f} is not readable JSON: the run's model checksums are lost; "
                        f"{PICKLE_WARNING}") from None
    return sums if isinstance(sums, dict) else {}


def save_model(model, path: Path, run_dir: Path) -> Path:
    """model.save(path) through a temporary file, then its sha256 into run_dir/checksums.json."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            model.save(f)
        digest = sha256_file(tmp)
    sums = recorded_checksums(run_dir)
    sums[_record_key(run_dir, path)] = digest
    atomic_write_json(Path(run_dir) / CHECKSUMS, dict(sorted(sums.items())))
    return path


def check_model(path: Path, run_dir: Path, trust: bool = False) -> None:
    """DataError unless path is a complete zip whose sha256 is the one the run recorded when it
    wrote the file (with trust: a complete zip is enough)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found: train the run first")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a model zip (empty, truncated or corrupt): resume the run "
                        f"to write it again")
    if trust:
        return
    recorded = recorded_checksums(run_dir).get(_record_key(run_dir, path))
    if recorded is None:
        raise DataError(f"{path} has no sha256 in {Path(run_dir) / CHECKSUMS} (not written by "
                        f"this run, or before checksums were kept); {PICKLE_WARNING}")
    if sha256_file(path) != recorded:
        raise DataError(f"{path} differs from the file this run wrote (sha256 mismatch with "
                        f"{CHECKSUMS}); {PICKLE_WARNING}")


def is_recorded(path: Path, run_dir: Path) -> bool:
    """path is a complete zip with the sha256 the run recorded for it."""
    try:
        check_model(path, run_dir)
    except DataError:
        return False
    return True


def load_model(algo, path: Path, run_dir: Path, trust: bool = False, **kwargs):
    """algo.load(path) after check_model; a zip SB3 cannot read, or weights that are not all
    finite, give a one-line DataError."""
    check_model(path, run_dir, trust)
    try:
        model = algo.load(path, **kwargs)
    except Exception as e:  # SB3 raises anything from KeyError to pickle errors on a bad zip
        first = (str(e).splitlines() or [""])[0][:200]
        raise DataError(f"{path} could not be loaded as a {algo.__name__} model "
                        f"({type(e).__name__}: {first})") from None
    bad = [name for name, p in model.policy.named_parameters() if not bool(p.isfinite().all())]
    if bad:
        raise DataError(f"{path} has non-finite weights (NaN/inf) in {', '.join(bad[:3])}"
                        f"{', ...' if len(bad) > 3 else ''}: resume from an earlier checkpoint")
    return model


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
    save_model(model, folder / f"model_{step}.zip", run_dir)


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
