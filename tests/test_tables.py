"""scripts/tables.py: the tables computed from records (not only copied from them), checked by hand."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import tables  # noqa: E402


def curve(values, every=50_000):
    """An eval curve whose RMSE_norm takes `values` at every `every` path-steps."""
    return [[every * (i + 1), v, 10 * v] for i, v in enumerate(values)]


def test_late_movement_is_the_spread_of_the_last_evaluations_only():
    # the early 9.0 is outside the last 5: max 0.0250 / min 0.0200 - 1
    assert tables.late_movement(curve([9.0, 0.0200, 0.0210, 0.0250, 0.0220, 0.0230])) == pytest.approx(0.25)
    assert tables.late_movement(curve([0.02] * 5)) == 0.0
    with pytest.raises(ValueError, match="no last 5"):
        tables.late_movement(curve([0.02] * 4))


def test_fit_spread_divides_each_seed_by_the_cloned_policy_and_reads_each_seeds_curve(tmp_path, monkeypatch):
    folder = tmp_path / "fit_pointwise"
    folder.mkdir()
    clone = {"supervised": {"rmse_norm_vs_enkf": 0.020}}
    scratch = {"rl": {"rmse_norm_vs_enkf": 0.023},
               "per_seed": [{"test": {"rl": {"rmse_norm_vs_enkf": 0.022}}, "eval_curve": curve([5, 2, 2, 2, 2, 3])},
                            {"test": {"rl": {"rmse_norm_vs_enkf": 0.024}}, "eval_curve": curve([1, 1, 1, 1, 1.1])}]}
    (folder / "L96_2_clone.json").write_text(json.dumps(clone))
    (folder / "L96_2_scratch.json").write_text(json.dumps(scratch))
    (folder / "L96_1_scratch.json").write_text(json.dumps(scratch))  # no clone record of L96_1: no row
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    rows = tables.fit_spread().splitlines()
    # 0.023 / 0.020; 0.022 / 0.020 and 0.024 / 0.020; 3 / 2 - 1 and 1.1 / 1 - 1; the last 5 start at
    # 100,000 (first seed, 6 evaluations) and 50,000 (second, 5)
    assert rows[2:] == ["| L96_2 | scratch | 2 | 1.150 | 1.100, 1.200 | 50.0%, 10.0% | 50,000 |"]


def test_fit_spread_is_not_measured_without_records(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    assert tables.fit_spread() == tables.NOT_MEASURED
