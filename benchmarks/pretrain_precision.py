"""Pretraining step throughput in fp32 against bf16 autocast (``PretrainBudget(precision="bf16")``).

    python benchmarks/pretrain_precision.py [--threads 2] [--batch 512] [--repeats 5] [--json F]

For each backbone (ResNet-20 for MaskOffset, the grouped cnn4 of RNP-CIFAR10-v0 at full width, and
cnn4's sandwich step: full width plus the narrowest and two random mixes), one training step —
forward, cross-entropy, backward, SGD update — on random images at the pretraining batch size,
channels_last, the two precisions timed in alternation. Prints images per second and the
bf16/fp32 ratio. Figures only, nothing is asserted; another job on the machine moves them, so
compare the ratios of one run. Where the CPU has no AVX-512 BF16 (or AMX) the script says so:
autocast then runs bfloat16 without hardware support, usually slower than fp32.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from prune_gym.models import BACKBONES, GroupedCNN
from prune_gym.models.resnet_cifar import cifar_resnet
from prune_gym.pretraining import cpu_has_native_bf16, full_width_step, sandwich_step


def step_function(name: str, batch: int, precision: str) -> Callable[[], None]:
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(10, (batch,))
    model = cifar_resnet("resnet20") if name == "resnet20" else GroupedCNN(BACKBONES["cnn4"], 3, 10, k=4)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if name == "cnn4-sandwich":
            sandwich_step(model, images, labels, generator, 2, 0.2, precision)
        else:
            full_width_step(model, images, labels, 0.1, precision)
        optimizer.step()

    return step


def images_per_second(steps: dict[str, Callable[[], None]], batch: int, repeats: int) -> dict[str, float]:
    """Median images/s of each step, the steps timed in alternation (one of each per round)."""
    for step in steps.values():
        step()  # warm-up: oneDNN picks and caches its kernels on the first call
    timings: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            timings[name].append(time.perf_counter() - started)
    return {name: batch / sorted(values)[len(values) // 2] for name, values in timings.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["resnet20", "cnn4", "cnn4-sandwich"],
                        choices=["resnet20", "cnn4", "cnn4-sandwich"])
    parser.add_argument("--json", help="append the figures as one JSON line to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    hardware_bf16 = cpu_has_native_bf16()
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, "
          f"AVX-512 BF16 / AMX: {'yes' if hardware_bf16 else 'no (bf16 is emulated, expect it slower)'}")
    record = {"threads": args.threads, "batch": args.batch, "hardware_bf16": hardware_bf16, "models": {}}
    for name in args.models:
        rates = images_per_second({precision: step_function(name, args.batch, precision)
                                   for precision in ("fp32", "bf16")}, args.batch, args.repeats)
        ratio = rates["bf16"] / rates["fp32"]
        print(f"{name:14s} fp32 {rates['fp32']:7.0f} images/s   bf16 {rates['bf16']:7.0f} images/s   "
              f"bf16/fp32 {ratio:.2f}×")
        record["models"][name] = {**{f"{key}_images_per_s": round(value, 1) for key, value in rates.items()},
                                  "ratio": round(ratio, 3)}
    if args.json:
        with open(args.json, "a") as stream:
            stream.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
