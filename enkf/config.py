"""The data-assimilation config and the machinery that reads config.yaml.

config.yaml has a ``shared:`` block and an ``experiments:`` mapping (and the blocks of higher
layers). An experiment is the shared block deep-merged with the experiment's own block (mappings
merge key by key, anything else -- numbers, strings, lists -- replaces the shared value). The
merged dict is turned into a typed, frozen dataclass; every field has a docstring, no field has a
default, so a key missing from the yaml is an error just like an unknown one. Cross-field rules
are the schema's ``validate`` method.

This module owns the DA sections (seed, model, obs, filter, spinup, paths, test): ``DAConfig``.
The RL layer extends it with its own sections (rl/config.py: ``Config(DAConfig)``) using the same
loader, so one file is validated in one pass; nothing here knows the RL sections.

Every error is a ``ConfigError`` whose message names the offending key in dotted form; the CLI
prints it on one line and exits with code 2.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml


class ConfigError(ValueError):
    """A config problem, the message names the key (``filter.n_ens: must be >= 2, got 1``)."""


def without_nulls(obj):
    """obj with every mapping entry whose value is None left out, at any depth."""
    if isinstance(obj, dict):
        return {k: without_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [without_nulls(v) for v in obj]
    return obj


def hash_of(obj) -> str:
    """Short stable hash of a JSON-able object: of a config (DAConfig.hash), of its data settings
    (data_hash), of a study's overrides. The one hash function of the project. A
    null setting hashes as an absent one (as stale_keys compares them), so a key added to the
    schema as null where unused (filter.loc_radius) leaves the records made before it valid."""
    return hashlib.sha256(json.dumps(without_nulls(obj), sort_keys=True).encode()).hexdigest()[:16]


NO_RESULT_EFFECT = ("train.torch_threads", "train.env_threads", "train.block_columns", "train.device")
"""Keys that say how a run is executed, not what it computes: threads, the batched forecast's
column blocks (bit-identical results, tests/test_batched.py) and the device. A record made with
other values of these still describes the config; the config hash leaves them out."""


HASHED_AS_ABSENT = {"train.algo": "ppo", "ppo.lr_schedule": "constant", "agent.lstm_dtype": "float32",
                    "train.average_checkpoints": 1}
"""Keys added after records were made, at the value every earlier record ran with: at that value
the key hashes as absent (as a null setting does), so those records stay valid; any other value
changes the hash."""
READ_ONLY_WHEN = {"offpolicy": ("train.algo", ("sac", "td3"))}
"""Sections a run reads only when a key has one of some values: a run that does not read one hashes
as without it (the SAC/TD3 settings change nothing a PPO run computes)."""


def read_settings(d: dict) -> dict:
    """A config dict less the sections its run does not read (READ_ONLY_WHEN) and less the
    HASHED_AS_ABSENT keys at their earlier value: what a record of the run depends on."""
    d = copy.deepcopy(d)

    def value(key):
        section, _, sub = key.partition(".")
        return d[section].get(sub) if isinstance(d.get(section), dict) else None
    for name, (key, values) in READ_ONLY_WHEN.items():
        if value(key) not in values:
            d.pop(name, None)
    for key in [k for k, v in HASHED_AS_ABSENT.items() if value(k) == v]:
        section, _, sub = key.partition(".")
        d[section].pop(sub)
    return d


def result_hash(d: dict) -> str:
    """hash_of read_settings(d) less NO_RESULT_EFFECT: what DAConfig.hash gives."""
    d = read_settings(d)
    for key in NO_RESULT_EFFECT:
        section, _, sub = key.partition(".")
        if isinstance(d.get(section), dict):
            d[section].pop(sub, None)
    return hash_of(d)


# ---- what the data files depend on (enkf/datafiles.py names, makes and reads the files) ---------
DATA_SECTIONS = ("seed", "model", "obs", "filter", "spinup", "paths")
"""Sections of the config that paths.h5 depends on."""
SPINUP_SECTIONS = ("seed", "model", "spinup", "paths.n_paths")
"""Sections (and single keys) that spinup.h5 depends on."""
NO_DATA_EFFECT = ("paths.workers", "paths.burn_in", "spinup.thin")
"""Keys of those sections that change no stored array the readers compare, so changing them never
makes data stale: processes used by precompute, cycles the printed summaries skip, and the
thinning of the plot-only spin-up states (spinup.h5 records their steps, thinned_steps)."""


def settings_of(d: dict, sections: tuple) -> dict:
    """The given sections (or section.key) of a config dict, less NO_DATA_EFFECT."""
    out = {}
    for key in sections:
        section, _, sub = key.partition(".")
        if sub:
            out.setdefault(section, {})[sub] = copy.deepcopy(d[section][sub])
        else:
            out[section] = copy.deepcopy(d[section])
    for key in NO_DATA_EFFECT:
        section, _, sub = key.partition(".")
        if isinstance(out.get(section), dict):
            out[section].pop(sub, None)
    return out


def data_settings(cfg: DAConfig) -> dict:
    """The settings that determine the arrays of paths.h5."""
    return settings_of(cfg.to_dict(), DATA_SECTIONS)


def spinup_settings(cfg: DAConfig) -> dict:
    """The settings that determine the arrays of spinup.h5."""
    return settings_of(cfg.to_dict(), SPINUP_SECTIONS)


def data_hash(cfg: DAConfig) -> str:
    """Hash of what determines paths.h5 (not the experiment's name, not the RL settings)."""
    return hash_of(data_settings(cfg))


def spinup_hash(cfg: DAConfig) -> str:
    """Hash of what determines spinup.h5."""
    return hash_of(spinup_settings(cfg))


def stale_keys(stored: dict, current: dict, prefix: str = "", ignored: tuple = NO_DATA_EFFECT) -> list[str]:
    """Dotted keys whose value differs between a file's stored settings and the config's (keys
    in `ignored`, by default NO_DATA_EFFECT, left out): empty when the file is up to date."""
    diff = []
    for k in sorted(set(stored) | set(current)):
        key = f"{prefix}{k}"
        if key in ignored:
            continue
        a, b = stored.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diff += stale_keys(a, b, key + ".", ignored)
        elif a != b:
            diff.append(key)
    return diff



# --------------------------------------------------------------------------------------------
# Schema. Field order is the order of config.yaml; each docstring is the key's documentation.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    name: Literal["lorenz96", "lorenz63"]
    """Dynamical model."""
    n: int
    """State dimension (Lorenz-96: any n >= 4; Lorenz-63: 3)."""
    dt: float
    """Integrator time step (model time units)."""
    integrator: Literal["rk4", "euler"]
    """rk4 (default) or explicit euler (the old code's integrator, to reproduce old runs)."""
    forcing: float
    """Lorenz-96 forcing F (unused by Lorenz-63)."""
    sigma: float
    """Lorenz-63 sigma (unused by Lorenz-96)."""
    rho: float
    """Lorenz-63 rho."""
    beta: float
    """Lorenz-63 beta."""


@dataclass(frozen=True)
class ObsConfig:
    t_obs: float
    """Time between observations; must be a whole number of model.dt."""
    stride: int
    """Observe every stride-th variable starting at 0 (1: H = identity)."""
    error_var: float
    """Observation error variance r: R = r * I (must be > 0 so R is positive definite)."""


@dataclass(frozen=True)
class FilterConfig:
    method: Literal["enkf", "etkf", "letkf"]
    """enkf: perturbed-observation EnKF. etkf: deterministic square-root filter. letkf: the ETKF
    localised on the ring (Lorenz-96), one local analysis per variable (enkf/filters.py)."""
    n_ens: int
    """Ensemble size (>= 2)."""
    inflation: float
    """Multiplicative inflation of the anomalies (1.0: none)."""
    inflation_stage: Literal["forecast", "analysis"]
    """forecast: inflate forecast anomalies before the update (old code). analysis: after (DAPPER)."""
    centre_perturbations: bool
    """enkf only: subtract the member mean of the observation perturbations (DAPPER does)."""
    rotate: bool
    """etkf, letkf: apply a random mean-preserving rotation to the analysis anomalies."""
    loc_radius: float | Literal[None]
    """letkf only (null otherwise): localisation radius in grid points, DAPPER's loc_rad: the
    Gaspari-Cohn taper of R^{-1} has half-width 1.82 loc_radius and reaches 0 at 3.64 loc_radius."""
    init_spread: float
    """Initial ensemble = truth + N(0, init_spread^2) per member and variable."""


@dataclass(frozen=True)
class SpinupConfig:
    steps: int
    """Length of the one spin-up trajectory, in model steps."""
    init_scale: float
    """The spin-up starts from N(0, init_scale^2) per variable ("a random state near 0")."""
    sample_fraction: float
    """Start states are sampled, without replacement, from the last fraction of the spin-up."""
    thin: int
    """Keep every thin-th spin-up state in spinup.h5 (for plots only)."""


@dataclass(frozen=True)
class PathsConfig:
    n_paths: int
    """Number of start states / reference EnKF runs."""
    n_cycles: int
    """Assimilation cycles per path."""
    eval_path: int
    """The held-out evaluation path."""
    train_paths: list[int]
    """Inclusive range [first, last] of training paths; must not contain eval_path."""
    burn_in: int
    """Cycles left out of the time-mean RMSE summaries."""
    store_ensembles: bool
    """Also store the full forecast and analysis ensembles (large)."""
    workers: int
    """Processes for precompute (0: one per core)."""


@dataclass(frozen=True)
class TestConfig:
    seed: int
    """Master seed of the test split: its own spin-up and reference runs (test_split), apart from
    the training data, whose paths are overlapping windows of one spin-up trajectory."""
    n_paths: int
    """Paths of the test split (>= 2: path 0 is its eval path, paths 1.. fill train_paths)."""
    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class DAConfig:
    experiment: str
    """Experiment name (filled from the experiments: key, not written in the block)."""
    seed: int
    """Master seed; every draw derives from (seed, stream, path, cycle)."""
    model: ModelConfig
    obs: ObsConfig
    filter: FilterConfig
    spinup: SpinupConfig
    paths: PathsConfig
    test: TestConfig

    @classmethod
    def from_dict(cls, data: dict, split: str = "train"):
        """Validate an already merged dict (as written into run folders) into this schema."""
        cfg = _build(cls, data, "")
        cfg.validate(split)
        return cfg

    # ---- derived values, computed in one place -----------------------------------------------
    @property
    def steps_per_cycle(self) -> int:
        """Model steps between two observations."""
        return int(round(self.obs.t_obs / self.model.dt))

    @property
    def obs_index(self) -> "list[int]":
        """Indices of the observed variables (H selects these)."""
        return list(range(0, self.model.n, self.obs.stride))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self, sections: "tuple[str, ...] | None" = None) -> str:
        """Short stable hash of the resolved config less NO_RESULT_EFFECT, or of some of its
        top-level sections."""
        d = self.to_dict()
        return result_hash(d if sections is None else {k: d[k] for k in sections})

    # ---- cross-field rules -------------------------------------------------------------------
    def validate(self, split: str = "train") -> None:
        """Raise ConfigError (naming the key) for values that cannot go together. split="test":
        the test split's own config, whose seed is test.seed by construction."""
        cfg, need = self, require
        m, o, f, s, p = cfg.model, cfg.obs, cfg.filter, cfg.spinup, cfg.paths
        need(cfg.seed >= 0, f"seed: must be >= 0, got {cfg.seed}")
        need(m.dt > 0, f"model.dt: must be > 0, got {m.dt}")
        if m.name == "lorenz96":
            need(m.n >= 4, f"model.n: Lorenz-96 needs n >= 4, got {m.n}")
        else:
            need(m.n == 3, f"model.n: Lorenz-63 has n = 3, got {m.n}")
        ratio = o.t_obs / m.dt
        need(o.t_obs > 0 and abs(ratio - round(ratio)) < 1e-9 * max(1.0, ratio) and round(ratio) >= 1,
             f"obs.t_obs: must be a whole number of model.dt = {m.dt}, got {o.t_obs} ({ratio:g} steps)")
        need(1 <= o.stride <= m.n, f"obs.stride: must be in [1, model.n = {m.n}], got {o.stride}")
        need(o.error_var > 0, f"obs.error_var: R = error_var * I must be positive definite, got {o.error_var}")
        need(f.n_ens >= 2, f"filter.n_ens: must be >= 2, got {f.n_ens}")
        need(f.inflation > 0, f"filter.inflation: must be > 0, got {f.inflation}")
        need(f.init_spread >= 0, f"filter.init_spread: must be >= 0, got {f.init_spread}")
        if f.method == "letkf":
            need(m.name == "lorenz96", f"filter.method: letkf localises on a ring, Lorenz-96 only (model.name is {m.name})")
            need(f.loc_radius is not None and f.loc_radius > 0,
                 f"filter.loc_radius: letkf needs a radius > 0 (grid points), got {f.loc_radius}")
        else:
            need(f.loc_radius is None, f"filter.loc_radius: only letkf localises, must be null for method "
                                       f"{f.method}, got {f.loc_radius}")
        need(s.steps >= 2, f"spinup.steps: must be >= 2, got {s.steps}")
        need(s.init_scale > 0, f"spinup.init_scale: must be > 0, got {s.init_scale}")
        need(0 < s.sample_fraction <= 1, f"spinup.sample_fraction: must be in (0, 1], got {s.sample_fraction}")
        need(1 <= s.thin <= s.steps, f"spinup.thin: must be in [1, spinup.steps], got {s.thin}")
        need(p.n_paths >= 1, f"paths.n_paths: must be >= 1, got {p.n_paths}")
        pool = int(s.steps * s.sample_fraction)
        need(p.n_paths <= pool,
             f"paths.n_paths: {p.n_paths} distinct starts cannot come from the last "
             f"{s.sample_fraction:g} of a {s.steps}-step spin-up ({pool} states)")
        need(p.n_cycles >= 1, f"paths.n_cycles: must be >= 1, got {p.n_cycles}")
        need(0 <= p.burn_in < p.n_cycles, f"paths.burn_in: must be in [0, paths.n_cycles), got {p.burn_in}")
        need(0 <= p.eval_path < p.n_paths, f"paths.eval_path: must be in [0, {p.n_paths}), got {p.eval_path}")
        need(len(p.train_paths) == 2, f"paths.train_paths: must be [first, last], got {p.train_paths}")
        first, last = p.train_paths
        need(0 <= first <= last < p.n_paths,
             f"paths.train_paths: need 0 <= first <= last < n_paths = {p.n_paths}, got {p.train_paths}")
        need(not first <= p.eval_path <= last,
             f"paths.eval_path: {p.eval_path} lies inside paths.train_paths {p.train_paths}")
        need(p.workers >= 0, f"paths.workers: must be >= 0, got {p.workers}")
        if split == "train":  # the test split's own config has seed == test.seed by construction
            ts = cfg.test
            need(ts.seed >= 0, f"test.seed: must be >= 0, got {ts.seed}")
            need(ts.seed != cfg.seed, f"test.seed: must differ from the master seed {cfg.seed}, got {ts.seed}")
            need(2 <= ts.n_paths <= pool,
                 f"test.n_paths: must be in [2, {pool}] (the sampled spin-up tail), got {ts.n_paths}")


# --------------------------------------------------------------------------------------------
# Generic dict -> dataclass conversion with type checks.
# --------------------------------------------------------------------------------------------
def _type_name(value) -> str:
    return type(value).__name__


def _convert(value, tp, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # float | Literal['auto']: the literal first
        options = typing.get_args(tp)
        literals = [o for o in options if typing.get_origin(o) is Literal]
        for o in literals:
            if value in typing.get_args(o):
                return value
        others = [o for o in options if typing.get_origin(o) is not Literal]
        try:
            return _convert(value, others[0], key)
        except ConfigError:
            allowed = [v for o in literals for v in typing.get_args(o)]
            raise ConfigError(f"{key}: expected a number or one of {allowed}, got "
                              f"{_type_name(value)} {value!r}") from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {_type_name(value)}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_type_name(value)} {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {_type_name(value)} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_type_name(value)} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str) and "e" in value.lower():
                hint = " (YAML 1.1 reads 1e-5 as a string: write 1.0e-5)"
            raise ConfigError(f"{key}: expected a number, got {_type_name(value)} {value!r}{hint}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_type_name(value)} {value!r}")
        return value
    raise TypeError(f"schema type {tp} of {key} is not supported")  # a bug in the schema


def _build(cls, data: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            raise ConfigError(f"{prefix + '.' if prefix else ''}{k}: unknown key")
    kwargs = {}
    for name in names:
        key = f"{prefix + '.' if prefix else ''}{name}"
        if name not in data:
            raise ConfigError(f"{key}: missing")
        kwargs[name] = _convert(data[name], hints[name], key)
    return cls(**kwargs)


def _admits_none(tp) -> bool:
    """The schema type allows null (X | None, or a Literal with None among its values)."""
    if tp is type(None):
        return True
    if typing.get_origin(tp) is typing.Literal:
        return None in typing.get_args(tp)
    return any(_admits_none(a) for a in typing.get_args(tp)) if typing.get_args(tp) else False


def with_absent_nulls(cls, data: dict) -> dict:
    """data with every null-able key of the schema cls that it lacks set to null, at any depth: the
    config a run folder kept before the key existed (a null setting hashes as an absent one, so it
    is the same config). Keys that cannot be null stay missing and are reported as such."""
    out = dict(data)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.name not in out:
            if _admits_none(tp):
                out[f.name] = None
        elif dataclasses.is_dataclass(tp) and isinstance(out[f.name], dict):
            out[f.name] = with_absent_nulls(tp, out[f.name])
    return out


def deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge key by key; any other value in ``override`` replaces the one in ``base``."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out




def require(ok: bool, msg: str) -> None:
    """A validation rule: raise ConfigError(msg) unless ok."""
    if not ok:
        raise ConfigError(msg)

# --------------------------------------------------------------------------------------------
# Public entry points.
# --------------------------------------------------------------------------------------------
class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key written twice in one mapping (safe_load keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _load_yaml(path: Path):
    """The YAML document of a file (duplicate keys and tags refused), errors in one line."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        return yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        where = f" at line {e.problem_mark.line + 1}" if e.problem_mark else ""
        raise ConfigError(f"{path}: not valid YAML ({e.problem}{where})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None




def read_yaml(path: str | Path, blocks: tuple[str, ...] = ("shared", "experiments"),
              exact: bool = False) -> dict:
    """The top-level mapping of a config file. It must have the given blocks (exact: only those),
    each a mapping or empty."""
    path = Path(path)
    raw = _load_yaml(path)
    names = " and ".join(", ".join(f"'{b}'" for b in blocks).rsplit(", ", 1))
    if not isinstance(raw, dict) or (set(raw) != set(blocks) if exact else not set(blocks) <= set(raw)):
        raise ConfigError(f"{path}: top level must have {'exactly ' if exact else ''}the keys {names}")
    for k in raw:
        if raw[k] is not None and not isinstance(raw[k], dict):
            raise ConfigError(f"{path}: {k}: expected a mapping, got {_type_name(raw[k])} {raw[k]!r}")
    return raw


SPLITS = ("train", "test")


def test_split(cfg: DAConfig) -> DAConfig:
    """The validated config of the test data: a separate spin-up and reference runs with master
    seed test.seed and test.n_paths paths, everything else as cfg (same schema as cfg). Its
    paths.eval_path is 0 and its paths.train_paths [1, n_paths - 1] only satisfy validation: the
    test split is never trained on."""
    d = cfg.to_dict()
    d["seed"] = cfg.test.seed
    d["paths"] = dict(d["paths"], n_paths=cfg.test.n_paths, eval_path=0,
                      train_paths=[1, cfg.test.n_paths - 1])
    return type(cfg).from_dict(d, split="test")


test_split.__test__ = False  # not a pytest test function


def split_config(cfg: DAConfig, split: str) -> DAConfig:
    """cfg itself for the training split, test_split(cfg) for the test split."""
    if split not in SPLITS:
        raise ConfigError(f"--split: must be one of {list(SPLITS)}, got {split!r}")
    return cfg if split == "train" else test_split(cfg)


def _has_key(d, dotted: str) -> bool:
    for part in re.sub(r"\[\d+\]", "", dotted).split("."):
        if not isinstance(d, dict) or part not in d:
            return False
        d = d[part]
    return True


def merged_experiment(raw: dict, path: str | Path, experiment: str) -> tuple[dict, dict, dict]:
    """(merged, shared, own): shared deep-merged with experiments[experiment] of a read file."""
    exps = raw["experiments"] or {}
    if experiment not in exps:
        raise ConfigError(f"--exp {experiment}: no such experiment in {path} (have: {', '.join(exps)})")
    own = exps[experiment] or {}
    shared = raw["shared"] or {}
    if not isinstance(own, dict):
        raise ConfigError(f"{path}: experiments.{experiment}: expected a mapping, got {_type_name(own)}")
    if "experiment" in own or "experiment" in shared:
        raise ConfigError(f"{path}: experiment: is set from the experiments: key, do not write it")
    merged = deep_merge(shared, own)
    merged["experiment"] = experiment
    return merged, shared, own


def build_experiment(schema, merged: dict, shared: dict, own: dict, path, experiment: str):
    """schema.from_dict(merged); an error names the file and the block the key was written in
    (shared.agent.lstm_hidden or experiments.L96_1.filter.n_ens)."""
    try:
        return schema.from_dict(merged)
    except ConfigError as e:
        key = str(e).split(": ", 1)[0]
        if _has_key(own, key):
            where = f"experiments.{experiment}."
        elif _has_key(shared, key):
            where = "shared."
        else:
            raise ConfigError(f"{path} (shared merged with experiments.{experiment}): {e}") from None
        raise ConfigError(f"{path}: {where}{e}") from None


def load_da_config(path: str | Path, experiment: str) -> DAConfig:
    """The DA sections of one experiment of config.yaml, validated (the sections of higher
    layers are left to them: rl.config.load_config validates the whole file)."""
    raw = read_yaml(path)
    merged, shared, own = merged_experiment(raw, path, experiment)
    names = {f.name for f in dataclasses.fields(DAConfig)}
    merged = {k: v for k, v in merged.items() if k in names}
    return build_experiment(DAConfig, merged, shared, own, path, experiment)


def load_yaml_mapping(path: str | Path) -> dict:
    """A resolved config file (<run>/config.yaml, written by dump_config): its mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path.parent} is not a run folder (it has no config.yaml)")
    raw = _load_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {_type_name(raw)}")
    return raw


def dump_config(cfg: DAConfig, path: str | Path) -> None:
    """Write the resolved config (loadable with ``load_run_config``), atomically."""
    from enkf.io import atomic_write_text
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
