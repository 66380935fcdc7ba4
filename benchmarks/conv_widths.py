"""Batch-1 time of one 3×3 convolution (C → C channels) against its channel count, per layout.

    python benchmarks/conv_widths.py --threads 1 --json docs/bench/conv-widths.jsonl

Why it exists: a pruned CIFAR ResNet keeps whatever channel counts its masks chose (11, 13, 15,
...), and oneDNN's channels-last kernels are fastest on counts that fill its vector blocks, so a
narrower convolution can take longer than the full-width one. This prints, for each ResNet stage's
resolution (32×32 at 16 channels, 16×16 at 32, 8×8 at 64) and a range of narrower counts, the
best of ``--repeats`` timings of ``--calls`` calls, in channels-last and NCHW, beside the MACs.
It is the evidence for :func:`~prune_gym.pruning.resnet_pruning.pad_channels`. Figures only:
nothing is asserted.
"""

from __future__ import annotations

import argparse

from summary_line import print_summary
from timing import best_mean_seconds

# (resolution, full width) of the three stages of a CIFAR ResNet.
STAGES = ((32, 16), (16, 32), (8, 64))


def conv_microseconds(channels: int, size: int, channels_last: bool, calls: int, repeats: int) -> float:
    import torch

    conv = torch.nn.Conv2d(channels, channels, 3, 1, 1).eval()
    image = torch.randn(1, channels, size, size)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return 1e6 * best_mean_seconds(lambda: conv(image), calls, repeats, warmup=20)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, metavar="FILE", help="also append the summary line to FILE")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for size, full in STAGES:
        for channels in range(full // 2, full + 1, max(1, full // 16)):
            row = {"size": size, "channels": channels, "macs": channels * channels * 9 * size * size}
            for layout, channels_last in (("channels_last_us", True), ("nchw_us", False)):
                row[layout] = round(conv_microseconds(channels, size, channels_last, args.calls, args.repeats), 1)
            print(row, flush=True)
            rows.append(row)
    print_summary({"threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                   "rows": rows}, args.json)


if __name__ == "__main__":
    main()
