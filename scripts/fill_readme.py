"""Rebuild the measured parts of readme.md from results/ (docs/readme_template.md + the tables of
scripts/tables.py), so no figure in the readme is typed by hand:   python scripts/fill_readme.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tables  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fit_absolute() -> str:
    rows = ["| experiment | RL (absolute) vs EnKF xa | supervised | copy obs | RL vs truth | EnKF vs truth |",
            "|---|---|---|---|---|---|"]
    for f in sorted((ROOT / "results/fit_absolute").glob("*.json")):
        r = json.loads(f.read_text())
        rows.append(f"| {r['experiment']} | {r['rl']['rmse_norm_vs_enkf']:.4f} | "
                    f"{r['supervised']['rmse_norm_vs_enkf']:.4f} | {r['copy_obs']['rmse_norm_vs_enkf']:.4f} | "
                    f"{r['rl']['rmse_vs_truth']:.4f} | {r['enkf']['rmse_vs_truth']:.4f} |")
    return "\n".join(rows)


def main() -> None:
    text = (ROOT / "docs/readme_template.md").read_text()
    for key in ("published_l96", "published_l63", "enkf_inflation", "enkf_variants", "sensitivity",
                "bounds", "features", "architecture", "agent_kind", "ppo_settings"):
        text = text.replace("{{" + key + "}}", tables.ablation(key))
    text = text.replace("{{data}}", tables.data())
    text = text.replace("{{fit}}", tables.fit())
    text = text.replace("{{fit_absolute}}", fit_absolute())
    text = text.replace("{{bench}}", tables.bench())
    text = text.replace("{{ray_study}}", tables.ray_study())
    (ROOT / "readme.md").write_text(text)


if __name__ == "__main__":
    main()
