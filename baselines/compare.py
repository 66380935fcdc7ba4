"""``prune-gym compare``: every scripted policy (and trained agents) on one environment, over seeds.

Generic over env families. A *run* is one policy for one seed; a family's runner
(:func:`prune_gym.baselines.registry.register_runner`) turns a run into result rows, and families without
one use :func:`default_runner`, which plays one episode with
``gym.make(env_id, eval_data=..., **env_kwargs)`` and writes one row per state (the reset state is
``cycle`` 0, then one row per step) and a last row marked ``final``.

Row columns (:data:`COLUMNS`; missing figures are empty): ``policy, seed, cycle, final,
test_accuracy, val_accuracy, cross_entropy, macs, macs_full, macs_fraction, units_kept_fraction,
params, params_full, episode_return, step_s, wall_s``. ``units_kept_fraction`` is the env's own (DropNet's fraction of
units kept) or else ``macs / macs_full``; ``step_s`` is the wall time of that reset or step and
``wall_s`` the run's wall time so far.

Outputs in ``DIR``: ``results.csv`` (every row), ``results.md`` (mean ± sample std over seeds of
the final rows, per policy) and ``pareto.png`` (test accuracy against the fraction kept and against
MACs, one line per policy through its per-cycle means, final points starred), plus whatever the
env family's report writes (:func:`prune_gym.baselines.registry.register_report`; LayerPrune: the α/γ
curves per layer and a depth table). All are rewritten after every run, so an interrupted
comparison keeps what it finished.

A results directory belongs to one comparison setting: ``compare.json`` records the env id, the
env kwargs and the evaluation file. Running ``compare`` again into the same ``DIR`` appends: the
earlier rows stay in ``results.csv`` and the tables are rebuilt from old and new rows together. A
run whose (policy, seed) is already there is refused unless ``overwrite`` (``--overwrite``), which
replaces those rows, or ``resume`` (``--resume``), which skips them: after a kill, or to add agents or
seeds to a comparison, only the missing runs are played; another env id or other settings are
refused (they would mix incomparable rows). ``--report-only`` checks the env id against
``compare.json`` too. What a family's runner adds to its rows beyond :data:`COLUMNS` (LayerPrune's
depth and γ/α histories) is kept beside the CSV in ``extras.jsonl`` and joined back to the earlier
rows, so the family's own report covers every run after ``--resume`` or ``--report-only`` too.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prune_gym.baselines.registry import (
    get_policy,
    policies_for,
    report_for,
    runner_for,
    stored_rows_reader_for,
)
from prune_gym.policies import ScriptedPolicy, make_env, play_episode
from prune_gym.progress import track_progress
from prune_gym.ray_support import map_tasks, require_ray
from prune_gym.registry import family_of
from prune_gym.results import COLUMNS, column_values, mean_std

logger = logging.getLogger("prune_gym.compare")

SETTINGS_FILE = "compare.json"  # beside results.csv: the env id and settings its rows were made with
# Beside results.csv: the figures a family's runner adds to rows beyond COLUMNS (structured values
# such as LayerPrune's γ/α histories, which a CSV cell cannot hold), one JSON line per such row.
EXTRAS_FILE = "extras.jsonl"


def default_runner(env_id: str, policy: ScriptedPolicy, seed: int, env_kwargs: dict[str, Any],
                   eval_data: str | None) -> list[dict[str, Any]]:
    """One episode; its rows, and a copy of the last one marked ``final``."""
    env = make_env(env_id, env_kwargs, eval_data)
    try:
        rows = play_episode(env, policy, seed)
    finally:
        env.close()
    return [*rows, {**rows[-1], "final": True}]


def select_policies(env_id: str, names: str = "all") -> list[ScriptedPolicy]:
    """``"all"`` or comma-separated names → the registered policies of ``env_id``'s family."""
    if names.strip() == "all":
        return policies_for(env_id)
    return [get_policy(env_id, name.strip()) for name in names.split(",") if name.strip()]


def load_agents(run_dirs: Sequence[str]) -> list[ScriptedPolicy]:
    """Trained agents as policies, through ``prune_gym.agents.runs.load_agent_policy`` (imported only here)."""
    if not run_dirs:
        return []
    try:
        from prune_gym.agents.runs import load_agent_policy
    except ImportError as error:
        raise SystemExit(
            f"--agents needs prune_gym.agents.runs.load_agent_policy, which could not be imported ({error}). "
            "Reinstall prune-gym (pip install -e .) so that its agents package is importable, or leave out --agents."
        ) from error
    return [load_agent_policy(run_dir) for run_dir in run_dirs]


def compare(
    env_id: str,
    policies: str = "all",
    agent_dirs: Sequence[str] = (),
    seeds: int = 1,
    eval_data: str | None = None,
    out: str | Path = "compare",
    env_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
    ray: str | None = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Run every selected policy and agent for seeds ``0..seeds-1`` on ``env_id`` and write
    ``results.csv``, ``results.md`` and ``pareto.png`` into ``out``, after the rows an earlier
    comparison left there (see the module docstring; ``overwrite`` replaces runs done before,
    ``resume`` skips them). Returns every row, earlier ones included.

    With ``ray`` (``"local"`` or a cluster's address) every (policy, seed) run is one Ray task, all
    running at once; the rows are the same and in the same order as without it (each run is seeded
    by its seed alone), and the outputs are rewritten as runs finish. Agents' run directories and
    ``eval_data`` must be readable on every node at the same path."""
    if seeds < 1:
        raise ValueError(f"--seeds must be ≥ 1, got {seeds}.")
    if overwrite and resume:
        raise ValueError("--overwrite reruns the runs DIR already holds and --resume skips them: pass one of the two.")
    if ray is not None:
        require_ray()  # before anything is written
    if eval_data is not None and not Path(eval_data).is_file():
        raise ValueError(f"--eval-data {eval_data!r} is not a file; give an .npz with x_test and y_test.")
    agents = load_agents(agent_dirs)
    wrong = [f"{agent.name} ({agent.family})" for agent in agents if agent.family != family_of(env_id)]
    if wrong:
        raise ValueError(f"Agents trained for another env family cannot run on {env_id}: {', '.join(wrong)}.")
    selected = [*select_policies(env_id, policies), *agents]
    if len({policy.name for policy in selected}) < len(selected):
        raise ValueError(f"Policy names must be unique; got {[policy.name for policy in selected]}.")
    if not selected:
        raise ValueError(f"No policies to run on {env_id}.")
    runner = runner_for(env_id) or default_runner
    out = Path(out)
    # Seed-major order: runs of one seed share what an env caches per seed (e.g. DropNet's
    # unpruned network), and every policy has results early on.
    runs = [(policy, seed) for seed in range(seeds) for policy in selected]
    settings = comparison_settings(env_id, env_kwargs, eval_data)
    if resume:  # every stored row stays; only the runs they do not hold are played
        rows = earlier_rows(out, settings, set(), overwrite=False)
        held = {(row["policy"], row["seed"]) for row in rows}
        planned = len(runs)
        runs = [(policy, seed) for policy, seed in runs if (policy.name, seed) not in held]
        logger.info("--resume: %d of the planned runs are already in %s; running the other %d.",
                    planned - len(runs), out, len(runs))
    else:
        rows = earlier_rows(out, settings, {(policy.name, seed) for policy, seed in runs}, overwrite)
    order = list(dict.fromkeys([*(row["policy"] for row in rows), *(policy.name for policy in selected)]))
    reader = stored_rows_reader_for(env_id)
    if rows and reader is not None:
        reader(rows, env_id, dict(env_kwargs or {}), eval_data)
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out, settings)
    progress = track_progress(runs, f"compare {env_id}", unit="run", leave=True)
    finished: dict[int, list[dict[str, Any]]] = {}

    def all_rows() -> list[dict[str, Any]]:
        """Earlier rows, then the finished runs' in the order of `runs`, whatever order they finished in."""
        return rows + [row for key in sorted(finished) for row in finished[key]]

    def done(index: int, run_rows: list[dict[str, Any]]) -> None:
        finished[index] = run_rows
        progress.update(1)
        progress.set_postfix(policy=runs[index][0].name, seed=runs[index][1])
        write_outputs(all_rows(), out, env_id, order)

    map_tasks(runner, [(env_id, policy, seed, dict(env_kwargs or {}), eval_data) for policy, seed in runs], ray,
              on_result=done)
    progress.close()
    if not runs:  # --resume found every run done: the tables are still rebuilt from the rows
        write_outputs(all_rows(), out, env_id, order)
    return all_rows()


# ----------------------------------------------------------------------------------------------
# An existing results directory: its settings and earlier rows
# ----------------------------------------------------------------------------------------------


def comparison_settings(env_id: str, env_kwargs: dict[str, Any] | None, eval_data: str | None) -> dict[str, Any]:
    """What makes rows comparable (stored in ``compare.json``): env id, env kwargs (as JSON) and
    the evaluation file's absolute path (``None``: the env's own test split)."""
    kwargs = json.loads(json.dumps(env_kwargs or {}, sort_keys=True, default=str))
    return {"env_id": env_id, "env_kwargs": kwargs,
            "eval_data": None if eval_data is None else str(Path(eval_data).resolve())}


def read_settings(out: Path) -> dict[str, Any] | None:
    """``out/compare.json``, or ``None`` for a directory without one (new, or written before the
    settings were recorded)."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not readable JSON ({error}); it should record the env id of "
                         f"{out / 'results.csv'}. Fix or delete it.") from error
    if not isinstance(settings, dict) or "env_id" not in settings:
        raise ValueError(f"{path} does not record an env id; it should look like "
                         '{"env_id": ..., "env_kwargs": {...}, "eval_data": ...}. Fix or delete it.')
    return settings


def write_settings(out: Path, settings: dict[str, Any]) -> None:
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def check_same_env(out: Path, stored: dict[str, Any] | None, env_id: str) -> None:
    """Refuse ``env_id`` when ``out`` holds results recorded for another env id."""
    if stored is not None and stored["env_id"] != env_id:
        raise ValueError(f"{out} holds results of {stored['env_id']} (see {out / SETTINGS_FILE}), not {env_id}. "
                         f"Use `prune-gym compare {stored['env_id']} ... --out {out}`, or another --out DIR for "
                         f"{env_id}.")


def earlier_rows(out: Path, settings: dict[str, Any], planned: set[tuple[str, int]],
                 overwrite: bool) -> list[dict[str, Any]]:
    """The rows already in ``out/results.csv`` that the new runs keep.

    Raises:
        ValueError: ``out`` holds results of another env id or other settings, or of a planned
            (policy, seed) and ``overwrite`` is false.
    """
    results = out / "results.csv"
    if not results.is_file():  # nothing to mix with: the new runs define the directory's settings
        return []
    stored = read_settings(out)
    check_same_env(out, stored, settings["env_id"])
    if stored is not None and stored != settings:
        differing = sorted(name for name in ("env_kwargs", "eval_data") if stored.get(name) != settings[name])
        details = "; ".join(f"{name}: {stored.get(name)!r} there, {settings[name]!r} now" for name in differing)
        raise ValueError(f"{out} holds results made with other settings ({details}); rows of both would be "
                         "compared as if alike. Use the same settings, or another --out DIR.")
    if stored is None:
        logger.warning("%s has no %s (written before the env id was recorded); appending to it as results of %s.",
                       out, SETTINGS_FILE, settings["env_id"])
    rows = read_rows(out)
    done = sorted({(row["policy"], row["seed"]) for row in rows} & planned)
    if done and not overwrite:
        listed = ", ".join(f"{policy} seed {seed}" for policy, seed in done[:6]) + (", …" if len(done) > 6 else "")
        raise ValueError(f"{results} already holds {len(done)} of these runs ({listed}). Pass --overwrite to "
                         "replace them, --resume to skip them and run only the others, or another --out DIR.")
    return [row for row in rows if (row["policy"], row["seed"]) not in planned]


# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------


def write_outputs(rows: list[dict[str, Any]], out: Path, env_id: str, order: Sequence[str]) -> None:
    write_csv(rows, out / "results.csv")
    write_extras(rows, out / EXTRAS_FILE)
    (out / "results.md").write_text(markdown_table(rows, env_id, order))
    plot_pareto(rows, out / "pareto.png", env_id, order)
    report = report_for(env_id)
    if report is not None:  # the family's own figures and tables (see prune_gym.baselines.registry.register_report)
        report(rows, out, env_id)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({name: "" if row.get(name) is None else row[name] for name in COLUMNS})


_INTEGER_COLUMNS = ("seed", "cycle", "macs", "macs_full", "params", "params_full")


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``results.csv`` written by :func:`write_csv`, with their types restored."""
    rows = []
    with open(path, newline="") as handle:
        for record in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for name, text in record.items():
                if name in ("policy",):
                    row[name] = text
                elif name == "final":
                    row[name] = text == "True"
                elif text == "":
                    row[name] = None
                else:
                    row[name] = int(text) if name in _INTEGER_COLUMNS else float(text)
            rows.append(row)
    return rows


def _positions(rows: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(policy, seed, index of the row within its run) of every row: what ties a row of
    ``results.csv`` to its line in ``extras.jsonl``."""
    seen: dict[tuple[str, int], int] = {}
    keys = []
    for row in rows:
        run = (row["policy"], row["seed"])
        keys.append((*run, seen.get(run, 0)))
        seen[run] = seen.get(run, 0) + 1
    return keys


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays as JSON numbers and lists (``json.dumps``'s ``default``)."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_extras(rows: list[dict[str, Any]], path: Path) -> None:
    """One JSON line per row holding figures beyond :data:`COLUMNS`: ``policy``, ``seed``, ``row``
    (index within its run) and ``extras``. JSON turns integer dict keys into strings; readers of
    the extras accept both (e.g. :func:`prune_gym.baselines.layerprune.plot_layer_histories`)."""
    lines = []
    for (policy, seed, index), row in zip(_positions(rows), rows):
        extras = {name: value for name, value in row.items() if name not in COLUMNS and value is not None}
        if extras:
            lines.append(json.dumps({"policy": policy, "seed": seed, "row": index, "extras": extras},
                                    default=_json_value))
    if lines or path.exists():
        path.write_text("".join(line + "\n" for line in lines))


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out/results.csv`` with their ``extras.jsonl`` figures joined back (a
    directory written before extras were kept has none)."""
    rows = read_csv(out / "results.csv")
    path = out / EXTRAS_FILE
    if not path.is_file():
        return rows
    extras: dict[tuple[str, int, int], dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            extras[(record["policy"], int(record["seed"]), int(record["row"]))] = dict(record["extras"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} line {number} is not a record of extras ({error}); it is rewritten from "
                             f"the runs in memory by every compare, so delete it to drop the extras.") from error
    return [{**row, **extras.get(key, {})} for key, row in zip(_positions(rows), rows)]


def report(out: str | Path, env_id: str) -> list[dict[str, Any]]:
    """Rewrite ``results.md`` and ``pareto.png`` of ``out`` from its ``results.csv`` (no runs).

    Raises:
        FileNotFoundError: ``out`` has no ``results.csv``.
        ValueError: ``out`` holds results of another env id (its ``compare.json``).
    """
    out = Path(out)
    if not (out / "results.csv").is_file():
        raise FileNotFoundError(f"{out / 'results.csv'} does not exist: --report-only rebuilds the tables of an "
                                f"earlier `prune-gym compare {env_id} --out {out}`; run that first.")
    check_same_env(out, read_settings(out), env_id)
    rows = read_rows(out)
    order = list(dict.fromkeys(row["policy"] for row in rows))
    write_outputs(rows, out, env_id, order)
    return rows


def markdown_table(rows: list[dict[str, Any]], env_id: str, order: Sequence[str]) -> str:
    """Mean ± sample std over seeds of each policy's final row (and of the cycle-0 rows, the
    unpruned network, where the runs have them)."""
    lines = [f"# `{env_id}`: final results, mean ± std over seeds", "",
             "| policy | seeds | test accuracy (%) | MAC fraction | MACs/image (M) | params | cycles | return "
             "| wall (s) |",
             "|---|---|---|---|---|---|---|---|---|"]

    # (column, scale, digits) of each figure after the policy and seed count.
    figures = (("test_accuracy", 100, 2), ("macs_fraction", 1, 3), ("macs", 1e-6, 3), ("params", 1, 0),
               ("cycle", 1, 1), ("episode_return", 1, 3), ("wall_s", 1, 1))

    def line(name: str, group: list[dict[str, Any]]) -> str:
        cells = [name, str(len({row["seed"] for row in group}))]
        cells += [mean_std(column_values(group, column), scale, digits) for column, scale, digits in figures]
        return "| " + " | ".join(cells) + " |"

    start = [row for row in rows if row.get("cycle") == 0 and not row.get("final")]
    if start:
        # One unpruned network per seed (every policy starts from the same one).
        by_seed = {row["seed"]: row for row in start}
        lines.append(line("*(unpruned, cycle 0)*", list(by_seed.values())))
    for name in order:
        group = [row for row in rows if row["policy"] == name and row.get("final")]
        if group:
            lines.append(line(name, group))
    lines += curve_table(rows, order)
    per_step = seconds_per_step(rows)
    if not math.isnan(per_step):
        lines += ["", f"Seconds per env step (mean over every step of every run): {per_step:.2f}"]
    return "\n".join(lines) + "\n"


def curve_table(rows: list[dict[str, Any]], order: Sequence[str]) -> list[str]:
    """Markdown lines: per policy and cycle, mean test accuracy (%) @ mean MAC fraction over the
    seeds that reached that cycle (empty when the runs have no more than one cycle)."""
    cycles = sorted({row["cycle"] for row in rows if not row.get("final") and row.get("cycle") is not None})
    if len(cycles) < 2:
        return []
    lines = ["", "Test accuracy (%) @ MAC fraction per cycle (mean over the seeds that reached it):", "",
             "| policy | " + " | ".join(f"cycle {cycle}" for cycle in cycles) + " |",
             "|---|" + "---|" * len(cycles)]
    for name in order:
        kept = dict(zip(*_per_cycle(rows, name, "macs_fraction")))
        accuracy = dict(zip(*_per_cycle(rows, name, "test_accuracy")))
        if accuracy:
            cells = [f"{100 * accuracy[c]:.2f} @ {kept[c]:.3f}" if c in accuracy and c in kept else "" for c in cycles]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _per_cycle(rows: list[dict[str, Any]], policy: str, name: str) -> tuple[list[int], list[float]]:
    steps = [row for row in rows if row["policy"] == policy and not row.get("final") and row.get(name) is not None]
    cycles = sorted({row["cycle"] for row in steps})
    return cycles, [float(np.mean([row[name] for row in steps if row["cycle"] == c])) for c in cycles]


def curve(rows: list[dict[str, Any]], policy: str, x_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per cycle, the mean over seeds of ``x_name`` and of test accuracy (step rows of ``policy``)."""
    steps = [row for row in rows if row.get(x_name) is not None and row.get("test_accuracy") is not None]
    _, xs = _per_cycle(steps, policy, x_name)
    _, ys = _per_cycle(steps, policy, "test_accuracy")
    return np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)


def plot_pareto(rows: list[dict[str, Any]], path: Path, env_id: str, order: Sequence[str]) -> None:
    """Test accuracy against the fraction of units (DropNet) or of MACs kept (left) and against
    MACs per image (right), one line per policy."""
    from prune_gym.baselines.plotting import quiet_pyplot

    plt = quiet_pyplot()

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    # Left: units kept where the family reports them (DropNet), else the MAC fraction; the label says which.
    steps = [row for row in rows if row.get("test_accuracy") is not None]
    units = bool(steps) and all(row.get("units_kept_fraction") is not None for row in steps)
    fraction, fraction_label = ("units_kept_fraction", "fraction of hidden units kept") if units else (
        "macs_fraction", "fraction of MACs kept")
    for index, name in enumerate(order):
        colour = f"C{index % 10}"
        finals = [row for row in rows if row["policy"] == name and row.get("final")
                  and row.get("test_accuracy") is not None]
        for axis, x_name, scale in ((axes[0], fraction, 1.0), (axes[1], "macs", 1e-6)):
            xs, ys = curve(rows, name, x_name)
            if len(xs):
                axis.plot(scale * xs, 100 * ys, "o-", color=colour, markersize=3, label=name)
            points = [(scale * row[x_name], 100 * row["test_accuracy"])
                      for row in finals if row.get(x_name) is not None]
            if points:
                axis.scatter(*zip(*points), marker="*", s=90, color=colour, edgecolors="black", linewidths=0.5,
                             zorder=3, label=None if len(xs) else name)
    unpruned = column_values([row for row in rows if row.get("cycle") == 0 and not row.get("final")], "test_accuracy")
    for axis in axes if len(unpruned) else ():
        reference = 100 * unpruned.mean()
        axis.axhline(reference, color="grey", linewidth=0.8)
        axis.axhline(reference - 1, color="grey", linewidth=0.8, linestyle="--")  # "within 1 point"
    for axis, label in ((axes[0], fraction_label), (axes[1], "MACs per image (M)")):
        axis.set_xlabel(label)
        axis.set_ylabel("test accuracy (%)")
        axis.invert_xaxis()  # pruning proceeds to the right, as in DropNet's figures
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    seeds = len({row["seed"] for row in rows})
    figure.suptitle(f"{env_id}: test accuracy vs size, mean over {seeds} seed(s) per cycle; ★ final; "
                    "grey: unpruned and 1 point below")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def seconds_per_step(rows: list[dict[str, Any]]) -> float:
    """Mean wall seconds of the env steps in ``rows`` (NaN when there are none)."""
    steps = column_values([row for row in rows if not row.get("final") and row.get("cycle")], "step_s")
    return float(steps.mean()) if len(steps) else math.nan
