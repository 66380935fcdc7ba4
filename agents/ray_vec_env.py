"""An SB3 ``VecEnv`` whose sub-environments are Ray actors: ``prune-gym train ... --ray [ADDRESS]``.

The training-in-the-loop families (DropNet, LayerPrune, AlphaBlend) train a network inside every
step, so one step costs seconds and the agent's own update is cheap beside it. :class:`RayVecEnv`
puts each sub-environment in its own Ray actor — a process on any node of the cluster — made with
``gym.make(env_id, **env_kwargs)``: :meth:`RayVecEnv.step_async` sends the actions to every actor at
once and :meth:`RayVecEnv.step_wait` gathers the results with ``ray.get``, so a vector step costs
one env step, not ``num_envs``.

It behaves as SB3's ``SubprocVecEnv`` does (same messages, same semantics): a finished episode's
last observation goes into ``info["terminal_observation"]`` and the actor resets at once;
``seed(s)`` seeds the next reset with ``s + index``; ``env_method`` / ``get_attr`` / ``set_attr`` /
``env_is_wrapped`` reach the env in the actor, so sb3-contrib's ``MaskablePPO`` reads
``action_masks()`` through ``env_method`` as it does on a ``DummyVecEnv``. With the same seeds it
yields exactly the observations, rewards and infos of a ``SubprocVecEnv`` and a ``DummyVecEnv``
(tested; rewards are float64 as ``SubprocVecEnv`` gives them, where ``DummyVecEnv`` rounds them to
float32): each actor runs torch with the thread count of the process that made it (see
:mod:`prune_gym.ray_support`).

Ray is imported only when a :class:`RayVecEnv` is built; without it that is a one-line error
saying how to install it. The caller owns the Ray connection (``ray_support.ray_session``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

from prune_gym.ray_support import prepare_process, require_ray, torch_threads

logger = logging.getLogger("prune_gym")


class EnvWorker:
    """One sub-environment, living in a Ray actor; its methods are the messages of SB3's subprocess worker."""

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], threads: int):
        prepare_process(threads)
        self.env = gym.make(env_id, **env_kwargs)

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def reset(self, seed: int | None, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(seed=seed, **({"options": options} if options else {}))

    def step(self, action: Any) -> tuple[Any, float, bool, dict[str, Any], dict[str, Any] | None]:
        """SB3's step: ``(obs, reward, done, info, reset_info)``, resetting at once when the episode ends."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info = None
        if done:
            info["terminal_observation"] = observation
            observation, reset_info = self.env.reset()
        return observation, reward, done, info, reset_info

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def set_attr(self, name: str, value: Any) -> None:
        self.env.set_wrapper_attr(name, value)

    def env_method(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class: type[gym.Wrapper]) -> bool:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class RayVecEnv(VecEnv):
    """``num_envs`` copies of ``gym.make(env_id, **env_kwargs)``, one per Ray actor, as an SB3 ``VecEnv``.

    Args:
        env_id: a registered id (prune-gym's or any Gymnasium id importable on the workers).
        num_envs: sub-environments, i.e. actors; each reserves ``num_cpus`` of the cluster's CPUs.
        env_kwargs: keyword arguments of every ``gym.make``.
        num_cpus: CPUs Ray reserves per actor (1: one env step per core; 0 for envs stepped only while
            others wait, as the evaluation env of a training run is).
        threads: torch threads in each actor; default this process's count, which keeps results
            identical to an in-process run.
    """

    def __init__(self, env_id: str, num_envs: int, env_kwargs: dict[str, Any] | None = None, num_cpus: float = 1,
                 threads: int | None = None):
        if num_envs < 1:
            raise ValueError(f"RayVecEnv needs num_envs ≥ 1, got {num_envs}.")
        ray = require_ray()
        if not ray.is_initialized():
            raise RuntimeError("RayVecEnv needs a Ray connection: call ray.init(...) or use "
                               "prune_gym.ray_support.ray_session(...) around it.")
        cpus = ray.cluster_resources().get("CPU", 0)
        if num_envs * num_cpus > cpus:  # an actor waits until CPUs free up (or an autoscaler adds nodes)
            logger.warning("%d Ray actors of %g CPUs each need %g CPUs, the Ray instance has %g: some will wait "
                           "for others to end.", num_envs, num_cpus, num_envs * num_cpus, cpus)
        self.ray = ray
        actor = ray.remote(num_cpus=num_cpus)(EnvWorker)
        threads = torch_threads() if threads is None else threads
        self.workers = [actor.remote(env_id, dict(env_kwargs or {}), threads) for _ in range(num_envs)]
        self.pending: list[Any] | None = None
        self.closed = False
        observation_space, action_space = ray.get(self.workers[0].spaces.remote())
        super().__init__(num_envs, observation_space, action_space)

    def _targets(self, indices: VecEnvIndices) -> list[Any]:
        return [self.workers[index] for index in self._get_indices(indices)]

    def reset(self) -> VecEnvObs:
        results = self.ray.get([worker.reset.remote(self._seeds[index], self._options[index])
                                for index, worker in enumerate(self.workers)])
        observations, self.reset_infos = zip(*results)
        self.reset_infos = list(self.reset_infos)
        # Seeds and options are used once, as in SB3's own VecEnvs.
        self._reset_seeds()
        self._reset_options()
        return _stack_obs(observations, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        self.pending = [worker.step.remote(action) for worker, action in zip(self.workers, actions)]

    def step_wait(self) -> VecEnvStepReturn:
        if self.pending is None:
            raise RuntimeError("step_wait() without step_async(): call step(actions) instead.")
        results, self.pending = self.ray.get(self.pending), None
        observations, rewards, dones, infos, reset_infos = zip(*results)
        # A sub-env that did not reset this step keeps the reset info it had.
        self.reset_infos = [new if new is not None else old for new, old in zip(reset_infos, self.reset_infos)]
        return _stack_obs(observations, self.observation_space), np.stack(rewards), np.stack(dones), list(infos)

    def close(self) -> None:
        if self.closed:
            return
        if self.pending is not None:
            self.ray.get(self.pending)
        self.ray.get([worker.close.remote() for worker in self.workers])
        for worker in self.workers:
            self.ray.kill(worker)
        self.closed = True

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self.ray.get([worker.render.remote() for worker in self.workers])

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self.ray.get([worker.get_attr.remote(attr_name) for worker in self._targets(indices)])

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self.ray.get([worker.set_attr.remote(attr_name, value) for worker in self._targets(indices)])

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self.ray.get([worker.env_method.remote(method_name, method_args, method_kwargs)
                             for worker in self._targets(indices)])

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self.ray.get([worker.is_wrapped.remote(wrapper_class) for worker in self._targets(indices)])
