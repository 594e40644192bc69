"""Rebuild the generated documents from their templates, results/ and config.yaml, so no measured
number in them is typed by hand:

    readme.md         from docs/readme_template.md
    docs/results.md   from docs/results_template.md

    python scripts/fill_readme.py            rewrite both
    python scripts/fill_readme.py --check    exit 1, one line per problem, when a results file
                                             comes from another config than config.yaml would run
                                             for it, or a generated file differs from what its
                                             template and results/ produce

Each generated file starts with a line naming its template. Placeholders of the templates:
``{{name}}`` (a table: see table(); a study name renders results/ablations/<name>.json),
``{{value FILE | KEY | FORMAT}}`` (one number of results/FILE: KEY is a /-separated path,
``summary[variant=V]`` picks the list entry whose fields match, FORMAT a format spec such as
``.3f``; ``pct`` writes a fraction as a signed percentage), ``{{measured FILE | KEY | FORMAT}}``
(the same, or "not measured" while results/FILE does not exist), ``{{ratio FILE | KEY | FILE | KEY |
FORMAT}}`` (the first value over the second), ``{{change FILE | KEY | FILE | KEY}}`` (the first
relative to the second, a signed percentage), ``{{config EXP | KEY}}`` (a value of EXP's resolved
config, KEY dotted).
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables  # noqa: E402

from enkf.config import ConfigError, deep_merge, hash_of, result_hash, split_config  # noqa: E402
from enkf.datafiles import DATA_SECTIONS, data_hash, settings_of  # noqa: E402
from rl.config import from_dict, load_ablation, load_config  # noqa: E402

GENERATED = (("readme.md", "docs/readme_template.md"), ("docs/results.md", "docs/results_template.md"))
"""(generated file, its template), relative to the repository root."""
NOT_MEASURED = tables.NOT_MEASURED


class TemplateError(ValueError):
    """A placeholder that results/ cannot fill."""


# ---- filling ---------------------------------------------------------------------------------------
def faults() -> str:
    """The faults table from results/faults.json (scripts/faults_table.py)."""
    if not (tables.RESULTS / "faults.json").is_file():
        return NOT_MEASURED
    r = json.loads((tables.RESULTS / "faults.json").read_text())
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    rows = ["| what was tried | command | exit | what the user sees |", "|---|---|---|---|"]
    for c in r["cases"]:
        code = c["exit_code"]
        exit_code = f"{signal.Signals(-code).name}" if code < 0 else code
        rows.append(f"| {cell(c['fault'])} | `{cell(c['command'])}` | {exit_code} | {cell(c['message'])} |")
    p = r["provenance"]
    rows.append(f"\n{len(r['cases'])} cases, commit {p['git_commit'][:12]}{' (dirty)' if p['dirty'] else ''}, "
                f"{p['wall_s']:.0f} s.")
    return "\n".join(rows)


def table(name: str) -> str:
    """A table placeholder: one of SECTIONS, else the study results/ablations/<name>.json."""
    return SECTIONS[name]() if name in SECTIONS else tables.ablation(name)


SECTIONS = {"faults": faults, "data": tables.data, "fit": tables.fit, "fit_pointwise": tables.fit_pointwise,
            "headline": tables.headline, "fit_spread": tables.fit_spread, "truth_study": tables.truth_study, "bench": tables.bench,
            "ray_study": tables.ray_study, "gpu_check": tables.gpu_check,
            "classical_filters": tables.classical_filters, "beyond": tables.beyond,
            "beyond_headline": tables.beyond_headline}
"""Table placeholders other than a study's; each renders NOT_MEASURED while its records are absent
where its section may precede them (faults, bench, classical filters, beyond imitation)."""


def lookup(obj, key: str, where: str):
    """obj at a /-separated key; ``name[field=value,...]`` picks the matching entry of a list."""
    for part in key.split("/"):
        m = re.fullmatch(r"([^\[\]]+)(?:\[(.+)\])?", part.strip())
        if m is None:
            raise TemplateError(f"{where}: bad key part {part!r}")
        name, sel = m.groups()
        if isinstance(obj, list) and name.isdigit():
            obj = obj[int(name)] if int(name) < len(obj) else None
        else:
            obj = obj.get(name) if isinstance(obj, dict) else None
        if obj is not None and sel:
            want = dict(kv.split("=", 1) for kv in sel.split(","))
            hits = [e for e in obj if all(str(e.get(k)) == v for k, v in want.items())]
            obj = hits[0] if len(hits) == 1 else None
        if obj is None:
            raise TemplateError(f"{where}: {key!r} not found")
    return obj


def fmt(value, spec: str) -> str:
    if spec == "pct":
        return f"{100 * value:+.1f}%".replace("-", "−")
    if spec == "yesno":
        if not isinstance(value, bool):
            raise TemplateError(f"yesno needs true/false, got {value!r}")
        return "yes" if value else "no"
    return format(value, spec)


def result_value(file: str, key: str, where: str):
    path = tables.RESULTS / file.strip()
    if not path.is_file():
        raise TemplateError(f"{where}: results/{file.strip()} not found")
    return lookup(json.loads(path.read_text()), key.strip(), where)


def placeholder(body: str, config_path: Path) -> str:
    """The text for ``{{body}}``."""
    where = "{{" + body + "}}"
    kind, _, rest = body.strip().partition(" ")
    args = [a.strip() for a in rest.split("|")] if rest else []
    if kind == "value" and len(args) == 3:
        return fmt(result_value(args[0], args[1], where), args[2])
    if kind == "measured" and len(args) == 3:
        if not (tables.RESULTS / args[0]).is_file():
            return NOT_MEASURED
        return fmt(result_value(args[0], args[1], where), args[2])
    if kind == "ratio" and len(args) == 5:
        num, den = result_value(args[0], args[1], where), result_value(args[2], args[3], where)
        return fmt(num / den, args[4])
    if kind == "change" and len(args) == 4:
        num, den = result_value(args[0], args[1], where), result_value(args[2], args[3], where)
        return fmt(num / den - 1, "pct")
    if kind == "config" and len(args) == 2:
        try:
            obj = load_config(config_path, args[0])
        except ConfigError as e:
            raise TemplateError(f"{where}: {e}") from None
        for name in args[1].split("."):  # a field or a derived property (steps_per_cycle)
            if not hasattr(obj, name):
                raise TemplateError(f"{where}: the config has no {args[1]!r}")
            obj = getattr(obj, name)
        return str(obj)
    if not args:  # a table: one of TABLES or results/ablations/<kind>.json
        try:
            return table(kind)
        except (OSError, KeyError, ValueError) as e:
            raise TemplateError(f"{where}: {type(e).__name__} {e}") from None
    raise TemplateError(f"{where}: unknown placeholder")


def header(template: str) -> str:
    return f"<!-- generated from {template} by scripts/fill_readme.py — edit that -->\n"


def render(root: Path, template: str = "docs/readme_template.md") -> tuple[str, list[str]]:
    """A generated file as its template and results/ make it, and the placeholders that failed."""
    tables.RESULTS = root / "results"
    errors = []

    def sub(m):
        try:
            return placeholder(m[1], root / "config.yaml")
        except TemplateError as e:
            errors.append(str(e))
            return m[0]
    text = re.sub(r"\{\{(.+?)\}\}", sub, (root / template).read_text())
    return header(template) + text, errors


# ---- checking ---------------------------------------------------------------------------------------
def _seeded(cfg_dict: dict, seed: int) -> dict:
    return dict(cfg_dict, train=dict(cfg_dict["train"], seed=seed))


def expected_hashes(rel: Path, doc: dict, config_path: Path) -> tuple[set[str], str]:
    """The config hashes config.yaml would give the run behind results file ``rel`` (relative to
    results/), and the command that rebuilds it. Raises ConfigError/KeyError when it cannot say."""
    parts = rel.parts
    if parts[0] == "data":
        exp, split = doc["experiment"], doc.get("split", "train")
        cfg = split_config(load_config(config_path, exp), split)
        return {data_hash(cfg)}, f"enkfrl precompute --exp {exp} --split {split} --record"
    if parts[0] == "faults.json":  # the fault-injection cases run on the smoke experiment
        return ({load_config(config_path, "smoke").hash()},
                "python scripts/faults_table.py")
    if parts[0] == "fresh_install.json":  # scripts/time_fresh_install.sh: depends on no setting
        return {hash_of({})}, "scripts/time_fresh_install.sh"
    if parts[0] == "quickstart":  # scripts/time_quickstart.py: `make run EXP=E` on a fresh clone
        exp = doc["experiment"]
        return {load_config(config_path, exp).hash()}, f"python scripts/time_quickstart.py {exp}"
    if parts[0] == "test_suite.json":  # scripts/time_suite.py: the suite's time, both orders
        return {hash_of({})}, "python scripts/time_suite.py"
    if parts[0].startswith("mutation"):  # scripts/mutation_check.py --record: depends on no setting
        return {hash_of({})}, "python scripts/mutation_check.py --record"
    if parts[0] == "gpu_check.json":  # scripts/gpu_check.py on a GPU machine, L96_1's config
        return ({load_config(config_path, doc["experiment"]).hash()}, "python scripts/gpu_check.py (on a GPU machine)")
    if parts[0] == "bench.json":
        from cli.common import bench_config
        return {hash_of(bench_config(config_path))}, "enkfrl bench --record"
    if parts[0] == "filters":  # rl/studies/filters.py: the experiment's DA settings and its filters grid
        from rl.studies.filters import study_config
        exp = doc["experiment"]
        return {hash_of(study_config(config_path, exp))}, f"enkfrl filters --exp {exp} --record"
    if parts[0] == "beyond" and parts[1].startswith("transfer_"):  # rl/studies/transfer.py
        from rl.studies.transfer import transfer_config
        targets = {t: load_config(config_path, t) for t in doc["provenance"]["config"]["targets"]}
        return ({hash_of(transfer_config(doc["source"], targets))},
                f"enkfrl transfer --runs {','.join(doc['runs'])} --to {','.join(targets)} --record")
    if parts[0] == "beyond":  # rl/studies/beyond.py: the study's variants, their lowest seed
        from rl.studies.beyond import study_config
        _, runs = load_ablation(config_path, doc["study"])
        variants = {}
        for v, e in doc["variants"].items():
            hits = [r for r in runs if r.variant == v and r.seed == min(e["seeds"])]
            if not hits:
                raise KeyError(f"config.yaml's study {doc['study']} has no variant {v} seed {min(e['seeds'])}")
            variants[v] = hits[0].cfg.to_dict()
        return ({hash_of(study_config(doc["study"], variants))},
                f"scripts/beyond.sh {doc['study']} (then enkfrl beyond --study {doc['study']} --record)")
    if parts[0].startswith("fit") and doc.get("study"):  # a variant of a `measure: train` study
        _, runs = load_ablation(config_path, doc["study"])
        want = {r.cfg.hash() for r in runs if r.experiment == doc["experiment"]
                and r.variant == doc["variant"] and r.seed in doc["seeds"]}
        if not want:
            raise KeyError(f"config.yaml's study {doc['study']} has no variant {doc['variant']} for {doc['experiment']}")
        return want, f"scripts/train_concurrent.sh --study {doc['study']} --variant {doc['variant']} {doc['experiment']}"
    if parts[0].startswith("fit"):
        base = load_config(config_path, doc["experiment"]).to_dict()
        if doc.get("overrides"):
            base = deep_merge(base, doc["overrides"])
        seeds = doc.get("seeds") or [base["train"]["seed"]]
        return ({from_dict(_seeded(base, s)).hash() for s in seeds},
                f"enkfrl train/evaluate --exp {doc['experiment']} (results/{parts[0]})")
    raise KeyError(f"no rule says which config of config.yaml results/{rel} comes from")


def root_results(config_path: Path) -> Path:
    return Path(config_path).parent / "results"


def _hashes_to(prov: dict) -> bool:
    """The recorded config hashes to the recorded config_hash (whole, or less NO_RESULT_EFFECT)."""
    cfg = prov.get("config")
    return isinstance(cfg, dict) and prov["config_hash"] in (hash_of(cfg), result_hash(cfg))


def _recorded_hash(prov: dict) -> str:
    """The hash config.yaml's configs are compared with: of the recorded config less the keys that
    do not change results (enkf.config.NO_RESULT_EFFECT); the recorded hash where no config is kept."""
    cfg = prov.get("config")
    return result_hash(cfg) if isinstance(cfg, dict) and "train" in cfg else prov["config_hash"]


def _safe_key(key_of, cfg_dict) -> str:
    try:
        return key_of(cfg_dict)
    except (KeyError, TypeError) as e:
        return f"(incomplete config: {e})"


def ablation_problems(rel: Path, doc: dict, config_path: Path) -> list[str]:
    """An ablation study (results/ablations/Q.json with records, or one trial file
    results/ablations/Q/*.json): every record's config is the one config.yaml runs for its
    (experiment, variant, seed) today, and a study file holds every run."""
    question = rel.parts[1] if len(rel.parts) > 2 else rel.stem
    rerun = f"rerun `enkfrl ablate --question {question}`"
    try:
        _, runs = load_ablation(config_path, question)
    except ConfigError as e:
        return [f"results/{rel}: stale, config.yaml has no such study ({e})"]
    data_only = False  # a study's trial is rerun on any change of its resolved config (rl/studies/ablate.py)
    key_of = result_hash
    want = {(r.experiment, r.variant, r.seed): key_of(r.cfg.to_dict()) for r in runs}
    records = doc["records"] if "records" in doc else [doc]
    if not any(isinstance(rec.get("provenance"), dict) for rec in records):
        return [f"results/{rel}: stale (old format, no provenance): {rerun}"]
    out, seen = [], set()
    for rec in records:
        key = (rec.get("experiment"), rec.get("variant"), rec.get("seed"))
        seen.add(key)
        prov = rec.get("provenance")
        if not isinstance(prov, dict):
            out.append(f"results/{rel}: stale (old format, no provenance in record {key}): {rerun}")
        elif key not in want:
            out.append(f"results/{rel}: stale, config.yaml no longer runs {key}: {rerun}")
        elif "config" not in prov:  # a study table: its trial files (checked too) hold the configs
            trial = rel.parent / rel.stem / f"{key[0]}__{key[1]}__seed{key[2]}.json"
            try:
                recorded = _recorded_hash(json.loads((root_results(config_path) / trial).read_text())["provenance"])
            except (OSError, ValueError, KeyError, TypeError):
                recorded = prov.get("config_hash")
            if not data_only and recorded != want[key]:
                out.append(f"results/{rel}: stale, {key} ran config {prov.get('config_hash')} but config.yaml "
                           f"gives {want[key]}: {rerun}")
        elif not _hashes_to(prov):
            out.append(f"results/{rel}: the config recorded for {key} does not hash to its config_hash "
                       f"(edited by hand?): {rerun}")
        elif _safe_key(key_of, prov.get("config")) != want[key]:
            out.append(f"results/{rel}: stale, {key} ran config {prov.get('config_hash')}"
                       f"{' (data settings)' if data_only else ''} but config.yaml gives {want[key]}: {rerun}")
    if "records" in doc:
        missing = sorted(set(want) - seen, key=str)
        if missing:
            out.append(f"results/{rel}: incomplete, lacks {len(missing)} run(s) of config.yaml, e.g. "
                       f"{missing[0]}: {rerun}")
    return out


def result_problems(root: Path) -> list[str]:
    """One line per results file that lacks provenance or comes from another config."""
    results, config_path = root / "results", root / "config.yaml"
    out = []
    for path in sorted(results.rglob("*.json")):
        rel = path.relative_to(results)
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            out.append(f"results/{rel}: not readable JSON ({e})")
            continue
        if rel.parts[0] == "ablations":
            out.extend(ablation_problems(rel, doc, config_path))
            continue
        prov = doc.get("provenance") if isinstance(doc, dict) else None
        try:
            want, command = expected_hashes(rel, doc, config_path)
        except (ConfigError, KeyError, TypeError) as e:
            out.append(f"results/{rel}: cannot recompute its config ({type(e).__name__}: {e})")
            continue
        if not isinstance(prov, dict) or "config_hash" not in prov:
            out.append(f"results/{rel}: stale (old format, no provenance): rerun `{command}`")
        elif rel.parts[0] == "data" and isinstance(prov.get("config"), dict):
            # the data depend on DATA_SECTIONS less NO_DATA_EFFECT (enkf/datafiles.py): compare those
            try:
                recorded = hash_of(settings_of(prov["config"], DATA_SECTIONS))
            except KeyError as e:
                recorded = f"(incomplete config: {e})"
            if prov["config_hash"] not in (hash_of(prov["config"]), recorded):
                out.append(f"results/{rel}: its recorded config does not hash to its config_hash "
                           f"(edited by hand?): rerun `{command}`")
            elif recorded not in want:
                out.append(f"results/{rel}: stale, its data settings hash to {recorded} but config.yaml "
                           f"gives {', '.join(sorted(want))}: rerun `{command}`")
        elif _recorded_hash(prov) not in want:
            out.append(f"results/{rel}: stale, ran config {prov['config_hash']} but config.yaml gives "
                       f"{', '.join(sorted(want))}: rerun `{command}`")
        elif not _hashes_to(prov):
            out.append(f"results/{rel}: its recorded config does not hash to its config_hash "
                       f"(edited by hand?): rerun `{command}`")
    return out


def generated_problems(root: Path) -> list[str]:
    """One line per generated file that differs from a fresh render, and per placeholder that fails."""
    out = []
    for target, template in GENERATED:
        if not (root / template).is_file():
            if (root / target).is_file():
                out.append(f"{target}: its template {template} is missing")
            continue  # a repository without this document (tests build small ones)
        text, errors = render(root, template)
        out += [f"{template}: {e}" for e in errors]
        path = root / target
        current = path.read_text() if path.is_file() else ""
        if current != text:
            diff = [line for line in difflib.unified_diff(current.splitlines(), text.splitlines(), lineterm="", n=0)
                    if line[:1] in "+-" and line[:3] not in ("+++", "---")]
            first = diff[0][:100] if diff else "(whitespace)"
            out.append(f"{target}: differs from {template} + results/ in {len(diff)} line(s), "
                       f"first {first!r}: run `python scripts/fill_readme.py`")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="check, do not write (exit 1 on a problem)")
    ap.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this one)")
    args = ap.parse_args(argv)
    if args.check:
        problems = result_problems(args.root) + generated_problems(args.root)
        for p in problems:
            print(p)
        return 1 if problems else 0
    rendered, failed = [], False
    for target, template in GENERATED:
        if not (args.root / template).is_file():
            continue  # a repository without this template (tests build small ones)
        text, errors = render(args.root, template)
        for e in errors:
            print(f"{template}: {e}", file=sys.stderr)
        failed |= bool(errors)
        rendered.append((target, text))
    if failed:
        return 1
    for target, text in rendered:
        (args.root / target).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
