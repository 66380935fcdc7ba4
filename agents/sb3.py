"""Stable-Baselines3 runners: DQN, PPO, A2C and sb3-contrib's MaskablePPO (``ppo_mask``) on ``Discrete``
envs, SAC and TD3 on ``Box`` actions.

RNP ids train on the native batched vector env through :class:`~prune_gym.envs.sb3.SB3VecEnvAdapter`
(no Python loop over single envs); every other id on ``n_envs`` single envs: one in this process
(``DummyVecEnv``), several in worker processes (``SubprocVecEnv``), or with ``--ray`` as Ray actors
(:class:`~prune_gym.agents.ray_vec_env.RayVecEnv`, on this machine or a cluster). All are wrapped in
``VecMonitor`` with the env's accounting from ``info`` (MACs, correctness or accuracy), so episode
statistics and tensorboard curves carry them. ``ppo_mask`` reads every sub-env's ``action_masks()``
through ``env_method`` (which each of these ``VecEnv`` classes, and the wrappers over them, forward),
so it samples, is evaluated and acts among the valid actions only. Hyperparameters come from
``agents/hyperparams/<algo>.yml`` (see :func:`prune_gym.agents.runs.load_hyperparams`) and are
checked against the algorithm's constructor (:func:`constructor_kwargs`) before anything is built.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import math
import types
import typing
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from sb3_contrib.common.maskable.utils import is_masking_supported
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import TrainFrequencyUnit
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper, VecMonitor

from prune_gym.agents.dqn_common import HyperparameterError
from prune_gym.progress import progress_counter

logger = logging.getLogger("prune_gym")

SB3_ALGORITHMS: dict[str, type[BaseAlgorithm]] = {
    "dqn": DQN, "ppo": PPO, "ppo_mask": MaskablePPO, "a2c": A2C, "sac": SAC, "td3": TD3,
}
# Which action spaces each algorithm is offered for (PPO/A2C could do Box too, but no prune-gym env needs it).
ACTION_SPACES: dict[str, type[spaces.Space]] = {
    "dqn": spaces.Discrete, "ppo": spaces.Discrete, "ppo_mask": spaces.Discrete, "a2c": spaces.Discrete,
    "sac": spaces.Box, "td3": spaces.Box,
}
# Algorithms that act only among the env's valid actions (its ``action_masks()``): while training, in
# the eval callback and when a trained run acts; they need an env that has ``action_masks()``.
MASKED_ALGORITHMS = ("ppo_mask",)
# Per-episode accounting copied from the final info into the monitor's episode records.
INFO_KEYWORDS = ("macs", "macs_full", "correct", "test_accuracy", "val_accuracy")
# The columns of an SB3 run's metrics.csv: one row per finished episode.
METRICS_COLUMNS = ("timesteps", "return", "length", *INFO_KEYWORDS)

# ----------------------------------------------------------------------------------------------
# Hyperparameters: checked against the algorithm's constructor
# ----------------------------------------------------------------------------------------------

# Keys of the hyperparameter files that prune-gym reads itself; the rest go to the constructor.
RUNNER_KEYS: dict[str, type] = {"n_timesteps": int, "n_envs": int}
# Constructor arguments prune-gym sets itself (the run's seed, directory and quiet logging).
RESERVED_KEYS = ("env", "seed", "tensorboard_log", "verbose", "_init_setup_model")
# Ranges SB3 does not check up front (it fails later, deep inside a rollout buffer or a schedule).
AT_LEAST = {"n_timesteps": 1, "n_envs": 1, "n_steps": 1, "batch_size": 1, "n_epochs": 1, "buffer_size": 1,
            "target_update_interval": 1, "policy_delay": 1, "learning_starts": 0}
POSITIVE = ("learning_rate", "max_grad_norm", "clip_range")
NON_NEGATIVE = ("ent_coef", "vf_coef")
FRACTIONS = ("gamma", "gae_lambda", "tau", "exploration_fraction", "exploration_initial_eps", "exploration_final_eps")


def constructor_kwargs(algo: str, hyperparams: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments for ``algo``'s constructor from a run's hyperparameters (without the
    runner's own ``n_timesteps``/``n_envs``); an unknown key, a value of the wrong type or out of
    range is a :class:`HyperparameterError` naming it."""
    parameters = inspect.signature(SB3_ALGORITHMS[algo].__init__).parameters
    accepted = {name: parameter.annotation for name, parameter in parameters.items()
                if name not in ("self", *RESERVED_KEYS)}
    reserved = sorted(set(hyperparams) & set(RESERVED_KEYS))
    if reserved:
        raise HyperparameterError(f"{algo} hyperparameters {reserved} are set by prune-gym (the seed with "
                                  "--seed, logging into the run directory); remove them.")
    unknown = sorted(set(hyperparams) - set(accepted) - set(RUNNER_KEYS))
    if unknown:
        raise HyperparameterError(f"Unknown {algo} hyperparameters {unknown}; {SB3_ALGORITHMS[algo].__name__} "
                                  f"takes {sorted(accepted)}, and prune-gym reads {sorted(RUNNER_KEYS)}.")
    for name, value in hyperparams.items():
        expected = RUNNER_KEYS.get(name, accepted.get(name))
        if not value_fits(value, expected):
            raise HyperparameterError(f"{algo} hyperparameter {name}={value!r} must be {describe(expected)}; "
                                      f"set it with --hyperparams {name}=VALUE.")
        check_range(algo, name, value)
    return {name: as_constructor_value(value, accepted[name]) for name, value in hyperparams.items()
            if name not in RUNNER_KEYS}


def check_range(algo: str, name: str, value: Any) -> None:
    """Refuse numbers SB3 would accept here and fail on later (or train nonsense with)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return  # a schedule, "auto", a list: SB3 checks those itself
    problem = None
    if name in AT_LEAST and value < AT_LEAST[name]:
        problem = f"must be ≥ {AT_LEAST[name]}"
    elif name in POSITIVE and not (math.isfinite(value) and value > 0):
        problem = "must be a positive number"
    elif name in NON_NEGATIVE and not value >= 0:
        problem = "must be ≥ 0"
    elif name in FRACTIONS and not 0 <= value <= 1:
        problem = "must lie in [0, 1]"
    if problem:
        raise HyperparameterError(f"{algo} hyperparameter {name}={value!r} {problem}; "
                                  f"set it with --hyperparams {name}=VALUE.")


def union_members(hint: Any) -> tuple[Any, ...]:
    """``int | None`` → ``(int, NoneType)``; any other hint → ``(hint,)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def value_fits(value: Any, hint: Any) -> bool:
    """Whether a value from YAML or the command line (numbers, strings, lists, dicts, null) can be
    passed where the constructor's annotation ``hint`` asks for it; unknown kinds of hint pass."""
    if hint is inspect.Parameter.empty or hint is Any:
        return True
    members = union_members(hint)
    if len(members) > 1:
        return any(value_fits(value, member) for member in members)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is tuple:
        return (isinstance(value, (list, tuple)) and len(value) == len(args)
                and all(value_fits(item, arg) for item, arg in zip(value, args)))
    if origin is type:
        return isinstance(value, type)
    if hint is Callable or origin is Callable:
        return callable(value)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, hint) if isinstance(hint, type) else True


def describe(hint: Any) -> str:
    """``float | Callable[[float], float]`` → ``"a number or a schedule function"``."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    members = union_members(hint)
    if len(members) > 1:
        return " or ".join(dict.fromkeys(describe(member) for member in members))
    origin = typing.get_origin(hint)
    if hint in names:
        return names[hint]
    if origin is tuple:
        return f"a list [{', '.join(describe(arg) for arg in typing.get_args(hint))}]"
    if origin is dict or hint is dict:
        return "a mapping such as {\"net_arch\": [64, 64]}"
    if hint is Callable or origin is Callable:
        return "a schedule function"
    if origin is type:
        return "a class"
    return f"a {getattr(hint, '__name__', hint)}"


def as_constructor_value(value: Any, hint: Any) -> Any:
    """A copy for the constructor (A2C adds its optimiser class to ``policy_kwargs`` in place, which
    must not reach ``config.json``); JSON has no tuples, so a list becomes the tuple an annotation
    like ``int | tuple[int, str]`` wants."""
    wants_tuple = any(typing.get_origin(member) is tuple for member in union_members(hint))
    return tuple(value) if isinstance(value, list) and wants_tuple else copy.deepcopy(value)


# ----------------------------------------------------------------------------------------------
# Environments
# ----------------------------------------------------------------------------------------------


def check_algorithm_fits(algo: str, venv: VecEnv, env_id: str) -> None:
    """A clear error when ``algo`` cannot act in ``venv``: another kind of action space, or (for
    :data:`MASKED_ALGORITHMS`) an env without ``action_masks()``; it names the algorithms that can."""
    if algo in algorithms_for(venv):
        return
    if isinstance(venv.action_space, ACTION_SPACES[algo]):
        problem = (f"acts only among the valid actions an env's action_masks() names, but {env_id} has no "
                   "action_masks()")
    else:
        problem = f"needs a {ACTION_SPACES[algo].__name__} action space, but {env_id} has {venv.action_space}"
    fitting = algorithms_for(venv) + (["rnp-dqn"] if isinstance(venv.action_space, spaces.Discrete) else [])
    raise ValueError(f"--algo {algo} {problem}; algorithms for it: {', '.join(fitting) or '(none)'}.")


def algorithms_for(venv: VecEnv) -> list[str]:
    """The SB3 algorithms that can act in ``venv``: by its action space, the masked ones only where its
    envs have ``action_masks()`` (every Discrete prune-gym env does; e.g. CartPole-v1 has none)."""
    fitting = [name for name, kind in ACTION_SPACES.items() if isinstance(venv.action_space, kind)]
    if any(name in MASKED_ALGORITHMS for name in fitting) and not is_masking_supported(venv):
        fitting = [name for name in fitting if name not in MASKED_ALGORITHMS]
    return fitting


def make_sb3_env(env_id: str, env_kwargs: dict[str, Any], n_envs: int, seed: int, ray: bool = False,
                 ray_cpus: float = 1) -> VecEnv:
    """The monitored SB3 ``VecEnv`` for ``env_id``: the native batched env for RNP ids; otherwise
    ``n_envs`` single envs — in this process for one, in worker processes (``SubprocVecEnv``) for
    more, or as Ray actors of ``ray_cpus`` CPUs each with ``ray`` (the caller holds the Ray
    connection). The worker processes and actors run torch with this process's thread count, so all
    three yield the same episodes."""
    from prune_gym.ray_support import torch_threads
    from prune_gym.registry import get_entry, is_family

    if is_family(env_id, "RNP"):  # the native batched env (an SB3 adapter over RNPVectorEnv)
        if ray:
            raise ValueError(f"--ray does not apply to {env_id}: RNP ids step one natively batched env "
                             f"({n_envs} images per step) in this process, which Ray would not speed up. "
                             "Leave out --ray.")
        from prune_gym.envs.rnp import RNPVectorEnv
        from prune_gym.envs.sb3 import SB3VecEnvAdapter

        entry = get_entry(env_id)
        venv: VecEnv = SB3VecEnvAdapter(RNPVectorEnv(num_envs=n_envs, **{**entry.kwargs, **env_kwargs}))
    elif ray:
        from prune_gym.agents.ray_vec_env import RayVecEnv

        venv = RayVecEnv(env_id, n_envs, env_kwargs, num_cpus=ray_cpus)
    elif n_envs > 1:
        venv = SubprocVecEnv([functools.partial(make_single_env, env_id, env_kwargs, torch_threads())] * n_envs)
    else:
        # No per-env Monitor (make_vec_env would add one): the single VecMonitor below serves every family.
        venv = DummyVecEnv([functools.partial(gym.make, env_id, **env_kwargs)])
    venv.seed(seed)
    return VecMonitor(FillAccountingKeys(venv), info_keywords=INFO_KEYWORDS)


def make_single_env(env_id: str, env_kwargs: dict[str, Any], threads: int) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)`` in a fresh worker process (ids registered, torch on ``threads`` threads)."""
    import torch

    import prune_gym  # noqa: F401 - registers the ids in the worker

    torch.set_num_threads(threads)
    return gym.make(env_id, **env_kwargs)


class FillAccountingKeys(VecEnvWrapper):
    """Gives a finished episode's info ``None`` for every :data:`INFO_KEYWORDS` key its family does
    not report (``correct`` exists only per image, in RNP), so one monitor serves every family."""

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        observations, rewards, dones, infos = self.venv.step_wait()
        for done, info in zip(dones, infos):
            if done:
                for key in INFO_KEYWORDS:
                    info.setdefault(key, None)
        return observations, rewards, dones, infos


def _eval_kwargs(env_id: str) -> dict[str, Any]:
    """The eval callback scores RNP policies on the validation images, never the test split."""
    from prune_gym.registry import is_family

    return {"split": "val"} if is_family(env_id, "RNP") else {}


# ----------------------------------------------------------------------------------------------
# Acting
# ----------------------------------------------------------------------------------------------


def greedy_policy(model: BaseAlgorithm, env: gym.Env | None = None) -> Callable[[np.ndarray, dict[str, Any]], Any]:
    """``policy(obs, info) -> action``: a trained model's deterministic action (an int for a
    ``Discrete`` space, an array for a ``Box`` one); given ``env`` (for a :data:`MASKED_ALGORITHMS`
    model), among that env's valid actions only, read at every call because they change as the
    episode goes (a removed layer cannot be removed again)."""
    discrete = isinstance(model.action_space, spaces.Discrete)

    def policy(obs: np.ndarray, info: dict[str, Any]) -> Any:
        masks = {} if env is None else {"action_masks": env.unwrapped.action_masks()}
        action = model.predict(obs, deterministic=True, **masks)[0]
        return int(action) if discrete else action

    return policy


# ----------------------------------------------------------------------------------------------
# Callbacks: progress and metrics
# ----------------------------------------------------------------------------------------------


def rollout_timesteps(model: BaseAlgorithm) -> int | None:
    """Timesteps SB3 collects between two checks of its budget (None where episodes decide it)."""
    if isinstance(model, OnPolicyAlgorithm):
        return model.n_steps * model.n_envs
    train_freq = getattr(model, "train_freq", None)
    if train_freq is not None and train_freq.unit == TrainFrequencyUnit.STEP:
        return train_freq.frequency * model.n_envs
    return None


def planned_timesteps(model: BaseAlgorithm, requested_total: int) -> int:
    """The ``num_timesteps`` SB3 will end at: it collects whole rollouts, so it rounds the requested
    total up to a whole number of them (600 requested with PPO's 384-step rollouts → 768)."""
    start, chunk = model.num_timesteps, rollout_timesteps(model)
    if chunk is None or requested_total <= start:
        return max(requested_total, start)
    return start + math.ceil((requested_total - start) / chunk) * chunk


class ProgressBarCallback(BaseCallback):
    """Progress over the timesteps that will actually run, with the recent mean return, accuracy
    and MACs per image (a bar on a terminal, periodic lines otherwise)."""

    def __init__(self) -> None:
        super().__init__()
        self.bar: Any = None

    def _on_training_start(self) -> None:
        requested = int(self.locals["total_timesteps"])
        total = planned_timesteps(self.model, requested)
        name = type(self.model).__name__
        if total != requested:
            logger.info("%s collects whole rollouts of %d timesteps, so it runs to %d timesteps (%d requested).",
                        name, rollout_timesteps(self.model), total, requested)
        self.bar = progress_counter(total, name.lower(), "step", initial=self.model.num_timesteps)

    def _on_step(self) -> bool:
        # Clamped: with episode-based training frequencies the end is not known in advance.
        self.bar.total = max(self.bar.total, self.model.num_timesteps)
        self.bar.update(self.model.num_timesteps - self.bar.n)
        episodes = list(self.model.ep_info_buffer or [])[-100:]
        if episodes:
            summary = {"return": np.mean([episode["r"] for episode in episodes])}
            for key, label in (("correct", "accuracy"), ("test_accuracy", "accuracy"), ("macs", "macs")):
                values = [episode[key] for episode in episodes if episode.get(key) is not None]
                if values:
                    summary[label] = float(np.mean(values))
            self.bar.set_postfix({name: f"{value:.3g}" for name, value in summary.items()}, refresh=False)
        return True

    def _on_training_end(self) -> None:
        self.bar.close()


RowWriter = Callable[[list[dict[str, float]]], None]


class EpisodeMetricsCallback(BaseCallback):
    """One row per finished episode (timesteps, return, length, accounting), handed to
    ``write_rows`` after every rollout — so a killed run keeps what it logged — and the recent
    means of the accounting to tensorboard."""

    def __init__(self, write_rows: RowWriter):
        super().__init__()
        self.write_rows = write_rows
        self.pending: list[dict[str, float]] = []
        self.recent: deque[dict[str, float]] = deque(maxlen=256)

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is None:
                continue
            row = {"timesteps": self.num_timesteps, "return": float(episode["r"]), "length": int(episode["l"])}
            row.update({key: float(info[key]) for key in INFO_KEYWORDS if info.get(key) is not None})
            self.pending.append(row)
            self.recent.append(row)
        for key in ("correct", "macs", "test_accuracy"):
            values = [row[key] for row in self.recent if key in row]
            if values:
                self.logger.record(f"prune_gym/{'accuracy' if key == 'correct' else key}", float(np.mean(values)))
        return True

    def _on_rollout_end(self) -> None:
        self.flush()

    def _on_training_end(self) -> None:
        self.flush()

    def flush(self) -> None:
        if self.pending:
            self.write_rows(self.pending)
            self.pending = []


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def checkpoint_path(run_dir: Path, timesteps: int) -> Path:
    """Where SB3's ``CheckpointCallback`` (prefix ``model``) saves the model at ``timesteps``."""
    return run_dir / "checkpoints" / f"model_{timesteps}_steps.zip"


def replay_buffer_path(checkpoint: Path, timesteps: int) -> Path:
    return checkpoint.with_name(f"model_replay_buffer_{timesteps}_steps.pkl")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoints/model_<steps>_steps.zip`` of an SB3 run, if any."""
    return max((run_dir / "checkpoints").glob("model_*_steps.zip"), key=checkpoint_timesteps, default=None)


def checkpoint_timesteps(path: Path) -> int:
    """``model_600_steps.zip`` → 600."""
    return int(path.stem.split("_")[1])


class SB3Training:
    """An SB3 run, built (and so validated) before anything is written, then trained by :meth:`SB3Training.run`.

    Args:
        config: the run's ``config.json`` (env id, algo, seed, env kwargs, hyperparameters).
        run_dir: checkpoints, tensorboard logs, eval results and the final model go here.
        resume_from: a checkpoint to continue from (its replay buffer too, where saved).
        load_model: ``load_model(path, algorithm, **kwargs)`` loads a saved model (the run directory
            layer turns unreadable files into one-line errors).
        ray: step the sub-environments (training and evaluation) as Ray actors; the caller holds the
            Ray connection (:func:`prune_gym.ray_support.ray_session`).
    """

    def __init__(self, config: dict[str, Any], run_dir: Path, resume_from: Path | None,
                 load_model: Callable[..., BaseAlgorithm], ray: bool = False):
        env_id, algo, seed = config["env_id"], config["algo"], config["seed"]
        hyperparams, env_kwargs = config["hyperparams"], config["env_kwargs"]
        settings = constructor_kwargs(algo, hyperparams)
        policy = settings.pop("policy", "MlpPolicy")
        self.algo, self.run_dir = algo, run_dir
        self.timesteps, self.n_envs = int(hyperparams["n_timesteps"]), int(hyperparams["n_envs"])
        self.env = make_sb3_env(env_id, env_kwargs, self.n_envs, seed, ray)
        self.eval_env: VecEnv | None = None
        try:
            check_algorithm_fits(algo, self.env, env_id)
            # The evaluation actors reserve no CPUs: the callback steps them only while the training
            # actors wait, and reserving theirs too would leave n_envs actors unscheduled on 2n CPUs.
            self.eval_env = make_sb3_env(env_id, {**env_kwargs, **_eval_kwargs(env_id)}, self.n_envs, seed + 10_000,
                                         ray, ray_cpus=0)
            self.model = self._build_model(config, policy, settings, resume_from, load_model)
        except BaseException:
            self.close()  # worker processes or actors must not outlive a failed start
            raise

    def _build_model(self, config: dict[str, Any], policy: str, settings: dict[str, Any], resume_from: Path | None,
                     load_model: Callable[..., BaseAlgorithm]) -> BaseAlgorithm:
        algo, seed, run_dir = config["algo"], config["seed"], self.run_dir
        algorithm = SB3_ALGORITHMS[algo]
        self.resumed = resume_from is not None
        if resume_from is not None:
            model = load_model(resume_from, algorithm, env=self.env, tensorboard_log=str(run_dir / "tb"))
            buffer = replay_buffer_path(resume_from, model.num_timesteps)
            if hasattr(model, "load_replay_buffer") and buffer.exists():
                model.load_replay_buffer(buffer)
            return model
        try:
            return algorithm(policy, self.env, seed=seed, tensorboard_log=str(run_dir / "tb"), verbose=0, **settings)
        except (AssertionError, ValueError, TypeError) as error:  # SB3's own checks of the values
            raise HyperparameterError(f"{algo} refused the hyperparameters {config['hyperparams']}: {error}") from None

    def close(self) -> None:
        """Close the training and evaluation envs (their worker processes or Ray actors)."""
        self.env.close()
        if self.eval_env is not None:
            self.eval_env.close()

    def run(self, write_rows: RowWriter) -> BaseAlgorithm:
        """Train to ``n_timesteps``; saves ``final_model.zip`` and a last checkpoint; returns the model."""
        model, run_dir, n_envs = self.model, self.run_dir, self.n_envs
        # Save often enough for a killed run to lose little, never more often than every 10 % of the run.
        save_every = max(1, self.timesteps // (10 * n_envs))
        callbacks = CallbackList([
            ProgressBarCallback(),
            EpisodeMetricsCallback(write_rows),
            CheckpointCallback(save_every, str(run_dir / "checkpoints"), name_prefix="model",
                               save_replay_buffer=hasattr(model, "replay_buffer")),
            self.eval_callback_class(self.eval_env, n_eval_episodes=max(1, min(n_envs, 16)), eval_freq=save_every,
                                     best_model_save_path=str(run_dir / "best"), log_path=str(run_dir / "eval"),
                                     verbose=0),
        ])
        # SB3 counts total_timesteps on top of the loaded model's when it does not reset them.
        remaining = max(0, self.timesteps - model.num_timesteps) if self.resumed else self.timesteps
        try:
            model.learn(total_timesteps=remaining, callback=callbacks, tb_log_name=self.algo,
                        reset_num_timesteps=not self.resumed)
            model.save(run_dir / "final_model.zip")
            self.save_last_checkpoint()
        finally:
            self.close()
        return model

    @property
    def eval_callback_class(self) -> type[EvalCallback]:
        """sb3-contrib's ``MaskableEvalCallback`` for a masked algorithm: the plain ``EvalCallback``
        would score it without masks, on actions it never takes in training or when acting."""
        return MaskableEvalCallback if self.algo in MASKED_ALGORITHMS else EvalCallback

    def save_last_checkpoint(self) -> None:
        """A checkpoint at the final timestep too, so "train longer" continues from the end of the run."""
        model = self.model
        path = checkpoint_path(self.run_dir, model.num_timesteps)
        if not path.exists():
            model.save(path)
            if hasattr(model, "save_replay_buffer") and getattr(model, "replay_buffer", None) is not None:
                model.save_replay_buffer(replay_buffer_path(path, model.num_timesteps))
