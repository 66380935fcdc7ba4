"""CPU latency of a MaskOffset episode's extracted network against the unpruned ResNet.

    PRUNE_GYM_DATA=../shared/data python benchmarks/maskoffset_latency.py --threads 1 --env-kwargs device=cpu

Plays one episode of a scripted policy (default ``fixed-offset``, seed 0: the ``prune-gym compare``
run of the same seed), then times the pretrained network and the episode's extracted dense network
on the same test images: batch-1 milliseconds per image (:func:`~prune_gym.pruning.deploy.batch1_ms`,
median of ``--passes`` passes) and images per second at ``--batch-size``. The two networks are
timed in alternation, pass by pass, so the machine's other load falls on both alike and the ratio is
the figure to quote. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

from summary_line import print_summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="MaskOffset-CIFAR10-v0")
    parser.add_argument("--policy", default="fixed-offset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--images", type=int, default=200, help="test images per batch-1 pass")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, metavar="FILE", help="also append the summary line to FILE")
    args = parser.parse_args(argv)

    import torch

    import prune_gym  # noqa: F401 - registers the ids
    from prune_gym.baselines.registry import get_policy
    from prune_gym.cli import parse_env_kwargs
    from prune_gym.policies import make_env, play_episode
    from prune_gym.pruning.deploy import batch1_ms

    torch.set_num_threads(args.threads)
    env = make_env(args.env_id, parse_env_kwargs(args.env_kwargs), None)
    start, *_, final = play_episode(env, get_policy(args.env_id, args.policy), args.seed)
    unwrapped = env.unwrapped
    networks = {"full": unwrapped.original_model().eval(), "pruned": unwrapped.pruned_model().eval()}
    data = unwrapped.data
    inputs = unwrapped._prepare(data.test_images[:max(args.images, args.batch_size)]).cpu()
    batch1: dict[str, list[float]] = {name: [] for name in networks}
    throughput: dict[str, list[float]] = {name: [] for name in networks}
    with torch.inference_mode():
        for _ in range(args.passes):  # alternate the two networks pass by pass
            for name, network in networks.items():
                network = network.cpu().to(memory_format=torch.channels_last)
                batch1[name].append(batch1_ms(network, inputs[:args.images]))
                network(inputs[:args.batch_size])  # warm-up at this batch size
                started = time.perf_counter()
                network(inputs[:args.batch_size])
                throughput[name].append(args.batch_size / (time.perf_counter() - started))
    summary = {
        "env_id": args.env_id, "policy": args.policy, "seed": args.seed, "threads": args.threads,
        "env_kwargs": args.env_kwargs, "macs_fraction": final["macs"] / final["macs_full"],
        "params_fraction": final["params"] / final["params_full"], "test_accuracy": final["test_accuracy"],
        "test_accuracy_full": start["test_accuracy"],  # the reset row: nothing pruned yet
        "batch1_ms_full": statistics.median(batch1["full"]), "batch1_ms_pruned": statistics.median(batch1["pruned"]),
        "images_per_s_full": statistics.median(throughput["full"]),
        "images_per_s_pruned": statistics.median(throughput["pruned"]), "batch_size": args.batch_size,
    }
    summary["batch1_speedup"] = summary["batch1_ms_full"] / summary["batch1_ms_pruned"]
    summary["throughput_speedup"] = summary["images_per_s_pruned"] / summary["images_per_s_full"]
    print_summary(summary, args.json)


if __name__ == "__main__":
    main()
