"""The scripted-policy protocol and the one episode loop, shared by baselines, agents and ``compare``.

A policy has the same interface in every family: ``policy(obs, info) -> action``, where ``obs``
and ``info`` are what the environment last returned (from ``reset`` or ``step``). A
:class:`ScriptedPolicy` builds a fresh policy for one episode from the unwrapped environment, so a
policy may read the env's settings (``k``, the layer count) but keeps no state across episodes.
Trained agents are wrapped in the same class, so scripted rules and agents run through the same
:func:`play_episode`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from prune_gym.results import result_row

Policy = Callable[[np.ndarray, dict[str, Any]], Any]
PolicyFactory = Callable[[gym.Env], Policy]


# A trained agent plays in a comparison as "<algo>:<run directory's name>"; scripted policy names
# never hold the separator, so a comparison's rows tell agents from rules by name alone.
AGENT_SEPARATOR = ":"


def agent_policy_name(algo: str, run_name: str) -> str:
    """The policy name of a trained run in ``prune-gym compare --agents`` (``"rnp-dqn:dqn-s0"``)."""
    return f"{algo}{AGENT_SEPARATOR}{run_name}"


def is_agent_policy(name: str) -> bool:
    """Whether a comparison's policy ``name`` is a trained agent's (see :func:`agent_policy_name`)."""
    return AGENT_SEPARATOR in name


@dataclass(frozen=True)
class ScriptedPolicy:
    """One policy: ``make(env)`` returns a fresh ``policy(obs, info) -> action``."""

    family: str
    name: str
    description: str
    make: PolicyFactory


class BatchPolicy:
    """``policy(obs, info)`` for one observation and ``decide_batch(obs)`` for many (RNP runners)."""

    def __init__(self, decide_batch: Callable[[np.ndarray], np.ndarray]):
        self.decide_batch = decide_batch

    def __call__(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return int(self.decide_batch(np.asarray(obs, dtype=np.float32).reshape(1, -1))[0])


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, eval_data: str | None = None) -> gym.Env:
    """``gym.make(env_id, eval_data=eval_data, **env_kwargs)`` (``eval_data`` only when given)."""
    import prune_gym  # noqa: F401 - registers the ids

    kwargs = dict(env_kwargs or {})
    if eval_data is not None:
        kwargs["eval_data"] = str(eval_data)
    return gym.make(env_id, **kwargs)


def play_episode(
    env: gym.Env, policy: ScriptedPolicy, seed: int, before_action: Callable[[gym.Env], None] | None = None
) -> list[dict[str, Any]]:
    """Play one episode of ``policy`` from ``env.reset(seed=seed)``: one result row for the reset
    state (cycle 0) and one per step (``final`` not set). ``before_action(env)`` runs before each
    action is chosen (a runner may record the env's state there)."""
    started = time.perf_counter()
    obs, info = env.reset(seed=seed)
    act = policy.make(env.unwrapped)
    rows = [result_row(policy.name, seed, info, cycle=0, episode_return=0.0,
                       step_s=time.perf_counter() - started, wall_s=time.perf_counter() - started)]
    total, steps, done = 0.0, 0, False
    while not done:
        if before_action is not None:
            before_action(env)
        step_started = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(act(obs, info))
        total, steps, done = total + float(reward), steps + 1, terminated or truncated
        now = time.perf_counter()
        rows.append(result_row(policy.name, seed, info, cycle=int(info.get("cycle", steps)), episode_return=total,
                               step_s=now - step_started, wall_s=now - started))
    return rows
