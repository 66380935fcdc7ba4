"""Scripted schedules of the AlphaBlend family (``policy(obs, info) -> action``).

Both gradual schedules hand over (α = 0) after ``H = floor(2/3 · budget_steps)`` blended steps, so
the last third of the budget fine-tunes the pruned network; the one-shot schedule hands over at
once and fine-tunes with the whole budget. Every schedule trains for the same number of steps.

* ``exponential`` — the report's schedule: α is multiplied by the env's ``small_step`` (0.95, a
  decay of 5 % per step) before every step, ``α_t = 0.95^t``, then 0 after ``H`` steps.
* ``linear`` — ``α_t = 1 − t/H``; the action set only multiplies α, so each step takes the action
  (hold, small, medium, large) whose α is nearest the linear target, and 0 after ``H`` steps.
* ``one-shot`` — α = 0 at the first step, then fine-tuning for the whole budget.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from prune_gym.baselines.registry import register_policy
from prune_gym.envs.alphablend import FINISH, HOLD, SMALL
from prune_gym.policies import Policy


def handover_step(budget_steps: int) -> int:
    """Blended steps of the gradual schedules before α = 0 (at least 1)."""
    return max(1, (2 * budget_steps) // 3)


def nearest_action(alpha: float, target: float, factors: dict[int, float]) -> int:
    """The action among hold and the multiplicative steps whose new α is nearest ``target``."""
    options = {HOLD: alpha, **{action: alpha * factor for action, factor in factors.items()}}
    return min(options, key=lambda action: abs(options[action] - target))


@register_policy("AlphaBlend", "exponential", "α ← 0.95·α every step (report's schedule), α = 0 after 2/3 "
                 "of the budget, then fine-tune")
def make_exponential(env: gym.Env) -> Policy:
    handover = handover_step(env.unwrapped.settings.budget_steps)

    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        return FINISH if info["steps_used"] >= handover else SMALL

    return policy


@register_policy("AlphaBlend", "linear", "α = 1 − t/H (nearest available step), α = 0 after H = 2/3 of the budget, "
                 "then fine-tune")
def make_linear(env: gym.Env) -> Policy:
    unwrapped = env.unwrapped
    handover = handover_step(unwrapped.settings.budget_steps)

    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        spent = info["steps_used"]
        if spent >= handover:
            return FINISH
        return nearest_action(info["alpha"], 1.0 - (spent + 1) / handover, unwrapped.step_factors)

    return policy


@register_policy("AlphaBlend", "one-shot", "α = 0 at once, then fine-tune the pruned network with the whole budget")
def make_one_shot(env: gym.Env) -> Policy:
    return lambda obs, info: FINISH
