"""Fixed action sequences in an AlphaBlend env, paired on the same seeds: is there a schedule that
beats ``one-shot``?

    PRUNE_GYM_DATA=../shared/data python benchmarks/alphablend_schedules.py AlphaBlend-CIFAR10-Arena-v1 \
        --schedules finish large,finish large,large,finish large,large,large,finish --seeds 5 --threads 1 \
        --env-kwargs device=cpu --json docs/arena/alphablend/short-handovers.jsonl

A schedule is a comma-separated list of action names (``hold``, ``small``, ``medium``, ``large``,
``finish``); its last action repeats until the episode ends, so ``large,finish`` blends one step at
α = 0.5 and then hands over. The scripted schedules of ``prune-gym compare`` (``exponential``,
``linear``: gradual hand-overs over 2/3 of the budget) are slow; this asks whether a *fast* one
— a few steps of blended training before the hand-over — is what an agent could find and the rules
miss. Prints one JSON line per (schedule, seed) and a summary per schedule with the paired
difference to the first schedule given. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from summary_line import print_summary


def sequence_policy(text: str, actions: list[int]):
    """A scripted policy that plays ``actions`` in order, the last repeating."""
    from prune_gym.policies import ScriptedPolicy

    def make(env):
        taken = itertools.count()
        return lambda obs, info: actions[min(next(taken), len(actions) - 1)]

    return ScriptedPolicy("AlphaBlend", text, "fixed action sequence", make)


def play(env, text: str, actions: list[int], seed: int) -> dict:
    """One episode of the sequence through the project's episode loop, from ``reset(seed=seed)``."""
    from prune_gym.policies import play_episode

    rows = play_episode(env, sequence_policy(text, actions), seed)
    last = rows[-1]
    return {"return": round(last["episode_return"], 4), "test_accuracy": last["test_accuracy"],
            "steps": len(rows) - 1, "wall_s": round(last["wall_s"], 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id")
    parser.add_argument("--schedules", nargs="+", required=True, metavar="A,B,...",
                        help="action-name sequences; the first is the reference of the paired differences")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1, the same for every schedule")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, metavar="FILE", help="also append every line to FILE")
    args = parser.parse_args(argv)

    import torch

    import prune_gym  # noqa: F401 - registers the ids
    from prune_gym.cli import parse_env_kwargs
    from prune_gym.envs.alphablend import ACTION_NAMES
    from prune_gym.policies import make_env
    from prune_gym.registry import is_family

    if args.threads:
        torch.set_num_threads(args.threads)
    if not is_family(args.env_id, "AlphaBlend"):
        parser.error(f"{args.env_id} is not an AlphaBlend id; the schedules are AlphaBlend's actions")
    unknown = sorted({name for text in args.schedules for name in text.split(",")} - set(ACTION_NAMES))
    if unknown:
        parser.error(f"unknown action(s) {', '.join(unknown)}; the actions are {', '.join(ACTION_NAMES)}")
    schedules = {text: [ACTION_NAMES.index(name) for name in text.split(",")] for text in args.schedules}
    env = make_env(args.env_id, parse_env_kwargs(args.env_kwargs))
    returns: dict[str, list[float]] = {}
    for text, actions in schedules.items():
        for seed in range(args.seeds):
            row = play(env, text, actions, seed)
            returns.setdefault(text, []).append(row["return"])
            print_summary({"env_id": args.env_id, "schedule": text, "seed": seed, **row}, args.json)
    reference = np.array(returns[args.schedules[0]])
    for text, values in returns.items():
        values = np.array(values)
        print_summary({"env_id": args.env_id, "schedule": text, "seeds": args.seeds,
                       "return_mean": round(float(values.mean()), 4), "return_std": round(float(values.std()), 4),
                       f"mean_difference_to_{args.schedules[0]}": round(float((values - reference).mean()), 4),
                       f"seeds_above_{args.schedules[0]}": int((values > reference).sum())}, args.json)


if __name__ == "__main__":
    main()
