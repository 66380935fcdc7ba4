"""DQN on single transitions, for any Gymnasium env with a ``Discrete`` action space and a Box observation.

This is what ``--algo rnp-dqn`` trains on every id outside the RNP family (DropNet, LayerPrune,
AlphaBlend, Gymnasium's own ``CartPole-v1``); RNP ids get the recurrent agent of
:mod:`prune_gym.agents.rnp_dqn`. Reads top to bottom, as CleanRL's ``dqn.py`` does:
hyperparameters, network, replay, loss, the trainer (one env step per iteration, a gradient step
every ``train_frequency`` steps), checkpoint, and the greedy policy of a trained network. The
pieces both agents share — Double-DQN bootstrap, target update, ε schedule, RNG checkpoint, the
loop — are in :mod:`prune_gym.agents.dqn_common`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

from prune_gym.agents.dqn_common import (
    CommonDQNConfig,
    IterationCallback,
    QLearner,
    RingReplay,
    bootstrap_values,
    epsilon_at,
    epsilon_greedy,
    load_trainer_state_dict,
    require_at_least,
    train_loop,
    trainer_state_dict,
)

# ----------------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DQNConfig(CommonDQNConfig):
    """The MLP agent's hyperparameters (stored in ``config.json``); see :class:`CommonDQNConfig`.

    An iteration is one env step, so ``timesteps`` iterations run and ``checkpoint_every`` counts
    env steps. ``agents/hyperparams/rnp-dqn.yml`` overrides these per env id."""

    agent_name: ClassVar[str] = "rnp-dqn (MLP agent for non-RNP envs)"
    legacy_values: ClassVar[dict[str, Any]] = {"action_masks": False}

    train_frequency: int = 4  # env steps per gradient step
    # Explore, act and bootstrap over the env's valid actions only (its action_masks(), the one
    # contract's): no step is spent on an action the env refuses. Runs saved before this field
    # existed load as False (legacy_values), so they act and resume as they were trained.
    action_masks: bool = True
    # Steps of reward summed before bootstrapping (n-step returns): a training-in-the-loop episode
    # pays for a removal several steps later (the rise of validation loss shows as training goes
    # on), and one-step targets carry that back one step per update. 1 = plain DQN.
    n_step: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, 1, "train_frequency", "n_step")


# ----------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------


class QNetwork(nn.Module):
    """Two hidden ReLU layers from a flat observation to one Q-value per action."""

    def __init__(self, obs_size: int, num_actions: int, hidden_size: int = 128):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(obs_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size),
                                    nn.ReLU(), nn.Linear(hidden_size, num_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.layers(obs)


def q_network_for(env: gym.Env, hidden_size: int) -> QNetwork:
    """A :class:`QNetwork` sized for ``env``; a clear error for spaces it cannot serve."""
    if not isinstance(env.action_space, spaces.Discrete):
        raise ValueError(f"rnp-dqn needs a Discrete action space, got {env.action_space}; "
                         "use --algo sac or td3 for Box actions.")
    if not isinstance(env.observation_space, spaces.Box):
        raise ValueError(f"rnp-dqn's MLP needs a Box observation space, got {env.observation_space}.")
    return QNetwork(int(np.prod(env.observation_space.shape)), int(env.action_space.n), hidden_size)


# ----------------------------------------------------------------------------------------------
# Replay
# ----------------------------------------------------------------------------------------------


class TransitionReplay(RingReplay):
    """Transitions ``(s, a, R, s', terminated, discount, valid actions of s')``; ``capacity`` in transitions.

    With n-step returns ``R`` sums up to ``n`` discounted rewards, ``s'`` is the state after the
    last of them and ``discount`` is ``γ^k`` for the ``k`` steps summed (``γ`` for one step)."""

    fields = ("obs", "next_obs", "actions", "rewards", "terminated", "discounts", "next_masks")

    def __init__(self, capacity: int, obs_size: int, num_actions: int, gamma: float = 1.0):
        self.obs = np.zeros((capacity, obs_size), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_size), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.discounts = np.full(capacity, gamma, dtype=np.float32)  # γ: the rows of a one-step checkpoint
        self.next_masks = np.ones((capacity, num_actions), dtype=bool)  # all valid: an unmasked agent's rows
        self.position = 0
        self.size = 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool,
            next_mask: np.ndarray | None, discount: float) -> None:
        row = self.position
        self.obs[row], self.actions[row], self.rewards[row] = obs, action, reward
        self.next_obs[row], self.terminated[row], self.discounts[row] = next_obs, float(terminated), discount
        self.next_masks[row] = True if next_mask is None else next_mask
        self.position = (row + 1) % len(self.obs)
        self.size = min(len(self.obs), self.size + 1)


class NStepBuffer:
    """Turns an episode's steps into n-step transitions for a :class:`TransitionReplay`.

    Each step waits until ``n`` rewards after it are known (or its episode ends), then goes to the
    replay with their discounted sum, the state reached and ``γ^k``. ``n = 1`` adds every step as
    it comes, exactly as plain DQN does."""

    def __init__(self, replay: TransitionReplay, n: int, gamma: float):
        self.replay, self.n, self.gamma = replay, n, gamma
        self.pending: deque[tuple[np.ndarray, int, float]] = deque()

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool,
            next_mask: np.ndarray | None, episode_over: bool) -> None:
        self.pending.append((obs, action, reward))
        if episode_over:
            self.flush(next_obs, terminated, next_mask)
        elif len(self.pending) == self.n:
            self._emit_oldest(next_obs, False, next_mask)

    def flush(self, next_obs: np.ndarray, terminated: bool, next_mask: np.ndarray | None) -> None:
        """Send every waiting step, bootstrapping from ``next_obs`` unless ``terminated``."""
        while self.pending:
            self._emit_oldest(next_obs, terminated, next_mask)

    def _emit_oldest(self, next_obs: np.ndarray, terminated: bool, next_mask: np.ndarray | None) -> None:
        obs, action, _ = self.pending[0]
        # With one step this is r and γ exactly (1.0·r, γ¹): plain DQN's targets, bit for bit.
        reward = sum(self.gamma ** step * item[2] for step, item in enumerate(self.pending))
        self.replay.add(obs, action, reward, next_obs, terminated, next_mask, self.gamma ** len(self.pending))
        self.pending.popleft()


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


def td_loss(online: QNetwork, target: QNetwork, batch: dict[str, torch.Tensor], double_dqn: bool) -> torch.Tensor:
    """Huber TD loss of (n-step) transitions, ``R + discount · max Q'(s')`` (truncation bootstraps,
    termination does not); the max runs over the valid actions of s' (``next_masks``, all valid
    when unmasked)."""
    q_taken = online(batch["obs"]).gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        next_values = bootstrap_values(online(batch["next_obs"]), target(batch["next_obs"]), double_dqn,
                                       batch["next_masks"])
        # where, not only the product below: a terminal state may have no valid action (max = -inf).
        next_values = torch.where(batch["terminated"] > 0, 0.0, next_values)
        targets = batch["rewards"] + batch["discounts"] * (1.0 - batch["terminated"]) * next_values
    return F.smooth_l1_loss(q_taken, targets)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def flat_observation(obs: Any) -> np.ndarray:
    """An env observation as the flat float32 vector the Q-network and the replay take."""
    return np.asarray(obs, dtype=np.float32).reshape(-1)


def valid_actions(env: gym.Env) -> np.ndarray | None:
    """The env's ``action_masks()`` (bool, one per action) now, or None if it has none."""
    masks = getattr(env.unwrapped, "action_masks", None)
    return None if masks is None else np.asarray(masks(), dtype=bool)


def make_training_env(env_id: str, env_kwargs: dict[str, Any], config: DQNConfig) -> gym.Env:
    """The env this agent trains on: one ``gym.make(env_id)``."""
    return gym.make(env_id, **env_kwargs)


class DQNTrainer:
    """Trains a :class:`QNetwork` on ``env`` with ``config``, one env step per iteration.

    Args:
        env: any Gymnasium env with a ``Discrete`` action space and a Box observation.
        config: hyperparameters.
        seed: seeds the network (torch), exploration, replay sampling and the env's resets (numpy).
    """

    description = "rnp-dqn (MLP)"

    def __init__(self, env: gym.Env, config: DQNConfig, seed: int = 0):
        self.env, self.config, self.seed = env, config, seed
        torch.manual_seed(seed)
        self.learner = QLearner(lambda: q_network_for(env, config.hidden_size), config)
        self.rng = np.random.default_rng(seed)
        self.replay = TransitionReplay(config.buffer_size, int(np.prod(env.observation_space.shape)),
                                       int(env.action_space.n), config.gamma)
        self.n_step = NStepBuffer(self.replay, config.n_step, config.gamma)
        self.total_iterations = config.timesteps
        self.iteration = 0
        self.metrics: list[dict[str, float]] = []
        self.episode_obs: np.ndarray | None = None  # the observation carried across iterations
        self.episode_return, self.episode_length = 0.0, 0

    @property
    def transitions(self) -> int:
        return self.iteration

    def epsilon(self) -> float:
        return epsilon_at(self.iteration / self.total_iterations, self.config)

    def iterate(self) -> dict[str, float]:
        """One env step with an ε-greedy action; a gradient step every ``train_frequency`` steps.
        The row holds the loss, and at an episode's end its return, length and final accounting."""
        env, config = self.env, self.config
        if self.episode_obs is None:
            # Reset seeds come from the agent's generator, so its state alone fixes the episodes.
            self.episode_obs, _ = env.reset(seed=int(self.rng.integers(2**31)))
            self.episode_return, self.episode_length = 0.0, 0
        obs = flat_observation(self.episode_obs)
        with torch.no_grad():
            q_values = self.learner.online(torch.from_numpy(obs).unsqueeze(0)).numpy()
        mask = self._valid_actions()
        action = int(epsilon_greedy(q_values, self.epsilon(), self.rng, None if mask is None else mask[None])[0])
        next_obs, reward, terminated, truncated, info = env.step(action)
        self.n_step.add(obs, action, float(reward), flat_observation(next_obs), terminated, self._valid_actions(),
                        terminated or truncated)
        self.episode_return += float(reward)
        self.episode_length += 1
        row: dict[str, float] = {}
        if self.replay.size >= config.learning_starts and self.iteration % config.train_frequency == 0:
            batch = self.replay.sample(config.batch_size, self.rng)
            row["loss"] = self.learner.learn(td_loss(self.learner.online, self.learner.target, batch,
                                                     config.double_dqn))
        self.episode_obs = next_obs
        self.iteration += 1
        if terminated or truncated:
            row.update({"return": self.episode_return, "length": self.episode_length})
            row.update({key: float(info[key]) for key in ("test_accuracy", "val_accuracy", "macs", "macs_full")
                        if info.get(key) is not None})
            self.episode_obs = None
        return row

    def _valid_actions(self) -> np.ndarray | None:
        """The env's valid actions now, if this agent uses masks and the env has them."""
        return valid_actions(self.env) if self.config.action_masks else None

    def train(self, callback: IterationCallback | None = None,
              checkpoint: Callable[[DQNTrainer], None] | None = None) -> list[dict[str, float]]:
        """Run until ``config.timesteps`` env steps; returns one metrics row per finished episode."""
        return train_loop(self, callback, checkpoint)

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is (tensors and plain data).

        An env cannot be restored mid-episode, so a checkpoint also ends the current episode here:
        the uninterrupted and the resumed run both start a fresh one after it (its steps still
        waiting for n rewards go to the replay first, bootstrapping from the last state reached)."""
        if self.n_step.pending:  # the episode goes on: its last state is the observation carried over
            self.n_step.flush(flat_observation(self.episode_obs), False, self._valid_actions())
        self.episode_obs = None
        return trainer_state_dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_trainer_state_dict(self, state)
        self.episode_obs = None

    def final_model(self) -> dict[str, Any]:
        """What ``final_model.pt`` holds: the online network's weights and the config."""
        return {"online": self.learner.online.state_dict(), "config": asdict(self.config)}


# ----------------------------------------------------------------------------------------------
# The greedy policy of a trained network
# ----------------------------------------------------------------------------------------------


def greedy_policy(network: QNetwork, env: gym.Env | None = None) -> Callable[[np.ndarray, dict[str, Any]], int]:
    """``policy(obs, info) -> action``: the greedy action of a trained :class:`QNetwork`; given
    ``env`` (an agent trained with ``action_masks``), among that env's valid actions only."""

    @torch.no_grad()
    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        q_values = network(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1))
        mask = None if env is None else valid_actions(env)
        if mask is not None:
            q_values = q_values.masked_fill(~torch.from_numpy(mask), -torch.inf)
        return int(q_values.argmax())

    return policy

