"""Scripted policies of the MaskOffset family and the static criteria at the same FLOPs.

Offset policies (``policy(obs, info) -> action``; they work in either action mode):

* ``fixed-offset`` — the thesis's run: ``interacting = 0`` throughout (action 0 / hold).
* ``linear-to-target`` — raise ``interacting`` steadily to meet ``target_flops`` (0.5 when the env
  has none): each step moves it towards the value at which the schedule's end would be reached
  when the FLOPs kept equal the target, ``(FLOPs kept − target) · max_iter`` (clipped to one action).

Static criteria (``l1``, ``l2``, ``fpgm``, ``hrank``, ``bn-scale``, ``taylor``, ``random``;
:data:`~prune_gym.pruning.importance.FILTER_CRITERIA`): the pretrained network pruned in one shot
by the criterion, residual-tied channels grouped, to the **FLOPs of the ``fixed-offset`` run of
the same seed** (run first, in this process, when not already done), then fine-tuned with the
env's fine-tuning budget (:meth:`~prune_gym.envs.maskoffset.MaskOffsetEnv.prune_statically`).
The family's runner writes two rows for them: the reset state and the final pruned network.

Control: ``finetune-only`` — the pretrained network, not pruned, fine-tuned with the same budget
(:meth:`~prune_gym.envs.maskoffset.MaskOffsetEnv.finetune_unpruned`): what a long fine-tune alone
gives the ~50-epoch backbone, so a pruned row is read against it as well as against the pretrained
network. Two rows, as for the static criteria.
"""

from __future__ import annotations

import json
from typing import Any

import gymnasium as gym
import numpy as np

from prune_gym.baselines.registry import get_policy, register_policy, register_runner, register_stored_rows_reader
from prune_gym.envs.maskoffset import HOLD, LOWER, RAISE
from prune_gym.policies import Policy, ScriptedPolicy, make_env, play_episode
from prune_gym.pruning.importance import FILTER_CRITERIA
from prune_gym.results import result_row

DEFAULT_TARGET = 0.5


def _act(env: gym.Env, change: float) -> Any:
    """``change`` (in action units, −1..1) in the env's action mode."""
    if isinstance(env.action_space, gym.spaces.Box):
        return np.array([np.clip(change, -1.0, 1.0)], dtype=np.float32)
    return HOLD if abs(change) < 0.5 else (RAISE if change > 0 else LOWER)


@register_policy("MaskOffset", "fixed-offset", "interacting = 0 throughout (the thesis's pruning run)")
def make_fixed_offset(env: gym.Env) -> Policy:
    return lambda obs, info: _act(env, 0.0)


@register_policy("MaskOffset", "linear-to-target",
                 "raise interacting steadily towards target_flops (0.5 of the FLOPs when the env sets none)")
def make_linear_to_target(env: gym.Env) -> Policy:
    settings = env.settings
    target = DEFAULT_TARGET if settings.target_flops is None else settings.target_flops

    def policy(obs: np.ndarray, info: dict[str, Any]) -> Any:
        kept = info["macs"] / info["macs_full"]
        progress = info["iteration"] / settings.max_iter
        # Still above the target share of FLOPs for this point of the phase: raise interacting.
        expected = 1.0 - (1.0 - target) * min(1.0, progress + settings.iterations_per_step / settings.max_iter)
        return _act(env, (kept - expected) / settings.interacting_step)

    return policy


def _make_static(criterion: str):
    def make(env: gym.Env) -> Policy:
        raise TypeError(f"{criterion} is a static criterion, run by the MaskOffset runner of prune-gym compare.")

    return make


for _criterion in FILTER_CRITERIA:
    register_policy("MaskOffset", _criterion, f"static {_criterion} pruning to the fixed-offset run's FLOPs, "
                    "then the same fine-tuning")(_make_static(_criterion))

FINETUNE_ONLY = "finetune-only"


@register_policy("MaskOffset", FINETUNE_ONLY, "control: the unpruned network fine-tuned with the same budget")
def make_finetune_only(env: gym.Env) -> Policy:
    raise TypeError(f"{FINETUNE_ONLY} is a control without actions, run by the MaskOffset runner of prune-gym compare.")


# (env id, env kwargs, eval data, seed) → the fixed-offset run's rows, so the static criteria of a
# seed prune to its FLOPs without running it again.
_FIXED_OFFSET_RUNS: dict[str, list[dict[str, Any]]] = {}


def _key(env_id: str, env_kwargs: dict[str, Any], eval_data: str | None, seed: int) -> str:
    return json.dumps([env_id, env_kwargs, eval_data, seed], sort_keys=True, default=str)


@register_stored_rows_reader("MaskOffset")
def remember_stored_fixed_offset_runs(rows: list[dict[str, Any]], env_id: str, env_kwargs: dict[str, Any],
                                      eval_data: str | None) -> None:
    """Take the ``fixed-offset`` runs an earlier comparison stored (same env and kwargs: compare
    checks that), so a ``--resume`` that still has static criteria to run reads their FLOPs
    target instead of playing the 8-minute episode again."""
    runs: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        if row["policy"] == "fixed-offset":
            runs.setdefault(int(row["seed"]), []).append(row)
    for seed, run_rows in runs.items():
        finals = [row for row in run_rows if row["final"]]
        if finals:  # the runner reads the last row: the final one
            _FIXED_OFFSET_RUNS.setdefault(_key(env_id, env_kwargs, eval_data, seed),
                                          [*(row for row in run_rows if not row["final"]), finals[-1]])


@register_runner("MaskOffset")
def run_maskoffset(env_id: str, policy: ScriptedPolicy, seed: int, env_kwargs: dict[str, Any],
                   eval_data: str | None) -> list[dict[str, Any]]:
    """One run: an offset policy's episode, a static criterion at the fixed-offset run's FLOPs, or
    the ``finetune-only`` control."""
    key = _key(env_id, env_kwargs, eval_data, seed)
    env = make_env(env_id, env_kwargs, eval_data)
    try:
        if policy.name == FINETUNE_ONLY:
            result = env.unwrapped.finetune_unpruned(seed=seed)
        elif policy.name in FILTER_CRITERIA:
            if key not in _FIXED_OFFSET_RUNS:
                run_maskoffset(env_id, get_policy(env_id, "fixed-offset"), seed, env_kwargs, eval_data)
            target_macs = _FIXED_OFFSET_RUNS[key][-1]["macs"]
            result = env.unwrapped.prune_statically(policy.name, target_macs, seed=seed)
        else:
            rows = play_episode(env, policy, seed)
            rows = [*rows, {**rows[-1], "final": True}]
            if policy.name == "fixed-offset":
                _FIXED_OFFSET_RUNS[key] = rows
            return rows
    finally:
        env.close()
    return [result_row(policy.name, seed, result["reset"], cycle=0),
            result_row(policy.name, seed, result["final"], cycle=1, final=True)]
