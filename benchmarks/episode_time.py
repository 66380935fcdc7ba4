"""Wall clock of one episode of a training-in-the-loop env, step by step (a scripted policy's actions).

    PRUNE_GYM_DATA=../shared/data python benchmarks/episode_time.py MaskOffset-CIFAR10-v0 --threads 1 \
        --env-kwargs weights=train pretrain_steps=20

Prints the first reset (data loading, the pretrained network from the shipped weights, the cache or
training, reference scoring), a second reset, every step's seconds and the episode's total, and the
final accounting. ``weights=train pretrain_steps=N`` times an episode before real weights exist:
the seconds are the env's, the accuracies are not meaningful. Figures only: nothing is asserted;
the machine's other load moves them.
"""

from __future__ import annotations

import argparse
import time

from summary_line import print_summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id")
    parser.add_argument("--policy", default=None, help="a scripted policy of the family (default: its first)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps (seconds per step of an env whose episode is long)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also append the summary line to FILE")
    parser.add_argument("--label", default=None, help="a note stored in the summary line (e.g. the commit)")
    args = parser.parse_args(argv)

    import torch

    import prune_gym  # noqa: F401 - registers the ids
    from prune_gym.baselines.registry import get_policy, policies_for
    from prune_gym.cli import parse_env_kwargs
    from prune_gym.policies import make_env

    if args.threads:
        torch.set_num_threads(args.threads)
    env = make_env(args.env_id, parse_env_kwargs(args.env_kwargs), None)
    policy_name = args.policy or policies_for(args.env_id)[0].name
    policy = get_policy(args.env_id, policy_name).make(env.unwrapped)
    start = time.perf_counter()
    env.reset(seed=args.seed)
    first_reset = time.perf_counter() - start
    print(f"first reset: {first_reset:.1f} s", flush=True)
    start = time.perf_counter()
    observation, info = env.reset(seed=args.seed + 1)
    episode_start = time.perf_counter()
    print(f"reset: {episode_start - start:.1f} s", flush=True)
    done, steps = False, 0
    while not done and steps != args.max_steps:
        step_start = time.perf_counter()
        observation, _, terminated, truncated, info = env.step(policy(observation, info))
        done, steps = terminated or truncated, steps + 1
        print(f"step {steps}: {time.perf_counter() - step_start:.1f} s, MACs kept "
              f"{info['macs'] / info['macs_full']:.3f}", flush=True)
    total = time.perf_counter() - episode_start
    print_summary({
        "label": args.label, "env_id": args.env_id, "env_kwargs": args.env_kwargs, "policy": policy_name,
        "threads": torch.get_num_threads(),
        "first_reset_s": round(first_reset, 1), "reset_s": round(episode_start - start, 1),
        "steps": steps, "episode_done": done, "episode_s": round(total, 1), "seconds_per_step": round(total / steps, 2),
        "macs_kept": round(info["macs"] / info["macs_full"], 4),
        "params_kept": round(info["params"] / info["params_full"], 4),
        "test_accuracy": info["test_accuracy"]}, args.json)  # test_accuracy: None until an episode ends


if __name__ == "__main__":
    main()
