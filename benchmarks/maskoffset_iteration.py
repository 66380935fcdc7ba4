"""What one MaskOffset training iteration costs: a pruning iteration (ResNet-20 with its 19
pruning-models) against a fine-tuning iteration of the plain network, fp32 and bf16 autocast.

    python benchmarks/maskoffset_iteration.py --threads 2 --batch-size 128 --json docs/bench/maskoffset-iteration.jsonl

Why it exists: it prices a budget before it is run. ``THESIS_BUDGET`` (4,000 pruning iterations and
14,000 fine-tuning iterations of batch 128) costs ``4000 · pruning + 14000 · fine-tuning`` seconds
plus the evaluations, and the pruning-models, not the network, dominate a pruning iteration: each
reads its convolution's input resized to 16×16 through grouped convolutions of two channels per
group, which oneDNN runs far below its dense speed. Random weights and images (the speed of a
step does not depend on them); the pruning-models' own share is timed per stage too. Figures
only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib

from summary_line import print_summary
from timing import best_mean_seconds


def seconds_per_iteration(model, images, labels, precision: str, iterations: int, repeats: int) -> float:
    """Best of ``repeats`` means over ``iterations`` SGD steps (forward, backward, update)."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
        with autocast:
            output = model(images)
        loss = F.cross_entropy(output.float(), labels) if output.dim() == 2 and output.shape[1] == 10 \
            else output.float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return best_mean_seconds(step, iterations, repeats, warmup=2)


def grouped_conv_ms(batch_size: int, channels: int, size: int, as_two_depthwise: bool, repeats: int) -> float:
    """Forward + backward of a pruning-model's 3×3 convolution (``channels`` → ``channels``, two per
    group) in channels-last, in ms; ``as_two_depthwise`` computes the same output as two depthwise
    convolutions (one on the channels, one on their group partners: the tried alternative)."""
    import torch
    import torch.nn.functional as F

    images = torch.randn(batch_size, channels, size, size).contiguous(memory_format=torch.channels_last)
    images.requires_grad_(True)
    weight = torch.randn(channels, 2, 3, 3, requires_grad=True)
    index = torch.arange(channels)
    partner = index ^ 1  # the other channel of the same group

    def run() -> None:
        if as_two_depthwise:
            output = (F.conv2d(images, weight[index, index % 2].unsqueeze(1), padding=1, groups=channels)
                      + F.conv2d(images[:, partner], weight[index, partner % 2].unsqueeze(1), padding=1,
                                 groups=channels))
        else:
            output = F.conv2d(images, weight, padding=1, groups=channels // 2)
        output.sum().backward()

    return 1000 * best_mean_seconds(run, 5, repeats, warmup=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, metavar="FILE", help="also append the summary line to FILE")
    args = parser.parse_args(argv)

    import torch

    from prune_gym.models.mask_offset import MaskedResNet, PruningModel
    from prune_gym.models.resnet_cifar import STAGE_WIDTHS, cifar_resnet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    last = torch.channels_last
    images = torch.randn(args.batch_size, 3, 32, 32).contiguous(memory_format=last)
    labels = torch.randint(0, 10, (args.batch_size,))
    figures: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        masked = MaskedResNet(cifar_resnet("resnet20"), max_iter=10**6).to(memory_format=last)
        plain = cifar_resnet("resnet20").to(memory_format=last)
        figures[f"pruning_s_{precision}"] = seconds_per_iteration(masked, images, labels, precision,
                                                                  args.iterations, args.repeats)
        figures[f"finetune_s_{precision}"] = seconds_per_iteration(plain, images, labels, precision,
                                                                   args.iterations, args.repeats)
        print({key: round(value, 4) for key, value in figures.items() if key.endswith(precision)}, flush=True)
    # One pruning-model per stage, on its convolution's input (the stem's reads the 3-channel image).
    for width, size in zip(STAGE_WIDTHS, (32, 16, 8)):
        model = PruningModel(width, width).to(memory_format=last)
        inputs = torch.randn(args.batch_size, width, size, size).contiguous(memory_format=last)
        figures[f"pruning_model_{width}ch_s"] = seconds_per_iteration(model, inputs, labels, "fp32",
                                                                      args.iterations, args.repeats)
    for kind, two_depthwise in (("grouped", False), ("two_depthwise", True)):
        figures[f"conv128_16x16_{kind}_ms"] = grouped_conv_ms(args.batch_size, 128, 16, two_depthwise, args.repeats)
    figures = {key: round(value, 4) for key, value in figures.items()}
    ratios = {f"pruning_over_finetune_{p}": round(figures[f"pruning_s_{p}"] / figures[f"finetune_s_{p}"], 2)
              for p in ("fp32", "bf16")}
    ratios.update({f"bf16_speedup_{kind}": round(figures[f"{kind}_s_fp32"] / figures[f"{kind}_s_bf16"], 2)
                   for kind in ("pruning", "finetune")})
    thesis_hours = (4000 * figures["pruning_s_fp32"] + 14000 * figures["finetune_s_fp32"]) / 3600
    print_summary({"threads": args.threads, "batch_size": args.batch_size,
                   "cpu_capability": torch.backends.cpu.get_cpu_capability(), **figures, **ratios,
                   "thesis_budget_training_hours_fp32": round(thesis_hours, 2)}, args.json)


if __name__ == "__main__":
    main()
