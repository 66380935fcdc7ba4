"""The RNP accuracy–MACs sweep on CIFAR-10: custom DQN operating points vs static and narrow networks.

    python -m prune_gym.baselines.rnp_pareto --out runs/rnp-pareto

For each MAC penalty it trains the custom DQN (``prune-gym train ... --algo rnp-dqn``, reusing a
finished run in ``OUT``), evaluates it greedily on the test split (``prune-gym evaluate``), and puts
beside it: the uniform-width policies and the random policy on the same pretrained backbone, the
vanilla narrow networks (trained from scratch with fewer channels and the backbone's budget, at the
DQN points' MACs, ``--vanilla-seeds`` seeds each: mean ± std), and
SB3 DQN and PPO at the env's default reward. Writes ``OUT/results.json``, ``OUT/results.md`` and
``OUT/pareto.png`` (test accuracy vs MACs per image, the decision network's own MACs included).

``--ray [ADDRESS]`` runs every training as one Ray task — each (penalty, seed) DQN point, each SB3
run, each (width, seed) narrow network — on a local instance or the cluster at ADDRESS. The figures
are those of the plain run (every job is seeded by its arguments; only timings and batch-1 latencies,
measured while other tasks run, differ).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

DEFAULT_PENALTIES = (-0.1, -0.07, -0.05, -0.03)
# The full-CIFAR-10 issue's accuracy target at ≥ 3× fewer MACs (the plot's dashed line).
TARGET_POINTS_BELOW_FULL = 0.8


def trained_run(out: Path, name: str, env_id: str, algo: str, env_kwargs: dict[str, Any], timesteps: int | None,
                seed: int) -> tuple[Path, float | None]:
    """Train into ``out/name`` unless a finished run is there; returns the run and its training seconds."""
    from prune_gym.agents.runs import train_run

    run_dir = out / name
    if (run_dir / "final_model.pt").exists() or (run_dir / "final_model.zip").exists():
        timing = run_dir / "train_wall_s.txt"
        return run_dir, float(timing.read_text()) if timing.exists() else None
    start = time.perf_counter()
    train_run(env_id, algo, timesteps=timesteps, seed=seed, out=run_dir, env_kwargs=env_kwargs)
    wall_s = time.perf_counter() - start
    (run_dir / "train_wall_s.txt").write_text(f"{wall_s:.1f}\n")
    return run_dir, wall_s


def scripted_rows(env_id: str, env_kwargs: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """Uniform widths and random groups on the pretrained backbone, test split."""
    from prune_gym.baselines.registry import policies_for
    from prune_gym.evaluation import evaluate_rnp_policy, rnp_images

    env = gym.make(env_id, **env_kwargs)
    env.reset(seed=seed)
    images, labels, _ = rnp_images(env.unwrapped, "test", None)
    rows = []
    for policy in policies_for(env_id):
        decide = policy.make(env).decide_batch
        figures = evaluate_rnp_policy(env.unwrapped, decide, images, labels, env.unwrapped, latency=False)
        rows.append({"method": policy.name, "kind": "scripted", **figures})
    return rows


def vanilla_rows(env_id: str, env_kwargs: dict[str, Any], target_macs: list[float],
                 seeds: list[int], ray: str | None = None) -> list[dict[str, Any]]:
    """One row per width factor matching a DQN point's MACs: the narrow network trained once per
    seed (a plain net's test accuracy on 517 images moves by 1–2 points from seed to seed, as much
    as the gaps being compared), with the mean, sample std and every seed's accuracy. With ``ray``
    each (factor, seed) trains as one Ray task."""
    import numpy as np

    from prune_gym.baselines.rnp import vanilla_network, width_factor_for_macs
    from prune_gym.ray_support import map_tasks

    if not seeds:
        return []
    env = gym.make(env_id, **env_kwargs).unwrapped
    settings, dataset = env.settings, env.dataset
    factors = sorted({width_factor_for_macs(settings.backbone, macs, dataset.image_shape, dataset.num_classes)
                      for macs in target_macs})
    start = time.perf_counter()
    # The backbone's own budget and validation split, whatever the env kwargs changed in them
    # (steps, rate, precision, Cutout): the vanilla networks get exactly the backbone's recipe.
    backbone = settings.backbone_request()
    calls = [(settings.dataset, settings.backbone, factor, settings.data_root, seed, settings.device,
              backbone.budget, backbone.val_fraction) for factor in factors for seed in seeds]
    trained = iter(map_tasks(vanilla_network, calls, ray))
    # Wall time of all the narrow networks, shared out per width (with --ray they trained side by side).
    wall_s = (time.perf_counter() - start) / len(factors)
    rows = []
    for factor in factors:
        runs = [next(trained) for _ in seeds]
        accuracies = np.array([run["accuracy"] for run in runs])
        rows.append({"method": f"vanilla-w{factor:g}", "kind": "vanilla", "mean_macs": runs[0]["macs"],
                     "accuracy": float(accuracies.mean()),
                     "accuracy_std": float(accuracies.std(ddof=1)) if len(runs) > 1 else None,
                     "accuracy_per_seed": accuracies.tolist(), "seeds": list(seeds),
                     "cross_entropy": float(np.mean([run["cross_entropy"] for run in runs])),
                     "params": runs[0]["params"], "wall_s": wall_s})
    return rows


def agent_row(run_dir: Path, method: str, kind: str, wall_s: float | None, **extra: Any) -> dict[str, Any]:
    from prune_gym.agents.evaluate import evaluate_run

    figures = evaluate_run(run_dir)
    return {"method": method, "kind": kind, "run": str(run_dir), "train_wall_s": wall_s, **extra, **figures}


def trained_point(out: Path, name: str, env_id: str, algo: str, env_kwargs: dict[str, Any], timesteps: int | None,
                  seed: int, method: str, kind: str, extra: dict[str, Any]) -> dict[str, Any]:
    """One agent's point: trained into ``out/name`` (or a finished run reused), then evaluated; one job
    (a Ray task with ``--ray``)."""
    run_dir, wall_s = trained_run(out, name, env_id, algo, env_kwargs, timesteps, seed)
    return agent_row(run_dir, method, kind, wall_s, **extra)


def dqn_run_name(penalty: float, seed: int) -> str:
    """``rnp-dqn_p-0.05`` for seed 0 (the name earlier sweeps used, so their runs are reused), else ``…_s1``."""
    return f"rnp-dqn_p{penalty:g}" + (f"_s{seed}" if seed else "")


def write_table(rows: list[dict[str, Any]], reference: dict[str, Any], path: Path) -> None:
    lines = [f"Test split, {reference['images']} images; full backbone: {100 * reference['accuracy_full']:.2f} % "
             f"at {reference['macs_full'] / 1e6:.2f} M MACs per image. MACs/image include the decision "
             "network's own (RNP-DQN encoders, GRU and decoder; SB3 policies' MLP; scripted rules 0).", "",
             "| method | group penalty | test accuracy | Δ vs full (points) | MACs/image | MAC reduction "
             "| train time |",
             "|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: r["mean_macs"]):
        penalty = row.get("group_penalty")
        wall = row.get("train_wall_s")
        spread = row.get("accuracy_std")
        accuracy = f"{100 * row['accuracy']:.2f}" + ("" if spread is None else f" ± {100 * spread:.2f}")
        lines.append(
            f"| {row['method']} | {'' if penalty is None else penalty} | {accuracy} % "
            f"| {100 * (row['accuracy'] - reference['accuracy_full']):+.2f} | {row['mean_macs'] / 1e6:.2f} M "
            f"| {reference['macs_full'] / row['mean_macs']:.2f}× | {'' if wall is None else f'{wall / 60:.1f} min'} |")
    path.write_text("\n".join(lines) + "\n")


def plot_title(env_id: str, reference: dict[str, Any]) -> str:
    """Names the env and the test images the figures come from (the data copy is the user's)."""
    return f"RNP sweep on {env_id}: {reference['images']:,} test images"


def plot(rows: list[dict[str, Any]], reference: dict[str, Any], path: Path, title: str) -> None:
    from prune_gym.baselines.plotting import quiet_pyplot

    plt = quiet_pyplot()

    # DQN points are markers only: with several seeds per penalty a line through them, sorted by
    # MACs, would zigzag between seeds and suggest a frontier that no single run traces.
    styles = {"rnp-dqn": ("o", "custom DQN (RNP), every seed"), "uniform": ("s--", "uniform width"),
              "vanilla": ("^:", "vanilla narrow network"), "random": ("x", "random groups"),
              "sb3-dqn": ("D", "SB3 DQN"), "sb3-ppo": ("P", "SB3 PPO")}
    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    for group, (style, label) in styles.items():
        points = sorted((row["mean_macs"] / 1e6, 100 * row["accuracy"]) for row in rows
                         if row.get("group", row["kind"]) == group)
        if points:
            axis.plot(*zip(*points), style, label=label)
    for row in rows:  # seed-to-seed spread of the narrow networks
        if row.get("accuracy_std") is not None:
            axis.errorbar(row["mean_macs"] / 1e6, 100 * row["accuracy"], yerr=100 * row["accuracy_std"],
                          color="grey", capsize=3, lw=0.8)
    axis.axhline(100 * reference["accuracy_full"] - TARGET_POINTS_BELOW_FULL, color="grey", lw=0.8, ls="--",
                 label=f"full − {TARGET_POINTS_BELOW_FULL:g} points")
    axis.axvline(reference["macs_full"] / 3e6, color="grey", lw=0.8, ls=":", label="3× fewer MACs")
    axis.set_xlabel("MACs per image, decision network included (millions)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    import prune_gym  # noqa: F401
    from prune_gym.cli import add_ray_argument, parse_env_kwargs
    from prune_gym.ray_support import ray_session

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="RNP-CIFAR10-v0")
    parser.add_argument("--out", default="runs/rnp-pareto")
    parser.add_argument("--penalties", type=float, nargs="+", default=list(DEFAULT_PENALTIES))
    parser.add_argument("--timesteps", type=int, help="per DQN run (default: agents/hyperparams/rnp-dqn.yml)")
    parser.add_argument("--sb3", nargs="*", default=["dqn", "ppo"], choices=["dqn", "ppo", "a2c"])
    parser.add_argument("--sb3-timesteps", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dqn-seeds", type=int, default=1,
                        help="custom-DQN seeds per penalty: SEED..SEED+N-1 (default: 1)")
    parser.add_argument("--vanilla-seeds", type=int, default=3, help="seeds per vanilla narrow network (0: none)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE",
                        help="kwargs of every env (the DQN points add their group_penalty)")
    add_ray_argument(parser, "run every training as one task")
    args = parser.parse_args(argv)
    if args.dqn_seeds < 1 or args.vanilla_seeds < 0:
        parser.error("--dqn-seeds must be ≥ 1 and --vanilla-seeds ≥ 0.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_kwargs = parse_env_kwargs(args.env_kwargs)
    if args.ray is None:
        rows = sweep(args, out, env_kwargs, None)
    else:
        with ray_session(args.ray):  # one connection for both rounds of tasks
            rows = sweep(args, out, env_kwargs, args.ray)
    reference = next(row for row in rows if row["method"] == "uniform-4")
    (out / "results.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    write_table(rows, reference, out / "results.md")
    plot(rows, reference, out / "pareto.png", plot_title(args.env_id, reference))
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'pareto.png'}")


def sweep(args: argparse.Namespace, out: Path, env_kwargs: dict[str, Any], ray: str | None) -> list[dict[str, Any]]:
    """Every row of the sweep: scripted policies here, then the agents' points (one job each), then
    the narrow networks at the DQN points' MACs (one job per width and seed)."""
    from prune_gym.ray_support import map_tasks

    rows = []
    for row in scripted_rows(args.env_id, env_kwargs, args.seed):
        row["group"] = "random" if row["method"] == "random" else "uniform"
        rows.append(row)
    seeds = list(range(args.seed, args.seed + args.dqn_seeds))
    points = [(out, dqn_run_name(penalty, seed), args.env_id, "rnp-dqn", {**env_kwargs, "group_penalty": penalty},
               args.timesteps, seed, f"rnp-dqn p={penalty:g}" + (f" s{seed}" if len(seeds) > 1 else ""), "rnp-dqn",
               {"group_penalty": penalty, "seed": seed, "group": "rnp-dqn"})
              for penalty in args.penalties for seed in seeds]
    points += [(out, f"sb3-{algo}", args.env_id, algo, env_kwargs, args.sb3_timesteps, args.seed,
                f"SB3 {algo.upper()}", f"sb3-{algo}", {"group": f"sb3-{algo}"}) for algo in args.sb3]
    rows += map_tasks(trained_point, points, ray)
    dqn_macs = [row["mean_macs"] for row in rows if row["kind"] == "rnp-dqn"]
    for row in vanilla_rows(args.env_id, env_kwargs, dqn_macs,
                            list(range(args.seed, args.seed + args.vanilla_seeds)), ray):
        row["group"] = "vanilla"
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
