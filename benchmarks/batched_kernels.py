"""The three kernel choices behind the batched RNP runtime's throughput, each against torch's default.

    python benchmarks/batched_kernels.py [--threads 1]
    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000 python benchmarks/batched_kernels.py

1. The stem (conv 3 → 32 channels, 3×3, 32×32, then 2×2 max-pool and ReLU; 256 images,
   channels_last) in one call
   against row chunks whose outputs stay within :data:`prune_gym.pruning.runtime.CONV_CHUNK_BYTES`
   (the runtime's choice), and a bare 33.5 MB allocation filled once: with glibc's default malloc
   that block comes from fresh kernel pages on every call; with the thresholds raised (second
   command) it does not.
2. A decision-network product (rows × 128 by 128 × 384, a GRU gate) through ``F.linear`` (MKL's
   sgemm) against :func:`prune_gym.models.linear.batched_linear` (oneDNN from 32 rows).
3. ``torch.tanh`` against 2·σ(2x) − 1 on a 256 × 128 gate (:func:`gru_cell_batched`'s form).

Prints milliseconds (or microseconds) per call and the ratio. Figures only: nothing is asserted;
the machine's other load moves them, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from prune_gym.models.linear import batched_linear
from prune_gym.models.pooling import max_pool_2x2_channels_last
from prune_gym.pruning.runtime import conv_rows_per_chunk


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    for _ in range(3):
        run()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return sorted(timings)[len(timings) // 2]


def stem_convolution(repeats: int) -> None:
    images = torch.randn(256, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(32, 3, 3, 3).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(32)
    rows = conv_rows_per_chunk(32 * 32 * 32 * 4)

    def stem(x: torch.Tensor) -> torch.Tensor:  # the runtime's conv → 2×2 max-pool → ReLU
        return F.relu_(max_pool_2x2_channels_last(F.conv2d(x, weight, bias, padding=1)))

    whole = median_seconds(lambda: stem(images), repeats)
    chunked = median_seconds(lambda: torch.cat([stem(images[start: start + rows]) for start in range(0, 256, rows)]),
                             repeats)
    allocation = median_seconds(lambda: torch.empty(256, 32, 32, 32).fill_(1.0), repeats)
    print(f"stem (conv, pool, ReLU), 256 images: one call {1e3 * whole:6.2f} ms, chunks of {rows} "
          f"{1e3 * chunked:6.2f} ms ({whole / chunked:.1f}× faster); a 33.5 MB allocation filled once: "
          f"{1e3 * allocation:6.2f} ms")


def decision_products(repeats: int) -> None:
    weight, bias = torch.randn(384, 128), torch.randn(384)
    for rows in (1, 16, 32, 64, 256, 1024):
        x = torch.randn(rows, 128)
        blas = median_seconds(lambda x=x: F.linear(x, weight, bias), repeats * 20)
        chosen = median_seconds(lambda x=x: batched_linear(x, weight, bias), repeats * 20)
        print(f"linear {rows:4d} × 128 by 128 × 384: F.linear {1e6 * blas:7.1f} µs, batched_linear "
              f"{1e6 * chosen:7.1f} µs ({blas / chosen:.2f}×)")


def tanh_forms(repeats: int) -> None:
    gate = torch.randn(256, 384)[:, 256:]  # the candidate gate: a column slice, as in the GRU cell
    direct = median_seconds(lambda: torch.tanh(gate), repeats * 20)
    via_sigmoid = median_seconds(lambda: torch.sigmoid(gate * 2.0).mul_(2.0).sub_(1.0), repeats * 20)
    error = (torch.sigmoid(gate * 2.0) * 2.0 - 1.0 - torch.tanh(gate)).abs().max().item()
    print(f"tanh of a 256 × 128 gate: torch.tanh {1e6 * direct:6.1f} µs, 2·σ(2x) − 1 {1e6 * via_sigmoid:6.1f} µs "
          f"({direct / via_sigmoid:.1f}×; largest difference {error:.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per figure (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.inference_mode():
        stem_convolution(args.repeats)
        decision_products(args.repeats)
        tanh_forms(args.repeats)


if __name__ == "__main__":
    main()
