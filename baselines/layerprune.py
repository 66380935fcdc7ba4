"""Scripted policies of the LayerPrune family (``policy(obs, info) -> action``).

* ``alpha-threshold`` — the method's own rule: after each epoch remove every layer whose α is
  below ``ALPHA_THRESHOLD`` (0.01). The environment removes one layer per step, so when several
  are below the threshold at once the lowest α goes first and the others follow at the next
  steps. The freezing schedule after a removal is the environment's (``freeze_epochs``, default 1).
* ``never-remove`` — keep all layers: the unpruned reference trained with the same budget.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from baselines.registry import Policy, register_policy

ALPHA_THRESHOLD = 0.01


def threshold_action(obs: np.ndarray, max_layers: int, threshold: float = ALPHA_THRESHOLD) -> int:
    """``1 + l`` for the alive layer ``l`` with the lowest α below ``threshold``; 0 if there is none."""
    alive, alphas = obs[:max_layers] > 0.5, obs[max_layers:2 * max_layers]
    candidates = [layer for layer in range(max_layers) if alive[layer] and alphas[layer] < threshold]
    if not candidates:
        return 0
    return 1 + min(candidates, key=lambda layer: alphas[layer])


@register_policy("LayerPrune", "alpha-threshold",
                 f"remove a layer once its α < {ALPHA_THRESHOLD} (the method's rule; lowest α first)")
def make_alpha_threshold(env: gym.Env) -> Policy:
    max_layers = env.unwrapped.max_layers

    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        return threshold_action(obs, max_layers)

    return policy


@register_policy("LayerPrune", "never-remove", "keep every layer (unpruned network, same training budget)")
def make_never_remove(env: gym.Env) -> Policy:
    return lambda obs, info: 0
