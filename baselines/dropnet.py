"""DropNet's Algorithm 1 (Tan & Motani, ICML 2020) as scripted policies, one per metric.

Each policy applies its rule (``min``, ``max``, ``random``, ``min_layer``, ``max_layer``,
``random_layer``; see :mod:`prune_gym.pruning.masks`) at every cycle; the environment ends the
episode when validation accuracy falls below κ times the unpruned network's. The DropNet
runner of ``prune-gym compare`` then finishes Algorithm 1: it retrains the last architecture that
met the κ criterion from θ0 and reports that network as the run's final result.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from prune_gym.baselines.registry import register_policy, register_runner
from prune_gym.policies import Policy, ScriptedPolicy, make_env, play_episode
from prune_gym.results import result_row

_DESCRIPTIONS = {
    "min": "drop the p lowest-scoring units of all layers ranked together, every cycle (DropNet's minimum)",
    "max": "drop the p highest-scoring units of all layers ranked together, every cycle",
    "random": "drop p of all remaining units chosen uniformly at random, every cycle",
    "min_layer": "drop the p lowest-scoring units of every layer, every cycle (DropNet's layer-wise minimum)",
    "max_layer": "drop the p highest-scoring units of every layer, every cycle",
    "random_layer": "drop p of every layer's remaining units chosen uniformly at random, every cycle",
}


def _rule_policy(rule: str):
    def make(env: gym.Env) -> Policy:
        from prune_gym.envs.dropnet import RULE_ACTIONS

        settings = env.unwrapped.settings
        if settings.action_mode != "rule":
            raise ValueError(f"The DropNet policy {rule!r} chooses rules; it needs action_mode='rule', "
                             f"not {settings.action_mode!r}.")
        action = RULE_ACTIONS.index(rule)

        def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
            return action

        return policy

    return make


for _rule, _description in _DESCRIPTIONS.items():
    register_policy("DropNet", _rule, _description)(_rule_policy(_rule))


@register_runner("DropNet")
def run_dropnet(env_id: str, policy: ScriptedPolicy, seed: int, env_kwargs: dict[str, Any],
                eval_data: str | None) -> list[dict[str, Any]]:
    """One episode of ``policy``, then DropNet's final step: the last architecture that met the
    κ criterion (the one before a violating drop, else the one the episode ended with) is
    retrained from θ0; that network is the run's ``final`` row."""
    env = make_env(env_id, env_kwargs, eval_data)
    before: list[list[np.ndarray]] = []
    try:
        rows = play_episode(env, policy, seed, before_action=lambda e: before.append(e.unwrapped.keep_masks))
        dropnet = env.unwrapped
        last = rows[-1]
        violated = not dropnet.meets_kappa(last["val_accuracy"])
        keep = before[-1] if violated and before else dropnet.keep_masks
        cycle = last["cycle"] - 1 if violated else last["cycle"]
        started = time.perf_counter()
        info = dropnet.retrain_from_init(keep)
        retrain_s = time.perf_counter() - started
        final_row = result_row(policy.name, seed, info, cycle=cycle, final=True, episode_return=last["episode_return"],
                               step_s=retrain_s, wall_s=last["wall_s"] + retrain_s)
    finally:
        env.close()
    return [*rows, final_row]
