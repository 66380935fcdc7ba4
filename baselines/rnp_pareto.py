"""The RNP accuracy–MACs sweep on CIFAR-10: custom DQN operating points vs static and narrow networks.

    python -m prune_gym.baselines.rnp_pareto --out runs/rnp-pareto

For each MAC penalty it trains the custom DQN (``prune-gym train ... --algo rnp-dqn``, reusing a
finished run in ``OUT``), evaluates it greedily on the test split (``prune-gym evaluate``), and puts
beside it: the uniform-width policies and the random policy on the same pretrained backbone, the
vanilla narrow networks (trained from scratch with fewer channels and the backbone's budget, at the
DQN points' MACs, ``--vanilla-seeds`` seeds each: mean ± std), and
SB3 DQN and PPO at the env's default reward. Writes ``OUT/results.json``, ``OUT/results.md`` and
``OUT/pareto.png`` (test accuracy vs MACs per image, the decision network's own MACs included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

DEFAULT_PENALTIES = (-0.1, -0.07, -0.05, -0.03)


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
                 seeds: list[int]) -> list[dict[str, Any]]:
    """One row per width factor matching a DQN point's MACs: the narrow network trained once per
    seed (a plain net's test accuracy on 517 images moves by 1–2 points from seed to seed, as much
    as the gaps being compared), with the mean, sample std and every seed's accuracy."""
    import numpy as np

    from prune_gym.baselines.rnp import vanilla_network, width_factor_for_macs

    env = gym.make(env_id, **env_kwargs).unwrapped
    settings, dataset = env.settings, env.dataset
    factors = sorted({width_factor_for_macs(settings.backbone, macs, dataset.image_shape, dataset.num_classes)
                      for macs in target_macs})
    rows = []
    for factor in factors:
        start = time.perf_counter()
        runs = [vanilla_network(settings.dataset, settings.backbone, factor, settings.data_root, seed,
                                settings.device) for seed in seeds]
        accuracies = np.array([run["accuracy"] for run in runs])
        rows.append({"method": f"vanilla-w{factor:g}", "kind": "vanilla", "mean_macs": runs[0]["macs"],
                     "accuracy": float(accuracies.mean()),
                     "accuracy_std": float(accuracies.std(ddof=1)) if len(runs) > 1 else None,
                     "accuracy_per_seed": accuracies.tolist(), "seeds": list(seeds),
                     "cross_entropy": float(np.mean([run["cross_entropy"] for run in runs])),
                     "params": runs[0]["params"], "wall_s": time.perf_counter() - start})
    return rows


def agent_row(run_dir: Path, method: str, kind: str, wall_s: float | None, **extra: Any) -> dict[str, Any]:
    from prune_gym.agents.evaluate import evaluate_run

    figures = evaluate_run(run_dir)
    return {"method": method, "kind": kind, "run": str(run_dir), "train_wall_s": wall_s, **extra, **figures}


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


def plot(rows: list[dict[str, Any]], reference: dict[str, Any], path: Path) -> None:
    from prune_gym.baselines.plotting import quiet_pyplot

    plt = quiet_pyplot()

    styles = {"rnp-dqn": ("o-", "custom DQN (RNP)"), "uniform": ("s--", "uniform width"),
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
    axis.axhline(100 * reference["accuracy_full"] - 2, color="grey", lw=0.8, ls="--", label="full − 2 points")
    axis.axvline(reference["macs_full"] / 3e6, color="grey", lw=0.8, ls=":", label="3× fewer MACs")
    axis.set_xlabel("MACs per image, decision network included (millions)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("RNP on the CIFAR-10 subset (cnn4, k = 4)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    import prune_gym  # noqa: F401

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="RNP-CIFAR10-v0")
    parser.add_argument("--out", default="runs/rnp-pareto")
    parser.add_argument("--penalties", type=float, nargs="+", default=list(DEFAULT_PENALTIES))
    parser.add_argument("--timesteps", type=int, help="per DQN run (default: agents/hyperparams/rnp-dqn.yml)")
    parser.add_argument("--sb3", nargs="*", default=["dqn", "ppo"], choices=["dqn", "ppo", "a2c"])
    parser.add_argument("--sb3-timesteps", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vanilla-seeds", type=int, default=3, help="seeds per vanilla narrow network")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for row in scripted_rows(args.env_id, {}, args.seed):
        row["group"] = "random" if row["method"] == "random" else "uniform"
        rows.append(row)
    for penalty in args.penalties:
        run_dir, wall_s = trained_run(out, f"rnp-dqn_p{penalty:g}", args.env_id, "rnp-dqn",
                                      {"group_penalty": penalty}, args.timesteps, args.seed)
        rows.append(agent_row(run_dir, f"rnp-dqn p={penalty:g}", "rnp-dqn", wall_s, group_penalty=penalty,
                              group="rnp-dqn"))
    for algo in args.sb3:
        run_dir, wall_s = trained_run(out, f"sb3-{algo}", args.env_id, algo, {}, args.sb3_timesteps, args.seed)
        rows.append(agent_row(run_dir, f"SB3 {algo.upper()}", f"sb3-{algo}", wall_s, group=f"sb3-{algo}"))
    dqn_macs = [row["mean_macs"] for row in rows if row["kind"] == "rnp-dqn"]
    for row in vanilla_rows(args.env_id, {}, dqn_macs,
                            list(range(args.seed, args.seed + args.vanilla_seeds))):
        row["group"] = "vanilla"
        rows.append(row)
    reference = next(row for row in rows if row["method"] == "uniform-4")
    (out / "results.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    write_table(rows, reference, out / "results.md")
    plot(rows, reference, out / "pareto.png")
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'pareto.png'}")


if __name__ == "__main__":
    main()
