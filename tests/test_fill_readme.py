"""scripts/fill_readme.py: placeholders are filled from results/ and config.yaml, and --check fails
(one line per problem) on a result from another config, a hand-edited result or readme, an
old-format result; it passes when everything was written by the current config."""
from __future__ import annotations

import json
import shutil
import sys

import pytest
import yaml
from click.testing import CliRunner

from cli.main import main as enkfrl

from conftest import CONFIG, ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import fill_readme  # noqa: E402

TEMPLATE = """# test readme

{{data}}

smoke analysis RMSE {{value data/smoke.json | analysis_rmse/mean | .4f}} with N = {{config smoke | filter.n_ens}},
{{config smoke | steps_per_cycle}} steps a cycle; the study's mean
{{value ablations/smoke_skill.json | summary[variant=infl_2]/analysis_rmse/mean | .4f}}, relative to the base
{{change ablations/smoke_skill.json | summary[variant=infl_2]/analysis_rmse/mean | ablations/smoke_skill.json | summary[variant=base]/analysis_rmse/mean}}.

{{smoke_skill}}
"""

RESULTS_TEMPLATE = """# test results

{{smoke_skill}}

make run EXP=smoke: {{measured quickstart/run_smoke.json | wall_s | .0f}} s
"""


def run(*args):
    result = CliRunner().invoke(enkfrl, list(args))
    assert result.exit_code == 0, (result.output, result.exception)


def check(root, capsys) -> tuple[int, list[str]]:
    rc = fill_readme.main(["--check", "--root", str(root)])
    return rc, capsys.readouterr().out.strip().splitlines()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A repository in miniature: config.yaml with a smoke study, results/ written by precompute
    --record (both splits) and ablate, a template, and readme.md filled from them."""
    root = tmp_path_factory.mktemp("repo")
    raw = yaml.safe_load(CONFIG.read_text())
    raw["ablations"] = {"smoke_skill": {
        "question": "smoke EnKF skill vs inflation", "measure": "enkf_skill", "experiments": ["smoke"],
        "seeds": [0], "overrides": {}, "variants": {"base": {}, "infl_2": {"filter": {"inflation": 2.0}}}}}
    (root / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (root / "docs").mkdir()
    (root / "docs/readme_template.md").write_text(TEMPLATE)
    (root / "docs/results_template.md").write_text(RESULTS_TEMPLATE)
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    try:
        run("generate", "--exp", "smoke")
        run("precompute", "--exp", "smoke", "--record")
        run("ablate", "--question", "smoke_skill")
    finally:
        mp.undo()
    assert fill_readme.main(["--root", str(root)]) == 0
    return root


@pytest.fixture
def repo(built, tmp_path):
    """A fresh copy of the built repository for one test to damage."""
    root = tmp_path / "repo"
    shutil.copytree(built, root, ignore=lambda d, names: ["data"] if d == str(built) else [])
    return root


def test_placeholders_are_filled_from_results_and_config(repo):
    text = (repo / "readme.md").read_text()
    assert "{{" not in text
    record = json.loads((repo / "results/data/smoke.json").read_text())
    assert f"smoke analysis RMSE {record['analysis_rmse']['mean']:.4f} with N = 10," in text
    assert "20 steps a cycle" in text  # t_obs 0.2 / dt 0.01
    assert "| smoke | train | 6 x 60 |" in text and "| smoke | test | 3 x 60 |" in text
    study = json.loads((repo / "results/ablations/smoke_skill.json").read_text())
    base, infl = (r["analysis_rmse"]["mean"] for r in study["summary"])
    assert f"{100 * (infl / base - 1):+.1f}%".replace("-", "−") in text


def test_check_passes_when_everything_comes_from_the_current_config(repo, capsys):
    assert check(repo, capsys) == (0, [])


def test_check_fails_when_config_yaml_no_longer_runs_a_result(repo, capsys):
    """A changed filter setting of smoke: the data records of both splits and the study run that
    inherits it are stale, one line each naming the file and the command to rerun."""
    raw = yaml.safe_load((repo / "config.yaml").read_text())
    raw["experiments"]["smoke"]["filter"]["inflation"] = 3.0
    (repo / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rc, lines = check(repo, capsys)
    assert rc == 1
    stale = [line for line in lines if "stale" in line]
    assert any(line.startswith("results/data/smoke.json: stale") and "enkfrl precompute --exp smoke --split train --record`" in line
               for line in stale), lines
    assert any(line.startswith("results/data/smoke_test.json: stale") and "--split test" in line
               for line in stale), lines
    # the base run is stale; the variant that sets its own inflation still runs the same config
    study = [line for line in stale if line.startswith("results/ablations/smoke_skill.json: stale")]
    assert len(study) == 1 and "('smoke', 'base', 0)" in study[0], lines
    # an RL-only setting leaves the data records valid but not the study's records
    raw["experiments"]["smoke"]["filter"]["inflation"] = 5.0
    raw["experiments"]["smoke"]["ppo"]["n_epochs"] = 3
    (repo / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rc, lines = check(repo, capsys)
    assert rc == 1 and not any(line.startswith("results/data/") for line in lines), lines
    assert any(line.startswith("results/ablations/smoke_skill.json: stale") for line in lines), lines


def test_check_fails_when_a_results_config_is_edited(repo, capsys):
    path = repo / "results/data/smoke.json"
    record = json.loads(path.read_text())
    record["provenance"]["config"]["filter"]["inflation"] = 1.5
    path.write_text(json.dumps(record, indent=2))
    rc, lines = check(repo, capsys)
    assert rc == 1 and lines == ["results/data/smoke.json: its recorded config does not hash to its "
                                 "config_hash (edited by hand?): rerun `enkfrl precompute --exp smoke --split train --record`"]


def test_check_fails_when_a_readme_table_is_edited_by_hand(repo, capsys):
    readme = repo / "readme.md"
    text = readme.read_text()
    record = json.loads((repo / "results/data/smoke.json").read_text())
    cell = f"{record['analysis_rmse']['mean']:.3f}"
    assert cell in text
    readme.write_text(text.replace(cell, "0.100", 1))
    rc, lines = check(repo, capsys)
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("readme.md: differs"), lines
    assert "python scripts/fill_readme.py" in lines[0]


def test_every_generated_file_names_its_template(repo):
    for target, template in fill_readme.GENERATED:
        first = (repo / target).read_text().splitlines()[0]
        assert first == f"<!-- generated from {template} by scripts/fill_readme.py — edit that -->"


def test_check_fails_when_the_results_document_is_edited_by_hand(repo, capsys):
    results = repo / "docs/results.md"
    results.write_text(results.read_text().replace("# test results", "# my results"))
    rc, lines = check(repo, capsys)
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("docs/results.md: differs from docs/results_template.md"), lines
    results.unlink()
    (repo / "docs/results_template.md").unlink()
    assert check(repo, capsys) == (0, [])  # a repository without that document


def test_a_timing_is_not_measured_until_its_record_exists(repo, capsys):
    """{{measured ...}} renders "not measured" without the record; a quickstart record is rendered
    once it exists and is checked against the experiment's config like every record."""
    from enkf.io import provenance
    from rl.config import load_config
    assert "make run EXP=smoke: not measured s" in (repo / "docs/results.md").read_text()
    cfg = load_config(repo / "config.yaml", "smoke")
    record = {"command": "make run EXP=smoke", "experiment": "smoke", "wall_s": 123.4, "rc": 0,
              "provenance": provenance(cfg.to_dict(), cfg.hash(), "python scripts/time_quickstart.py smoke", 123.4)}
    (repo / "results/quickstart").mkdir()
    (repo / "results/quickstart/run_smoke.json").write_text(json.dumps(record))
    assert fill_readme.main(["--root", str(repo)]) == 0
    assert "make run EXP=smoke: 123 s" in (repo / "docs/results.md").read_text()
    assert check(repo, capsys) == (0, [])
    raw = yaml.safe_load((repo / "config.yaml").read_text())
    raw["experiments"]["smoke"]["ppo"]["n_epochs"] = 3
    (repo / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    rc, lines = check(repo, capsys)
    assert any(line.startswith("results/quickstart/run_smoke.json: stale") and "scripts/time_quickstart.py smoke" in line
               for line in lines), lines


def test_check_reports_old_format_and_unknown_results_without_crashing(repo, capsys):
    """A result without provenance is stale (one line per file); a study config.yaml no longer
    has, a missing placeholder value and a results folder no rule knows are problems too."""
    old = {"experiment": "smoke", "rl": {"rmse_norm_vs_enkf": 0.1}}
    (repo / "results/fit").mkdir()
    (repo / "results/fit/smoke.json").write_text(json.dumps(old))
    (repo / "results/ablations/gone.json").write_text(json.dumps({"records": [{"experiment": "smoke"}]}))
    (repo / "results/other").mkdir()
    (repo / "results/other/x.json").write_text(json.dumps({"experiment": "smoke"}))
    (repo / "docs/readme_template.md").write_text(TEMPLATE + "{{value data/none.json | a | .1f}}\n")
    rc, lines = check(repo, capsys)
    assert rc == 1
    text = "\n".join(lines)
    assert "results/fit/smoke.json: stale (old format, no provenance)" in text
    assert "results/ablations/gone.json: stale, config.yaml has no such study" in text
    assert "results/other/x.json: cannot recompute its config" in text
    assert "docs/readme_template.md: {{value data/none.json | a | .1f}}: results/data/none.json not found" in text
    assert all("\n" not in line for line in lines)
    # filling refuses a template it cannot fill, and leaves readme.md alone
    before = (repo / "readme.md").read_text()
    assert fill_readme.main(["--root", str(repo)]) == 1
    assert (repo / "readme.md").read_text() == before


def test_this_repository_passes_its_own_check(capsys):
    """The repository's own results/ and readme.md come from its current config.yaml and template:
    the check CI runs (.ci/run) finds nothing (a stale record or a hand-edited readme fails here)."""
    rc, lines = check(ROOT, capsys)
    assert (rc, lines) == (0, []), "\n".join(lines)


def test_yesno_formats_a_recorded_flag_and_refuses_anything_else():
    assert fill_readme.fmt(True, "yesno") == "yes" and fill_readme.fmt(False, "yesno") == "no"
    with pytest.raises(fill_readme.TemplateError, match="yesno needs true/false"):
        fill_readme.fmt(1, "yesno")
