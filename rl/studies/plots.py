"""Figures of a run folder: its training curves (TensorBoard events) and its evaluation (eval.h5).

Style and saving are those of the data-stage figures (enkf/plots.py). Only cli/ imports this.

``plot_training`` writes into ``out_dir``:

    training_curves.png    reward, episode length, curriculum, eval RMSE vs the stored EnKF (and
                           cycles completed), PPO losses, approx KL, policy std; x = env steps
    clone_curve.png        behaviour-cloning RMSE per epoch (only when the run cloned)

``plot_eval`` writes, for every evaluated path p (group path_<p> of eval.h5):

    eval_rmse_truth_path<p>.png    RMSE vs truth per cycle: the agents, the baselines, stored EnKF
    eval_rmse_enkf_path<p>.png     normalised RMSE vs the stored EnKF analysis per cycle
    eval_states_path<p>.png        truth, stored EnKF xa and the agent's xa of three variables
    eval_hovmoller_path<p>.png     xa_rl - xa_enkf, variable vs cycle
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator  # noqa: E402

from enkf.io import DataError  # noqa: E402
from enkf.plots import (C_ANALYSIS, C_FORECAST, C_OBS, C_TRUTH, _cycle_label,  # noqa: E402
                        _save, _shown_variables)
from rl.config import agents_per_path  # noqa: E402

# every actor of rl/training/evaluate.py, in legend order: (colour, line width, line style, label)
ACTORS = {
    "rl": ("tab:orange", 1.1, "-", "RL agent"),
    "supervised": ("tab:green", 1.0, "-", "supervised (behaviour cloning)"),
    "enkf_replica": ("tab:cyan", 1.0, (0, (4, 3)), "EnKF replica (env's own ensemble)"),
    "copy_obs": (C_OBS, 0.8, "-", "copy obs (xa = y)"),
    "no_da": (C_FORECAST, 0.8, "-", "no DA (xa = xb)"),
}
C_ENKF = C_ANALYSIS              # the stored EnKF, blue as the analysis of the data figures
LOG_Y_RATIO = 5.0                # log y when no_da peaks this far above every other curve
HOVMOLLER_PERCENTILE = 99.5      # colour range: this percentile of |xa_rl - xa_enkf|
STATE_CYCLES = 50                # cycles shown in eval_states_path<p>.png (L96 at t_obs 1 is jagged)


def _namespace(value):
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    return value


def _run_config(run_dir: Path) -> SimpleNamespace:
    """The run's resolved config.yaml, read as it is (attribute access like Config) and not
    validated: a run written before a config key was added still plots."""
    f = Path(run_dir) / "config.yaml"
    if not f.exists():
        raise DataError(f"{f} not found: {run_dir} is not a run folder")
    return _namespace(yaml.safe_load(f.read_text()))


# ---- evaluation ---------------------------------------------------------------------------------
def _read_eval(run_dir: Path) -> dict:
    """{path: {"truth", "enkf_analysis", "enkf_rmse_vs_truth", "actors": {name: {...}}}}."""
    f = Path(run_dir) / "eval.h5"
    if not f.exists():
        raise DataError(f"{f} not found: run `enkfrl evaluate --run {run_dir}` first")
    out = {}
    try:
        with h5py.File(f, "r") as h:
            # the eval path(s) of the training data; test-set paths (test_path_<p>) are summarised in metrics.json
            for key in sorted((k for k in h if k.startswith("path_")), key=lambda k: int(k.split("_")[1])):
                g = h[key]
                actors = {}
                for name in g:
                    if isinstance(g[name], h5py.Group):
                        a = {k: g[name][k][()] for k in g[name]}
                        a["cycles_completed"] = int(g[name].attrs["cycles_completed"])
                        actors[name] = a
                out[int(key.split("_")[1])] = {
                    "truth": g["truth"][()], "enkf_analysis": g["enkf_analysis"][()],
                    "enkf_rmse_vs_truth": g["enkf_rmse_vs_truth"][()], "actors": actors}
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{f} is unreadable ({e}): run `enkfrl evaluate --run {run_dir}` again") from e
    return out


def _ordered(actors: dict, names=None) -> list[str]:
    """Actor names in legend order (known ones first), restricted to `names`."""
    keep = [n for n in actors if names is None or n in names]
    return sorted(keep, key=lambda n: (list(ACTORS).index(n) if n in ACTORS else len(ACTORS), n))


def _style(name: str) -> tuple:
    return ACTORS.get(name, ("tab:brown", 1.0, "-", name))


def _cycle_mean(series: np.ndarray, completed: int) -> float:
    c = max(completed, 1)
    return float(np.nanmean(series[:c])) if np.any(np.isfinite(series[:c])) else float("nan")


def _fmt(value: float, digits: int) -> str:
    """Fixed point, or 1.2e-07 where fixed point would print zeros (the EnKF replica)."""
    return f"{value:.{digits}f}" if not 0 < abs(value) < 10 ** -digits else f"{value:.1e}"


def _halt_label(a: dict, K: int) -> str:
    return "" if a["cycles_completed"] >= K else f", halted after {a['cycles_completed']}/{K}"


def _mark_halts(ax, actors: dict, names: list[str], K: int) -> None:
    """A vertical line where an actor's episode ended early (its curve stops there)."""
    for name in names:
        c = actors[name]["cycles_completed"]
        if c < K:
            ax.axvline(c, color=_style(name)[0], lw=1.0, ls=":", zorder=1)
            ax.annotate(f"{name} halts", (c, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -3), textcoords="offset points", ha="left", va="top",
                        fontsize=7, color=_style(name)[0])


def _plot_actors(ax, k, actors: dict, names: list[str], key: str, mean_key: str, m: dict,
                 digits: int) -> list:
    """One curve per actor (the first name drawn on top); legend handles in `names` order."""
    K, handles = len(k), []
    for rank, name in enumerate(names):
        a = actors[name]
        color, lw, ls, label = _style(name)
        mean = m.get(name, {}).get(mean_key, _cycle_mean(a[key], a["cycles_completed"]))
        handles += ax.plot(k, a[key], color=color, lw=lw if K <= 300 else 0.75 * lw, ls=ls,
                           zorder=3 + len(names) - rank,
                           label=f"{label} (mean {_fmt(mean, digits)}{_halt_label(a, K)})")
    return handles


def _eval_rmse_truth(cfg, p, ev, metrics, out: Path) -> Path:
    actors, K = ev["actors"], len(ev["enkf_rmse_vs_truth"])
    k = np.arange(K)
    names = _ordered(actors)
    m = metrics.get(str(p), {})
    fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
    enkf = ev["enkf_rmse_vs_truth"]
    (h_enkf,) = ax.plot(k, enkf, color=C_ENKF, lw=1.0 if K <= 300 else 0.75, zorder=3,
                        label=f"stored EnKF (mean {m.get('enkf', {}).get('rmse_vs_truth', enkf.mean()):.3f})")
    handles = _plot_actors(ax, k, actors, names, "rmse_vs_truth", "rmse_vs_truth", m, 3)
    _mark_halts(ax, actors, names, K)
    log_y = False
    if "no_da" in actors:
        others = [actors[n]["rmse_vs_truth"] for n in names if n != "no_da"] + [enkf]
        top_others = max(np.nanmax(v) for v in others if np.any(np.isfinite(v)))
        log_y = np.nanmax(actors["no_da"]["rmse_vs_truth"]) > LOG_Y_RATIO * top_others
    if log_y:
        ax.set_yscale("log")
    else:
        _headroom(ax, np.concatenate([enkf] + [actors[n]["rmse_vs_truth"] for n in names]),
                  bottom_zero=True, frac=0.08)
    ax.set_xlim(0, K - 1)
    ax.set_xlabel(_cycle_label(cfg))
    ax.set_ylabel("RMSE vs truth (model units)" + ("\nlog scale" if log_y else ""))
    ax.set_title(f"{cfg.experiment}, path {p}: RMSE of the analysis vs truth in closed loop "
                 "(legend: cycle means)", fontsize=10)
    fig.legend(handles + [h_enkf], [h.get_label() for h in handles + [h_enkf]],
               loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return _save(fig, out / f"eval_rmse_truth_path{p}.png")


def _eval_rmse_enkf(cfg, p, ev, metrics, out: Path) -> Path:
    actors, K = ev["actors"], len(ev["enkf_rmse_vs_truth"])
    k = np.arange(K)
    names = _ordered(actors, ["rl", "supervised", "copy_obs", "enkf_replica"])
    m = metrics.get(str(p), {})
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    handles = _plot_actors(ax, k, actors, names, "rmse_vs_enkf", "rmse_norm_vs_enkf", m, 4)
    _mark_halts(ax, actors, names, K)
    ax.set_xlim(0, K - 1)
    _headroom(ax, np.concatenate([actors[n]["rmse_vs_enkf"] for n in names] or [[0.0]]),
              bottom_zero=True, frac=0.08)
    ax.set_xlabel(_cycle_label(cfg))
    ax.set_ylabel("RMSE vs stored EnKF $x^a$\n(normalised units)")
    ax.set_title(f"{cfg.experiment}, path {p}: normalised RMSE of the analysis vs the stored EnKF "
                 "analysis (legend: cycle means)", fontsize=10)
    fig.legend(handles, [h.get_label() for h in handles], loc="outside lower center", ncol=2,
               fontsize=8, frameon=False)
    return _save(fig, out / f"eval_rmse_enkf_path{p}.png")


def _eval_states(cfg, p, ev, out: Path) -> Path:
    actors = ev["actors"]
    shown = _shown_variables(ev["truth"].shape[1])
    K = min(STATE_CYCLES, ev["truth"].shape[0])
    k = np.arange(K)
    agents = _ordered(actors, ["rl", "supervised"])
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.9 * len(shown) + 0.9), sharex=True,
                             layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, i in zip(axes, shown):
        ax.plot(k, ev["truth"][:K, i], color=C_TRUTH, lw=1.2, label="truth")
        ax.plot(k, ev["enkf_analysis"][:K, i], color=C_ENKF, lw=0.9, label="stored EnKF $x^a$")
        for name in agents:
            color, lw, _, label = _style(name)
            ax.plot(k, actors[name]["analysis"][:K, i], color=color, lw=lw,
                    ls="--" if name == "supervised" else "-", label=f"{label} $x^a$")
            if actors[name]["cycles_completed"] < K - 1:
                ax.axvline(actors[name]["cycles_completed"], color=color, lw=1.0, ls=":")
        ax.set_ylabel(f"$x_{{{i}}}$ (model units)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8,
               frameon=False)
    axes[-1].set_xlim(0, K - 1)
    axes[-1].set_xlabel(_cycle_label(cfg))
    halted = [f"{n} halted after cycle {actors[n]['cycles_completed']}" for n in agents
              if actors[n]["cycles_completed"] < K]
    fig.suptitle(f"{cfg.experiment}, path {p}: analyses in closed loop, first {K} cycles"
                 + (f" ({'; '.join(halted)})" if halted else ""), fontsize=11)
    return _save(fig, out / f"eval_states_path{p}.png")


def _eval_hovmoller(cfg, p, ev, out: Path) -> Path:
    a = ev["actors"]["rl"]
    K, n = ev["enkf_analysis"].shape
    diff = a["analysis"] - ev["enkf_analysis"]
    finite = np.abs(diff[np.isfinite(diff)])
    vmax = float(np.percentile(finite, HOVMOLLER_PERCENTILE)) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    extend = "both" if finite.size and finite.max() > vmax else "neither"
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    mesh = ax.pcolormesh(np.arange(K), np.arange(n), diff.T, cmap=cmap, vmin=-vmax, vmax=vmax,
                         shading="nearest", rasterized=True)
    fig.colorbar(mesh, ax=ax, pad=0.01, extend=extend,
                 label="$x^a_{RL} - x^a_{EnKF}$ (model units)")
    ax.set_xlabel(_cycle_label(cfg))
    ax.set_ylabel("variable index $i$")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    note = _halt_label(a, K).lstrip(", ")
    ax.set_title(f"{cfg.experiment}, path {p}: RL minus stored EnKF analysis "
                 f"(RMSE {np.sqrt(np.mean(finite ** 2)) if finite.size else np.nan:.3f}"
                 + (f"; {note}, grey after" if note else "") + ")", fontsize=10)
    return _save(fig, out / f"eval_hovmoller_path{p}.png")


def plot_eval(run_dir: Path, out_dir: Path) -> list[Path]:
    """The evaluation figures of every path in run_dir/eval.h5 into out_dir (created)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = _run_config(run_dir)
    evals = _read_eval(run_dir)
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for p, ev in evals.items():
        written += [_eval_rmse_truth(cfg, p, ev, metrics, out_dir),
                    _eval_rmse_enkf(cfg, p, ev, metrics, out_dir),
                    _eval_states(cfg, p, ev, out_dir)]
        if "rl" in ev["actors"]:
            written.append(_eval_hovmoller(cfg, p, ev, out_dir))
    return written


# ---- training -----------------------------------------------------------------------------------
def read_scalars(tb_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag -> (steps, values) over every events file of tb_dir. After a resume the later run
    supersedes the earlier one from its first step on (as TensorBoard's purge does)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    if not list(Path(tb_dir).glob("events.out.tfevents.*")):
        raise DataError(f"no TensorBoard events under {tb_dir}: train the run first")
    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    ea.Reload()
    out = {}
    for tag in ea.Tags()["scalars"]:
        kept = []
        for e in sorted(ea.Scalars(tag), key=lambda e: e.wall_time):
            while kept and kept[-1].step >= e.step:
                kept.pop()
            kept.append(e)
        out[tag] = (np.array([e.step for e in kept]), np.array([e.value for e in kept]))
    return out


def _absent(ax, title: str, tag: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, f"{tag}\nnot logged in this run", ha="center", va="center", fontsize=8,
            color="0.4", transform=ax.transAxes)
    ax.tick_params(axis="y", left=False, labelleft=False)


def _headroom(ax, values, bottom_zero: bool = False, frac: float = 0.18) -> None:
    """y limits with room above the data (for a legend), and never a sub-1e-3 relative range
    (a constant curve would otherwise get offset tick labels like 1e-8+3.68e-1)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return
    lo, hi = (0.0 if bottom_zero else v.min()), v.max()
    span = max(hi - lo, 0.02 * max(abs(hi), abs(lo)), 1e-12)
    ax.set_ylim(lo if bottom_zero else lo - 0.08 * span, hi + frac * span)


def _curve(ax, s, tag, title, ylabel, color="tab:blue", **kw) -> bool:
    if tag not in s:
        _absent(ax, title, tag)
        return False
    steps, values = s[tag]
    many = len(steps) > 40
    ax.plot(steps, values, color=color, lw=0.9 if many else 1.1, marker=None if many else "o",
            ms=3, **kw)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.ticklabel_format(axis="y", useOffset=False)
    _headroom(ax, values)
    return True


def plot_training(run_dir: Path, out_dir: Path) -> list[Path]:
    """training_curves.png (and clone_curve.png when the run cloned) into out_dir."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = _run_config(run_dir)
    unit = agents_per_path(cfg)  # TensorBoard counts SB3's agent-steps; the run's log path-steps
    s = {tag.replace("pretrain/", "clone/", 1): (steps if tag.startswith(("clone/", "pretrain/")) else steps / unit, values)
         for tag, (steps, values) in read_scalars(run_dir / "tb").items()}  # pretrain/: the cloning tags of older runs
    out_dir.mkdir(parents=True, exist_ok=True)
    K = cfg.paths.n_cycles
    first, last = cfg.paths.train_paths

    fig, axes = plt.subplots(4, 2, figsize=(11, 10), layout="constrained")
    (a_rew, a_len), (a_cur, a_eval), (a_vl, a_pg), (a_kl, a_std) = axes
    if _curve(a_rew, s, "rollout/ep_rew_mean", "episode reward (rollout mean)", "total reward"):
        a_rew.axhline(K, color="0.5", lw=0.8, ls="--", label=f"maximum ({K} cycles × 1)")
        _headroom(a_rew, np.append(s["rollout/ep_rew_mean"][1], K), frac=0.08)
        a_rew.legend(fontsize=7, loc="best")
    if _curve(a_len, s, "rollout/ep_len_mean", "episode length (rollout mean)", "cycles"):
        a_len.axhline(K, color="0.5", lw=0.8, ls="--", label=f"whole path ({K})")
        a_len.set_ylim(0, K * 1.08)
        a_len.legend(fontsize=7, loc="lower right")
    if _curve(a_cur, s, "curriculum/n_paths", "curriculum: active training paths", "paths",
              drawstyle="steps-post"):
        a_cur.axhline(last - first + 1, color="0.5", lw=0.8, ls="--",
                      label=f"all training paths ({last - first + 1})")
        a_cur.set_ylim(0, (last - first + 1) * 1.1)
        a_cur.yaxis.set_major_locator(MaxNLocator(integer=True))
        a_cur.legend(fontsize=7, loc="lower right")
    title = f"evaluation on path {cfg.paths.eval_path}"
    if _curve(a_eval, s, "eval/rmse_vs_enkf", title, "RMSE vs stored EnKF $x^a$\n(normalised)",
              label="RMSE vs EnKF (left)"):
        _headroom(a_eval, s["eval/rmse_vs_enkf"][1], bottom_zero=True, frac=0.35)
        handles, labels = a_eval.get_legend_handles_labels()
        if "eval/cycles_completed" in s:
            twin = a_eval.twinx()
            steps, values = s["eval/cycles_completed"]
            twin.plot(steps, values, color="tab:red", lw=0.9, ls="--", marker="s", ms=3,
                      label="cycles completed (right)")
            twin.set_ylim(0, K * 1.08)
            twin.set_ylabel("cycles completed", fontsize=8, color="tab:red")
            twin.tick_params(axis="y", colors="tab:red", labelsize=8)
            h2, l2 = twin.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        a_eval.legend(handles, labels, fontsize=7, loc="lower right")
    algo = getattr(cfg.train, "algo", "ppo")  # a run made before train.algo: PPO
    if algo == "ppo":
        _curve(a_vl, s, "train/value_loss", "value loss", "loss")
        _curve(a_pg, s, "train/policy_gradient_loss", "policy-gradient loss", "loss")
        if _curve(a_kl, s, "train/approx_kl", "approximate KL per update", "KL"):
            _headroom(a_kl, s["train/approx_kl"][1], bottom_zero=True, frac=0.08)
    else:  # SAC / TD3: SB3's losses of the critics and the actor; SAC's entropy coefficient
        _curve(a_vl, s, "train/critic_loss", "critic loss", "loss")
        _curve(a_pg, s, "train/actor_loss", "actor loss", "loss")
        _curve(a_kl, s, "train/ent_coef", "entropy coefficient alpha (SAC)", "alpha")
    if _curve(a_std, s, "policy/std_mean", "policy std (normalised action units)", "std",
              label="mean over action dims"):
        if "policy/std_min" in s and "policy/std_max" in s:
            (st, lo), (st2, hi) = s["policy/std_min"], s["policy/std_max"]
            if len(st) == len(st2) and np.array_equal(st, st2):
                a_std.fill_between(st, lo, hi, color="tab:blue", alpha=0.15, lw=0, label="min–max")
                _headroom(a_std, np.concatenate([lo, hi]), frac=0.25)
        a_std.legend(fontsize=7, loc="best")
    last_step = max([v[0].max() for t, v in s.items() if not t.startswith("clone/") and len(v[0])],
                    default=1)
    for ax in axes.flat:
        ax.tick_params(labelsize=8)
        ax.set_xlim(0, last_step * 1.02)
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    for ax in axes[:-1].flat:
        ax.tick_params(axis="x", labelbottom=False)
    for ax in axes[-1]:
        ax.set_xlabel("path-steps (cycles, summed over paths)", fontsize=8)
    envs = (f"{cfg.train.paths_per_env} paths x {cfg.model.n} points" if cfg.agent.kind == "pointwise"
            else f"{cfg.train.n_envs} envs")
    learner = (f"rollout {cfg.ppo.n_steps} cycles" if algo == "ppo"
               else f"{algo.upper()}, replay of {cfg.offpolicy.buffer_size:,} agent-steps")
    fig.suptitle(f"{cfg.experiment}: training of {run_dir.name} ({cfg.agent.kind} agent, "
                 f"{envs}, {learner})", fontsize=11)
    written = [_save(fig, out_dir / "training_curves.png")]

    if "clone/train_rmse" in s and "clone/heldout_rmse" in s:
        written.append(_clone_curve(cfg, run_dir, s, out_dir))
    return written


def _clone_curve(cfg, run_dir: Path, s: dict, out: Path) -> Path:
    # rl/training/train.py logs the training RMSE as the held-out one when there are no held-out paths
    history = run_dir / "pretrain.json"
    held_out = not history.exists() or bool(json.loads(history.read_text()).get("val_rmse"))
    fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
    for tag, color, label in [("clone/train_rmse", "tab:blue", "training paths"),
                              ("clone/heldout_rmse", "tab:orange", "held-out paths")]:
        if tag == "clone/heldout_rmse" and not held_out:
            continue
        steps, values = s[tag]
        ax.plot(steps + 1, values, color=color, marker="o", ms=3.5, lw=1.1,
                label=f"{label} (last {values[-1]:.4f})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _headroom(ax, np.concatenate([s[t][1] for t in ("clone/train_rmse", "clone/heldout_rmse")]),
              bottom_zero=True, frac=0.25)
    ax.set_ylabel("RMSE of the policy mean vs\nstored EnKF action (normalised)")
    ax.set_title(f"{cfg.experiment}: behaviour cloning before PPO "
                 f"(lr {cfg.pretrain.learning_rate:g}, batch {cfg.pretrain.batch_size})", fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out / "clone_curve.png")


def _seed_curves(record: dict, column: int) -> tuple[list, np.ndarray]:
    """(path-steps every seed evaluated at, (seeds, steps) values of eval_curve's column: 1 RMSE_norm
    vs the stored xa, 2 RMSE vs truth) of a fit record's seeds; ([], empty) without curves."""
    curves = [np.array(s["eval_curve"]) for s in record["per_seed"] if s.get("eval_curve")]
    if not curves:
        return [], np.empty((0, 0))
    steps = sorted(set.intersection(*[set(c[:, 0]) for c in curves]))
    return steps, np.array([[c[c[:, 0] == x][0, column] for x in steps] for c in curves])


def _write_figure(fig, out) -> Path:
    """A summary figure into out (its folder made), tight layout (enkf.plots._save: a run's figures)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_learning_curves(records: dict[str, dict], out: Path, title: str = "") -> Path:
    """RMSE_norm vs the stored EnKF xa on the eval path during training against path-steps, one
    line per labelled fit record (results/fit*/...json: mean over its seeds, band = min..max),
    with the record's copy-obs and supervised (cloned) levels on the eval path as references."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    refs = {}
    for i, (label, rec) in enumerate(records.items()):
        steps, ys = _seed_curves(rec, 1)
        if not steps:
            continue
        line, = ax.plot(steps, ys.mean(0), marker="o", ms=3, label=f"{label} ({len(ys)} seed{'s' * (len(ys) > 1)})")
        if len(ys) > 1:
            ax.fill_between(steps, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.2)
        for name in ("copy_obs", "supervised"):
            if name in rec["eval_path"]:
                refs.setdefault(name, rec["eval_path"][name]["rmse_norm_vs_enkf"])
    styles = {"copy_obs": ("copy obs", "k", ":"), "supervised": ("supervised (cloned)", "grey", "--")}
    for name, value in refs.items():
        text, colour, ls = styles[name]
        ax.axhline(value, color=colour, ls=ls, lw=1, label=text)
    ax.set_xlabel("PPO path-steps (cycles of one path)")
    ax.set_ylabel("RMSE_norm vs stored EnKF xa, eval path")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _write_figure(fig, out)


def _finish_beyond_figure(fig, ax, record: dict, title: str, out: Path) -> Path:
    """The stored and the best classical filter as levels, log RMSE vs truth against path-steps."""
    f = record["filters"]
    for key, text, colour, ls in (("stored", "stored filter", "k", ":"), ("best", "best classical filter", "grey", "--")):
        ax.axhline(f[key]["rmse_vs_truth"]["mean"], color=colour, ls=ls, lw=1, label=f"{text} (test set)")
    ax.set_yscale("log")
    ax.set_xlabel("path-steps (cycles of one path)")
    ax.set_ylabel("RMSE vs truth, eval path")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _write_figure(fig, out)


def plot_beyond_curves(record: dict, out: Path) -> Path:
    """RMSE vs truth on the eval path during training against path-steps, one line per variant
    of a beyond record (results/beyond/<E>.json; mean over its seeds), with the stored filter and the
    best classical filter of the same ensemble as levels (their test-set means)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for v, fit in record["fit_records"].items():
        steps, ys = _seed_curves(fit, 2)
        if not steps:
            continue
        ax.plot(steps, ys.mean(0), marker="o", ms=3, label=f"{v} ({len(ys)} seed{'s' * (len(ys) > 1)})")
    return _finish_beyond_figure(fig, ax, record, f"{record['experiment']}: RL analyses that do not imitate", out)


def plot_learner_curves(record: dict, out: Path) -> Path | None:
    """PPO, SAC and TD3 on one env and reward (rl.studies.beyond.LEARNER_VARIANTS: truth_tuned,
    sac_tuned, td3_tuned): RMSE vs truth on the eval path during training against path-steps (mean
    over seeds), with the stored and the best classical filter as levels. None (nothing written)
    until SAC or TD3 has a run in the record."""
    from rl.studies.beyond import LEARNER_VARIANTS
    fits = {v: record["fit_records"][v] for v in LEARNER_VARIANTS if v in record["fit_records"]}
    if not any(fit["provenance"]["config"]["train"].get("algo", "ppo") != "ppo" for fit in fits.values()):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for v, fit in fits.items():
        steps, ys = _seed_curves(fit, 2)
        if not steps:
            continue
        algo = fit["provenance"]["config"]["train"].get("algo", "ppo").upper()
        ax.plot(steps, ys.mean(0), marker="o", ms=3, label=f"{algo} ({v}, {len(ys)} seed{'s' * (len(ys) > 1)})")
    return _finish_beyond_figure(fig, ax, record, f"{record['experiment']}: PPO, SAC and TD3, truth reward in the tuned ensemble", out)
