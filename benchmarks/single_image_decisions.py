"""Batch-1 latency of the RNP deployment path with the decision network in torch or in numpy.

    PRUNE_GYM_DATA=../shared/data python benchmarks/single_image_decisions.py [--env-id RNP-CIFAR10-v0]
        [--passes 7] [--images 100] [--json F]

On the shipped backbone of ``--env-id`` and ``prune-gym bench``'s default policy (the untrained
RNP-DQN decision network of the default size, biased to the narrowest width), it times:

1. one decision step of the network on one image: the torch cell (``decision_cell()``) against
   the numpy cell (``single_image_cell()``, what :class:`~prune_gym.pruning.deploy.SingleImagePath`
   runs since it exists), median microseconds of 2,000 calls, alternating, best of ``--passes``;
2. batch-1 milliseconds per image of the full backbone, of the pruned path with the torch cell and
   of the pruned path with the numpy cell (:func:`~prune_gym.pruning.deploy.batch1_ms` over
   ``--images`` test images), the three alternating pass by pass, medians over ``--passes``;

and prints the speed-ups over the full backbone. Figures only, nothing is asserted: other load on
the machine moves them (compare the ratios of one run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch
from summary_line import print_summary

import prune_gym  # noqa: F401  (registers the ids)
from prune_gym.agents.rnp_dqn import narrowest_width_decider
from prune_gym.data import normalize
from prune_gym.pruning.deploy import SingleImagePath, batch1_ms
from prune_gym.pruning.runtime import uniform_decision


class TorchCellOnly:
    """The decider with only its torch cell visible: the single-image path as it was before."""

    def __init__(self, decider):
        self.decision_cell, self.decision_macs = decider.decision_cell, decider.decision_macs


def step_microseconds(cell, pooled: torch.Tensor, calls: int = 2000) -> float:
    state = cell.initial_state()
    for _ in range(100):
        cell.step(pooled, 0, 0.1, state)
    started = time.perf_counter()
    for _ in range(calls):
        cell.step(pooled, 0, 0.1, state)
    return 1e6 * (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-id", default="RNP-CIFAR10-v0")
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--json", default=None, metavar="FILE", help="also append the summary line to FILE")
    args = parser.parse_args()
    torch.set_num_threads(1)  # batch 1: what prune-gym bench uses for its latency figures
    env = gym.make(args.env_id, device="cpu").unwrapped
    runtime = env.runtime
    images, _ = env.dataset.split("test", env.settings.val_fraction)
    inputs = normalize(images[: args.images], env.dataset)
    decider = narrowest_width_decider(runtime)
    cells = {"torch": decider.decision_cell(), "numpy": decider.single_image_cell()}
    paths = {"full": SingleImagePath(runtime, uniform_decision(runtime.k - 1)),
             "pruned, torch cell": SingleImagePath(runtime, TorchCellOnly(decider)),
             "pruned, numpy cell": SingleImagePath(runtime, decider)}
    with torch.inference_mode():
        pooled = runtime.stem(inputs[:1])[0].mean(dim=(2, 3))
        step_us = {name: [] for name in cells}
        latency_ms = {name: [] for name in paths}
        for _ in range(args.passes):
            for name, cell in cells.items():
                step_us[name].append(step_microseconds(cell, pooled))
            for name, path in paths.items():
                latency_ms[name].append(batch1_ms(path, inputs))
    figures = {"env_id": args.env_id, "torch_version": torch.__version__,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(), "passes": args.passes,
               "decision_step_us": {name: round(min(values), 1) for name, values in step_us.items()},
               "batch1_ms": {name: round(statistics.median(values), 4) for name, values in latency_ms.items()}}
    full = figures["batch1_ms"]["full"]
    figures["speedup_over_full"] = {name: round(full / value, 3) for name, value in figures["batch1_ms"].items()}
    print(f"{args.env_id}, one thread, {torch.backends.cpu.get_cpu_capability()}")
    for name, value in figures["decision_step_us"].items():
        print(f"one decision step, {name} cell: {value:7.1f} µs (best of {args.passes} passes)")
    for name, value in figures["batch1_ms"].items():
        print(f"batch 1, {name:20s}: {value:.3f} ms per image ({figures['speedup_over_full'][name]:.2f}× the full)")
    print_summary(figures, args.json)


if __name__ == "__main__":
    main()
