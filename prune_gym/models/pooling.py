"""2×2 max-pooling without autograd, in the layout that is fast on a CPU.

Max-pooling picks values, so every variant here returns the same bits as ``F.max_pool2d(x, 2)``;
they differ only in speed, measured by ``benchmarks/maxpool_layout.py``. With autograd they all
fall back to ``F.max_pool2d`` (its backward routes each gradient to the one picked input, which
``torch.maximum``'s would not on ties).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Below this many elements (e.g. one image's feature map) the single pooling kernel is as fast or
# faster than two elementwise maxima: measured at batch 1, 7–24 µs either way.
PAIRWISE_MIN_ELEMENTS = 1 << 17


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` of an NCHW map; without autograd computed in channels_last and
    returned NCHW.

    Why: on this project's CPU (torch 2.14, AVX2) the NCHW max-pooling kernel is 2–6× slower
    forward than the two layout copies plus the channels_last kernel, but with its backward the
    round trip gains nothing (`benchmarks/maxpool_layout.py`); DropNet's evaluation passes and
    activation metric run without autograd and were half of a conv step. Max-pooling picks values,
    so the result is the same bits either way; the convolutions stay NCHW, so every DropNet figure
    is unchanged."""
    if torch.is_grad_enabled():
        return F.max_pool2d(x, 2)
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


def max_pool_2x2_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` of a channels_last map; without autograd, on a large map, as two
    pairwise maxima of strided views (rows, then columns), which stays channels_last.

    Why: torch's channels_last max-pooling kernel runs far below memory speed on batched CPU maps
    (256 stem outputs of cnn4/cnn6, 256×32×32×32: 11.6 ms against 5.0 ms pairwise in one run of
    ``benchmarks/maxpool_layout.py`` on one loaded thread), and it was over a quarter of the
    batched RNP forward under a narrow policy (torch.profiler, cnn6). Odd heights and widths drop
    their last row or column, as ``F.max_pool2d`` does."""
    if (torch.is_grad_enabled() or x.numel() < PAIRWISE_MIN_ELEMENTS
            or not x.is_contiguous(memory_format=torch.channels_last)):
        return F.max_pool2d(x, 2)
    height, width = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
    rows = torch.maximum(x[:, :, 0:height:2, :width], x[:, :, 1:height:2, :width])
    return torch.maximum(rows[:, :, :, 0::2], rows[:, :, :, 1::2])
