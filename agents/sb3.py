"""Stable-Baselines3 runners: DQN, PPO and A2C on ``Discrete`` envs, SAC and TD3 on ``Box`` actions.

RNP ids train on the native batched vector env through :class:`~prune_gym.envs.sb3.SB3VecEnvAdapter`
(no Python loop over single envs); every other id through SB3's ``DummyVecEnv``. Both are wrapped in
``VecMonitor`` with the env's accounting from ``info`` (MACs, correctness or accuracy), so episode
statistics and tensorboard curves carry them. Hyperparameters come from ``agents/hyperparams/<algo>.yml``
(see :func:`prune_gym.agents.hyperparams.load_hyperparams`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecMonitor

SB3_ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"dqn": DQN, "ppo": PPO, "a2c": A2C, "sac": SAC, "td3": TD3}
# Which action spaces each algorithm is offered for (PPO/A2C could do Box too, but no prune-gym env needs it).
ACTION_SPACES: dict[str, type[spaces.Space]] = {
    "dqn": spaces.Discrete, "ppo": spaces.Discrete, "a2c": spaces.Discrete, "sac": spaces.Box, "td3": spaces.Box,
}
# Per-episode accounting copied from the final info into the monitor's episode records.
INFO_KEYWORDS = ("macs", "macs_full", "correct", "test_accuracy", "val_accuracy")
# Keys of the hyperparameter files that prune-gym reads itself; the rest go to the constructor.
RUNNER_KEYS = ("n_timesteps", "n_envs")


def check_action_space(algo: str, action_space: spaces.Space, env_id: str) -> None:
    """A clear error when ``algo`` cannot act in ``action_space``."""
    expected = ACTION_SPACES[algo]
    if not isinstance(action_space, expected):
        fitting = [name for name, kind in ACTION_SPACES.items() if isinstance(action_space, kind)] + (
            ["rnp-dqn"] if isinstance(action_space, spaces.Discrete) else [])
        raise ValueError(f"--algo {algo} needs a {expected.__name__} action space, but {env_id} has "
                         f"{action_space}; algorithms for it: {', '.join(fitting) or '(none)'}.")


def make_sb3_env(env_id: str, env_kwargs: dict[str, Any], n_envs: int, seed: int) -> VecEnv:
    """The monitored SB3 ``VecEnv`` for ``env_id`` (native batched env for RNP ids)."""
    from prune_gym.registry import get_entry, is_family

    if is_family(env_id, "RNP"):  # the native batched env (an SB3 adapter over RNPVectorEnv)
        from prune_gym.envs.rnp import RNPVectorEnv
        from prune_gym.envs.sb3 import SB3VecEnvAdapter

        entry = get_entry(env_id)
        venv: VecEnv = SB3VecEnvAdapter(RNPVectorEnv(num_envs=n_envs, **{**entry.kwargs, **env_kwargs}))
    else:
        # No per-env Monitor (make_vec_env would add one): the single VecMonitor below serves every family.
        venv = DummyVecEnv([lambda: gym.make(env_id, **env_kwargs) for _ in range(n_envs)])
    venv.seed(seed)
    return VecMonitor(FillAccountingKeys(venv), info_keywords=INFO_KEYWORDS)


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


class ProgressBarCallback(BaseCallback):
    """A tqdm bar over timesteps with the recent mean return, accuracy and MACs per image."""

    def __init__(self, total: int):
        super().__init__()
        self.total = total
        self.bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, initial=self.model.num_timesteps, desc=type(self.model).__name__.lower(),
                        unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
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


class EpisodeMetricsCallback(BaseCallback):
    """Logs the monitor's per-episode accounting (accuracy, MACs) to tensorboard and ``metrics.csv``."""

    def __init__(self, rows: list[dict[str, float]]):
        super().__init__()
        self.rows = rows
        self.seen = 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            episode = info.get("episode")
            if episode is None:
                continue
            self.seen += 1
            row = {"timesteps": self.num_timesteps, "return": float(episode["r"]), "length": int(episode["l"])}
            row.update({key: float(info[key]) for key in INFO_KEYWORDS if info.get(key) is not None})
            self.rows.append(row)
        if self.rows:
            recent = self.rows[-256:]
            for key in ("correct", "macs", "test_accuracy"):
                values = [row[key] for row in recent if key in row]
                if values:
                    self.logger.record(f"prune_gym/{'accuracy' if key == 'correct' else key}", float(np.mean(values)))
        return True


def train_sb3(env_id: str, algo: str, hyperparams: dict[str, Any], env_kwargs: dict[str, Any], seed: int,
              run_dir: Path, resume_from: Path | None, metrics: list[dict[str, float]]) -> BaseAlgorithm:
    """Train (or continue) ``algo`` on ``env_id``; checkpoints, tensorboard and the eval callback go under
    ``run_dir``. Returns the trained model (also saved as ``run_dir/final_model.zip``)."""
    settings = dict(hyperparams)
    timesteps = int(settings.pop("n_timesteps"))
    n_envs = int(settings.pop("n_envs"))
    policy = settings.pop("policy", "MlpPolicy")
    env = make_sb3_env(env_id, env_kwargs, n_envs, seed)
    check_action_space(algo, env.action_space, env_id)
    eval_env = make_sb3_env(env_id, {**env_kwargs, **_eval_kwargs(env_id)}, n_envs, seed + 10_000)
    algorithm = SB3_ALGORITHMS[algo]
    if resume_from is not None:
        model = algorithm.load(resume_from, env=env, tensorboard_log=str(run_dir / "tb"))
        buffer = resume_from.with_name(f"model_replay_buffer_{model.num_timesteps}_steps.pkl")
        if hasattr(model, "load_replay_buffer") and buffer.exists():
            model.load_replay_buffer(buffer)
    else:
        model = algorithm(policy, env, seed=seed, tensorboard_log=str(run_dir / "tb"), verbose=0, **settings)
    # Save often enough for a killed run to lose little, never more often than every 10 % of the run.
    save_every = max(1, timesteps // (10 * n_envs))
    callbacks = CallbackList([
        ProgressBarCallback(timesteps),
        EpisodeMetricsCallback(metrics),
        CheckpointCallback(save_every, str(run_dir / "checkpoints"), name_prefix="model",
                           save_replay_buffer=hasattr(model, "replay_buffer")),
        EvalCallback(eval_env, n_eval_episodes=max(1, min(n_envs, 16)), eval_freq=save_every,
                     best_model_save_path=str(run_dir / "best"), log_path=str(run_dir / "eval"), verbose=0),
    ])
    # SB3 counts total_timesteps on top of the loaded model's when it does not reset them.
    remaining = timesteps if resume_from is None else max(0, timesteps - model.num_timesteps)
    model.learn(total_timesteps=remaining, callback=callbacks, tb_log_name=algo,
                reset_num_timesteps=resume_from is None)
    model.save(run_dir / "final_model.zip")
    env.close()
    eval_env.close()
    return model


def _eval_kwargs(env_id: str) -> dict[str, Any]:
    """The eval callback scores RNP policies on the validation images, never the test split."""
    from prune_gym.registry import is_family

    return {"split": "val"} if is_family(env_id, "RNP") else {}


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoints/model_<steps>_steps.zip`` of an SB3 run, if any."""
    candidates = sorted((run_dir / "checkpoints").glob("model_*_steps.zip"),
                        key=lambda path: int(path.stem.split("_")[1]))
    return candidates[-1] if candidates else None
