"""2×2 max-pooling on a CPU: the layouts and kernels :mod:`prune_gym.models.pooling` chooses between.

    python benchmarks/maxpool_layout.py [--threads 1]

1. An NCHW map: torch's NCHW kernel against a round trip through channels_last (what
   :func:`prune_gym.models.pooling.max_pool_2x2` does without autograd), forward and
   forward+backward, for DropNet's shapes (a training batch of the Conv64 layer on MNIST, the
   second conv, an evaluation chunk).
2. A channels_last map without autograd: torch's channels_last kernel against two pairwise maxima
   (:func:`prune_gym.models.pooling.max_pool_2x2_channels_last`), for the batched RNP runtime's
   shapes (256 stem outputs of cnn4/cnn6 at 32×32, a decided layer at 16×16) and one image (where
   the function keeps torch's kernel).

Prints milliseconds per call and the ratio. Figures only: nothing is asserted; the machine's other
load moves them.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from prune_gym.models.pooling import max_pool_2x2_channels_last

SHAPES = ((32, 64, 28, 28), (64, 64, 28, 28), (64, 32, 14, 14), (500, 64, 28, 28))
CHANNELS_LAST_SHAPES = ((256, 32, 32, 32), (256, 64, 16, 16), (1, 32, 32, 32))


def nchw(x: torch.Tensor) -> torch.Tensor:
    return F.relu(F.max_pool2d(x, 2))


def via_channels_last(x: torch.Tensor) -> torch.Tensor:
    return F.relu(F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous())


def channels_last_kernel(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2)


def milliseconds(pool, x: torch.Tensor, backward: bool, repeats: int = 10) -> float:
    x = x.clone().requires_grad_(backward)
    for index in range(repeats + 2):  # two warm-up calls
        if index == 2:
            start = time.perf_counter()
        y = pool(x)
        if backward:
            y.square().sum().backward()
    return (time.perf_counter() - start) / repeats * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    for shape in SHAPES:
        x = torch.randn(*shape)
        for backward in (False, True):
            plain, round_trip = milliseconds(nchw, x, backward), milliseconds(via_channels_last, x, backward)
            print(f"{'×'.join(map(str, shape)):>14} {'fwd+bwd' if backward else 'fwd':>7}: NCHW {plain:7.2f} ms, "
                  f"via channels_last {round_trip:7.2f} ms, {plain / round_trip:4.1f}× faster")
    for shape in CHANNELS_LAST_SHAPES:
        x = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            kernel = milliseconds(channels_last_kernel, x, False, repeats=50)
            chosen = milliseconds(max_pool_2x2_channels_last, x, False, repeats=50)
        print(f"{'×'.join(map(str, shape)):>14} channels_last fwd: torch kernel {kernel:7.3f} ms, "
              f"max_pool_2x2_channels_last {chosen:7.3f} ms, {kernel / chosen:4.1f}× faster")


if __name__ == "__main__":
    main()
