"""The benchmarks' one timing rule: warm up, then the best of several means (the least disturbed
by other jobs on a shared machine)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_mean_seconds(run: Callable[[], object], calls: int, repeats: int, warmup: int) -> float:
    """``warmup`` calls of ``run``, then the smallest over ``repeats`` rounds of the mean seconds
    per call over ``calls`` calls."""
    for _ in range(warmup):
        run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            run()
        best = min(best, (time.perf_counter() - started) / calls)
    return best
