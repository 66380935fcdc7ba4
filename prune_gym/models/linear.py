"""A linear layer without autograd through oneDNN, for the batched RNP decision network.

Why hand-written: torch's CPU build sends ``F.linear`` to MKL's sgemm, which on this project's AMD
EPYC CPU (one thread) runs the decision network's products at half the rate of oneDNN's
inner-product kernel — at 256 rows of 128 by 128×384 (a GRU gate product), 240 µs against 116 µs;
at 16 rows or fewer MKL is faster (4 against 14 µs at one row). ``python
benchmarks/batched_kernels.py`` prints both. torch exposes the oneDNN kernel only as
``torch.ops.mkldnn._linear_pointwise`` (what torch.compile's CPU backend emits), so every call
falls back to ``F.linear`` where that op is missing, with autograd, off the CPU, or below
:data:`ONEDNN_MIN_ROWS` rows. The products are the same up to float summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Rows from which oneDNN's kernel is faster (measured crossover: 16–64 rows; see module docstring).
ONEDNN_MIN_ROWS = 32

try:
    _ONEDNN_LINEAR = torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
except (AttributeError, RuntimeError):  # a torch build without the op
    _ONEDNN_LINEAR = None


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for a 2-D ``x``, through oneDNN when it is the faster kernel."""
    if (_ONEDNN_LINEAR is None or x.dim() != 2 or x.shape[0] < ONEDNN_MIN_ROWS or torch.is_grad_enabled()
            or x.device.type != "cpu" or x.dtype != torch.float32):
        return F.linear(x, weight, bias)
    return _ONEDNN_LINEAR(x.contiguous(), weight, bias, "none", [], "")
