"""Which units a pruning step removes: DropNet's six rules over per-layer unit scores.

Masks are lists of boolean numpy arrays, one per maskable layer (``True`` = kept). The rules only
choose; applying a mask to a model is the model's business
(:meth:`prune_gym.models.masked_net.MaskedNet.set_masks`). Every rule removes a fraction of the
units that remain and never empties a layer (at least ``min_units`` stay in each).

- ``min`` / ``max`` / ``random``: rank all remaining units of all layers together by score
  (lowest first, highest first, or in a random order) and drop ``round(fraction · remaining)``.
- ``min_layer`` / ``max_layer`` / ``random_layer``: the same inside each layer separately, so
  every layer loses ``round(fraction · its remaining units)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DROP_RULES = ("min", "max", "random", "min_layer", "max_layer", "random_layer")


def _drop_count(remaining: int, fraction: float) -> int:
    """Units to drop out of ``remaining``: ``round(fraction · remaining)``, at least one."""
    return max(1, int(round(fraction * remaining)))


def _ranking_keys(rule: str, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Keys whose ascending order is the order in which ``rule`` drops units."""
    base = rule.removesuffix("_layer")
    if base == "min":
        return scores
    if base == "max":
        return -scores
    return rng.random(len(scores))


def select_drop(
    rule: str,
    scores: Sequence[np.ndarray],
    keep: Sequence[np.ndarray],
    fraction: float,
    rng: np.random.Generator,
    min_units: int = 1,
) -> list[np.ndarray]:
    """The masks after one drop by ``rule`` (new arrays; ``keep`` is not modified).

    Args:
        rule: one of :data:`DROP_RULES`.
        scores: per layer, one importance score per unit (e.g. mean absolute activation).
        keep: per layer, boolean mask of the units still kept.
        fraction: fraction (0–1] of the remaining units to drop (of all layers, or of each layer
            for the ``_layer`` rules).
        rng: source of randomness for the ``random`` rules (ties of the others break by unit index).
        min_units: units that must stay in every layer; a layer at that size loses nothing.
    """
    if rule not in DROP_RULES:
        raise ValueError(f"Unknown drop rule {rule!r}; expected one of {DROP_RULES}.")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")
    new_keep = [np.array(mask, dtype=bool, copy=True) for mask in keep]
    if rule.endswith("_layer"):
        for layer in range(len(new_keep)):
            new_keep[layer] = drop_in_layer(rule.removesuffix("_layer"), scores[layer], new_keep[layer], fraction,
                                            rng, min_units)
        return new_keep
    # Global ranking: one list of (layer, unit) over all kept units, dropped in key order while
    # no layer falls below min_units.
    layers = np.concatenate([np.full(int(mask.sum()), index) for index, mask in enumerate(new_keep)])
    units = np.concatenate([np.flatnonzero(mask) for mask in new_keep])
    keys = _ranking_keys(rule, np.concatenate([np.asarray(s, dtype=np.float64)[m] for s, m in zip(scores, new_keep)]),
                         rng)
    budget = _drop_count(len(units), fraction)
    remaining = [int(mask.sum()) for mask in new_keep]
    for position in np.argsort(keys, kind="stable"):
        if budget == 0:
            break
        layer = int(layers[position])
        if remaining[layer] > min_units:
            new_keep[layer][units[position]] = False
            remaining[layer] -= 1
            budget -= 1
    return new_keep


def drop_in_layer(
    rule: str, scores: np.ndarray, keep: np.ndarray, fraction: float, rng: np.random.Generator, min_units: int = 1
) -> np.ndarray:
    """``keep`` of one layer after dropping ``round(fraction · remaining)`` of its units by
    ``rule`` (``"min"``, ``"max"`` or ``"random"``), keeping at least ``min_units``."""
    new_keep = np.array(keep, dtype=bool, copy=True)
    kept = np.flatnonzero(new_keep)
    count = min(_drop_count(len(kept), fraction), max(0, len(kept) - min_units))
    if count:
        keys = _ranking_keys(rule, np.asarray(scores, dtype=np.float64)[kept], rng)
        new_keep[kept[np.argsort(keys, kind="stable")[:count]]] = False
    return new_keep


def can_drop(keep: Sequence[np.ndarray], min_units: int = 1) -> list[bool]:
    """Per layer: whether it still has more than ``min_units`` units to lose."""
    return [int(mask.sum()) > min_units for mask in keep]
