"""CPU latency of a MaskOffset episode's extracted network against the unpruned ResNet.

    PRUNE_GYM_DATA=../shared/data python benchmarks/maskoffset_latency.py --threads 1 --env-kwargs device=cpu

Plays one episode of a scripted policy (default ``fixed-offset``, seed 0: the ``prune-gym compare``
run of the same seed), then times the pretrained network and the episode's extracted dense network
on the same test images: batch-1 milliseconds per image (:func:`~prune_gym.pruning.deploy.batch1_ms`,
median of ``--passes`` passes) and images per second at ``--batch-size``. Each network is timed
as the env returns it (channels last) and in its inference form
(:func:`~prune_gym.pruning.resnet_pruning.inference_form`: BatchNorms folded, the pruned network's
channel counts zero-padded to multiples of ``--round-to``), whose MACs are reported too. The four
are timed in alternation, pass by pass, so the machine's other load falls on all alike and the
ratios are the figures to quote. Figures only: nothing is asserted.
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
    parser.add_argument("--round-to", type=int, default=8, help="channel multiple of the inference form (1: none)")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--save", default=None, metavar="FILE",
                        help="also save the episode's two networks, test images and figures to FILE")
    parser.add_argument("--load", default=None, metavar="FILE",
                        help="time the networks of an earlier --save instead of playing the episode again")
    parser.add_argument("--json", default=None, metavar="FILE", help="also append the summary line to FILE")
    args = parser.parse_args(argv)

    import torch

    import prune_gym  # noqa: F401 - registers the ids
    from prune_gym.baselines.registry import get_policy
    from prune_gym.cli import parse_env_kwargs
    from prune_gym.policies import make_env, play_episode
    from prune_gym.pruning.counting import count_macs
    from prune_gym.pruning.deploy import batch1_ms
    from prune_gym.pruning.resnet_pruning import inference_form

    torch.set_num_threads(args.threads)
    if args.load:  # this script's own file (whole modules pickled), so weights_only cannot hold it
        episode = torch.load(args.load, weights_only=False)
    else:
        env = make_env(args.env_id, parse_env_kwargs(args.env_kwargs), None)
        start, *_, final = play_episode(env, get_policy(args.env_id, args.policy), args.seed)
        unwrapped = env.unwrapped
        episode = {
            "full": unwrapped.original_model().eval().cpu(), "pruned": unwrapped.pruned_model().eval().cpu(),
            "inputs": unwrapped._prepare(unwrapped.data.test_images[:max(args.images, args.batch_size)]).cpu(),
            "figures": {"env_id": args.env_id, "policy": args.policy, "seed": args.seed, "env_kwargs": args.env_kwargs,
                        "macs_fraction": final["macs"] / final["macs_full"],
                        "params_fraction": final["params"] / final["params_full"],
                        "test_accuracy": final["test_accuracy"],
                        "test_accuracy_full": start["test_accuracy"]},  # the reset row: nothing pruned yet
        }
        if args.save:
            torch.save(episode, args.save)
    networks = {name: episode[name].to(memory_format=torch.channels_last) for name in ("full", "pruned")}
    networks.update({f"{name}_inference": inference_form(episode[name], args.round_to) for name in ("full", "pruned")})
    inputs = episode["inputs"].contiguous(memory_format=torch.channels_last)
    batch1: dict[str, list[float]] = {name: [] for name in networks}
    throughput: dict[str, list[float]] = {name: [] for name in networks}
    with torch.inference_mode():
        for _ in range(args.passes):  # alternate the networks pass by pass
            for name, network in networks.items():
                batch1[name].append(batch1_ms(network, inputs[:args.images]))
                network(inputs[:args.batch_size])  # warm-up at this batch size
                started = time.perf_counter()
                network(inputs[:args.batch_size])
                throughput[name].append(args.batch_size / (time.perf_counter() - started))
    image_shape = tuple(inputs.shape[1:])
    summary = {
        **episode["figures"], "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loaded_from": args.load, "round_to": args.round_to,
        "macs_fraction_inference_form": (count_macs(networks["pruned_inference"], image_shape)
                                         / count_macs(networks["full_inference"], image_shape)),
        "batch_size": args.batch_size,
    }
    for name in networks:
        summary[f"batch1_ms_{name}"] = statistics.median(batch1[name])
        summary[f"images_per_s_{name}"] = statistics.median(throughput[name])
    for suffix in ("", "_inference"):
        summary[f"batch1_speedup{suffix}"] = summary[f"batch1_ms_full{suffix}"] / summary[f"batch1_ms_pruned{suffix}"]
        summary[f"throughput_speedup{suffix}"] = (summary[f"images_per_s_pruned{suffix}"]
                                                  / summary[f"images_per_s_full{suffix}"])
    print_summary(summary, args.json)


if __name__ == "__main__":
    main()
