"""A thin Stable-Baselines3 ``VecEnv`` over a native Gymnasium ``VectorEnv``.

SB3 algorithms train directly on the batched environments (no Python loop over single envs):
this adapter only translates conventions — Gymnasium's ``(terminated, truncated)`` and dict-of-
arrays ``info`` into SB3's ``dones`` and list of per-env dicts with ``terminal_observation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

# Methods of the native vector env that answer with one row per sub-environment.
BATCHED_METHODS = ("action_masks",)


def _unbatch_info(info: dict[str, Any], index: int) -> dict[str, Any]:
    """The entries of a Gymnasium vector ``info`` that belong to sub-env ``index``."""
    single = {}
    for key, value in info.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        mask = info.get(f"_{key}")
        if mask is None or mask[index]:
            item = value[index]
            single[key] = item.item() if isinstance(item, np.generic) else item
    return single


class SB3VecEnvAdapter(VecEnv):
    """Expose a native ``VectorEnv`` with same-step autoreset as an SB3 ``VecEnv``."""

    def __init__(self, venv: VectorEnv):
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(f"SB3VecEnvAdapter needs a VectorEnv with AutoresetMode.SAME_STEP, got {mode!r}.")
        self.venv = venv
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self):
        seeds = None if all(seed is None for seed in self._seeds) else list(self._seeds)
        obs, info = self.venv.reset(seed=seeds)
        self.reset_infos = [_unbatch_info(info, index) for index in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos = []
        for index in range(self.num_envs):
            if dones[index]:
                single = _unbatch_info(info["final_info"], index)
                single["terminal_observation"] = info["final_obs"][index]
            else:
                single = _unbatch_info(info, index)
            single["TimeLimit.truncated"] = bool(truncated[index] and not terminated[index])
            infos.append(single)
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def _indices(self, indices: VecEnvIndices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        # The sub-environments share one batched core, so a method runs once for all of them; a
        # batched method's rows are the sub-environments' own answers (MaskablePPO stacks them).
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        if method_name in BATCHED_METHODS:
            return [result[index] for index in self._indices(indices)]
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]
