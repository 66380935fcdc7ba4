"""Result rows: the one record every comparison, sweep and agent evaluation writes.

A row is one state of one run (a policy for one seed): the reset state is ``cycle`` 0, then one
row per step, and a last row marked ``final``. :data:`COLUMNS` are the figures every family can
report, read from the env's ``info`` under the contract's accounting names; a family's runner may
add columns of its own (they are kept in memory and ignored by the CSV).
"""

from __future__ import annotations

from typing import Any

import numpy as np

COLUMNS = ("policy", "seed", "cycle", "final", "test_accuracy", "val_accuracy", "cross_entropy", "macs", "macs_full",
           "macs_fraction", "units_kept_fraction", "params", "params_full", "episode_return", "step_s", "wall_s")

# The contract's accounting keys a row copies from ``info`` (see prune_gym.envs.base.ACCOUNTING_KEYS).
_FROM_INFO = ("test_accuracy", "val_accuracy", "cross_entropy", "macs", "macs_full", "params", "params_full",
              "units_kept_fraction")


def result_row(policy: str, seed: int, info: dict[str, Any], *, cycle: int, final: bool = False,
               episode_return: float | None = None, step_s: float | None = None,
               wall_s: float | None = None) -> dict[str, Any]:
    """One row of :data:`COLUMNS` from an env's ``info`` (the contract's accounting names).

    ``cycle`` is the step index of the state the row describes (0 = the reset state);
    ``macs_fraction`` is ``macs / macs_full``; ``units_kept_fraction`` is the env's own where it
    reports one (DropNet: hidden units kept), else empty."""
    macs, macs_full = info.get("macs"), info.get("macs_full")
    row = {"policy": policy, "seed": seed, "cycle": cycle, "final": final,
           "macs_fraction": macs / macs_full if macs is not None and macs_full else None,
           "episode_return": episode_return, "step_s": step_s, "wall_s": wall_s}
    for name in _FROM_INFO:
        row[name] = info.get(name)
    return row


def column_values(rows: list[dict[str, Any]], name: str) -> np.ndarray:
    """The non-missing values of column ``name`` as float64."""
    return np.array([float(row[name]) for row in rows if row.get(name) is not None], dtype=np.float64)


def mean_std(values: np.ndarray, scale: float = 1.0, digits: int = 2) -> str:
    """``"mean ± sample std"`` of ``values × scale`` (just the mean for one value, ``–`` for none)."""
    if len(values) == 0:
        return "–"
    mean = f"{scale * values.mean():.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ± {scale * values.std(ddof=1):.{digits}f}"
