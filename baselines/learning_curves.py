"""Do trained agents beat the scripted policies? Learning curves and a scoreboard over seeds.

    python -m prune_gym.baselines.learning_curves COMPARE_DIR --runs RUN_DIR [RUN_DIR ...] [--window 20]

``COMPARE_DIR`` is a ``prune-gym compare`` of the env's scripted policies *and* of the runs (as
``--agents``) over evaluation seeds; each ``RUN_DIR`` a ``prune-gym train`` run (one per training
seed) with its ``metrics.csv`` (one row per finished training episode: its return and the env
steps so far). Writes into ``COMPARE_DIR``:

* ``learning_curves.png``: training-episode return against environment steps (a rolling mean over
  ``window`` episodes, one line per run), the scripted policies' mean evaluation returns as
  horizontal lines;
* ``scoreboard.md``: per scripted policy and per algorithm (its runs pooled: every training seed
  × evaluation seed) the final return's mean ± sample std, interquartile mean (IQM, the mean of
  the middle 50 %, robust to a few outlying episodes; Agarwal et al. 2021) and episode count, and
  whether each algorithm's mean beats the best scripted policy's.

Written here rather than taken from rliable: one trimmed mean over pooled episodes is all we need,
and rliable would pull in scipy, arch and seaborn for it.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from prune_gym.baselines.compare import read_csv
from prune_gym.policies import agent_policy_name, is_agent_policy
from prune_gym.results import mean_std

STEP_COLUMNS = ("timesteps", "iteration")  # SB3 runs' metrics.csv, the custom DQN's


def interquartile_mean(values: np.ndarray) -> float:
    """Mean of the middle 50 % of ``values`` (a 25 % trimmed mean; all values when fewer than 4)."""
    ordered = np.sort(np.asarray(values, dtype=float))
    cut = len(ordered) // 4
    return float(ordered[cut: len(ordered) - cut].mean())


def training_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Env steps and return of every finished training episode of a run (from its ``metrics.csv``)."""
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{run_dir / 'metrics.csv'} has no finished episode yet.")
    column = next((name for name in STEP_COLUMNS if name in rows[0]), None)
    if column is None:
        raise ValueError(f"{run_dir / 'metrics.csv'} has none of the step columns {STEP_COLUMNS}.")
    steps = np.array([float(row[column]) for row in rows])
    returns = np.array([float(row["return"]) for row in rows])
    return steps, returns


def run_label(run_dir: Path) -> tuple[str, str]:
    """(algorithm, the policy name ``prune-gym compare --agents`` gives the run)."""
    algo = json.loads((run_dir / "config.json").read_text())["algo"]
    return algo, agent_policy_name(algo, run_dir.name)


def final_returns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Policy name → the episode returns of its final rows (one per evaluation seed)."""
    returns: dict[str, list[float]] = {}
    for row in rows:
        if row["final"] and row.get("episode_return") is not None:
            returns.setdefault(row["policy"], []).append(row["episode_return"])
    return {name: np.array(values) for name, values in returns.items()}


def scoreboard(rows: list[dict[str, Any]], run_dirs: list[Path]) -> tuple[str, dict[str, Any]]:
    """The markdown scoreboard and its figures (see the module docstring)."""
    returns = final_returns(rows)
    agent_names = {run_label(run_dir)[1]: run_label(run_dir)[0] for run_dir in run_dirs}
    missing = [name for name in agent_names if name not in returns]
    if missing:
        raise ValueError(f"The comparison has no final rows for {missing}: run prune-gym compare with --agents "
                         f"{' '.join(str(run_dir) for run_dir in run_dirs)}.")
    # Other agents the comparison holds (runs not given) are neither scored nor a bar to beat.
    scripted = {name: values for name, values in returns.items() if not is_agent_policy(name)}
    if not scripted:
        raise ValueError("The comparison has no scripted policy to beat.")
    pooled: dict[str, list[float]] = {}
    for name, algo in agent_names.items():
        pooled.setdefault(algo, []).extend(returns[name].tolist())
    best = max(scripted, key=lambda name: scripted[name].mean())
    seeds = {algo: sum(run_algo == algo for run_algo in agent_names.values()) for algo in pooled}
    labels = {algo: f"**{algo}** ({count} training seed{'s' if count > 1 else ''})" for algo, count in seeds.items()}
    labelled = [*scripted.items(), *((labels[algo], np.array(values)) for algo, values in pooled.items())]
    lines = ["| policy | episodes | return (mean ± std) | return IQM |", "|---|---|---|---|"]
    for name, values in labelled:
        lines.append(f"| {name} | {len(values)} | {mean_std(values, digits=3)} | {interquartile_mean(values):.3f} |")
    figures = {"scripted_means": {name: float(values.mean()) for name, values in scripted.items()},
               "best_scripted": best, "best_scripted_mean": float(scripted[best].mean()),
               "best_scripted_iqm": interquartile_mean(scripted[best]),
               "agents": {algo: {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)),
                                 "iqm": interquartile_mean(np.array(values)), "episodes": len(values),
                                 "beats_best_scripted": float(np.mean(values)) > float(scripted[best].mean())}
                          for algo, values in pooled.items()}}
    lines.append("")
    for algo, figure in figures["agents"].items():
        verdict = "beats" if figure["beats_best_scripted"] else "does not beat"
        lines.append(f"{algo} {verdict} the best scripted policy, {best} ({figures['best_scripted_mean']:.3f}), "
                     f"on mean return: {figure['mean']:.3f}.")
    return "\n".join(lines) + "\n", figures


def plot_learning_curves(run_dirs: list[Path], scripted: dict[str, float], path: Path, title: str,
                         window: int = 20) -> None:
    """``learning_curves.png``: rolling-mean training returns per run, scripted means as lines."""
    from prune_gym.baselines.plotting import quiet_pyplot

    plt = quiet_pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 4.2))
    for run_dir in run_dirs:
        steps, returns = training_curve(run_dir)
        width = max(1, min(window, len(returns)))
        smoothed = np.convolve(returns, np.ones(width) / width, mode="valid")
        axis.plot(steps[width - 1:], smoothed, label=run_label(run_dir)[1], linewidth=1.2)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, value) in enumerate(sorted(scripted.items(), key=lambda item: -item[1])):
        axis.axhline(value, linestyle="--", linewidth=0.9, color=colours[(index + len(run_dirs)) % len(colours)],
                     label=f"{name} (scripted, evaluation mean)")
    axis.set_xlabel("environment steps")
    axis.set_ylabel(f"episode return (rolling mean of {window} training episodes)")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dir", type=Path, help="a prune-gym compare output (scripted policies and --agents)")
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="the agents' run directories")
    parser.add_argument("--window", type=int, default=20, help="episodes in the rolling mean of the curves")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window must be ≥ 1, got {args.window}.")
    rows = read_csv(args.compare_dir / "results.csv")
    table, figures = scoreboard(rows, args.runs)
    env_id = json.loads((args.compare_dir / "compare.json").read_text())["env_id"]
    plot_learning_curves(args.runs, figures["scripted_means"], args.compare_dir / "learning_curves.png",
                         f"{env_id}: training returns against the scripted policies", args.window)
    (args.compare_dir / "scoreboard.md").write_text(table)
    print(table)
    print(f"wrote {args.compare_dir / 'scoreboard.md'} and {args.compare_dir / 'learning_curves.png'}")
    return figures


if __name__ == "__main__":
    main()
