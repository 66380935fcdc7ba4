"""Deep Q-learning written for prune-gym.

Reads top to bottom, as CleanRL's single-file agents do: hyperparameters, networks, replay, loss,
update, exploration schedule, then the two collection loops and the checkpoint.

* :class:`RNPQNetwork` is RNP's decision network (Lin et al., 2017): an encoder per decided conv
  layer turns that layer's pooled input features into a common size, one GRU shared across the
  layers carries what earlier layers saw, and one decoder gives ``k`` Q-values — one network for
  every layer, not one per layer. It is trained on whole episodes (one image = ``D`` decisions).
* :class:`MLPQNetwork` is a plain Q-network for any other ``Discrete`` environment, trained on
  single transitions.
* Double-DQN targets, Huber loss, gradient-norm clipping, a target network updated by Polyak
  averaging (``tau < 1``) or copied every ``target_update_interval`` updates (``tau = 1``).
* ε-greedy explores uniformly over *all* ``k`` actions (including "keep every group") and ε stays
  in ``[eps_min, eps_start] ⊆ [0, 1]``; two public RNP reproductions got both wrong.
* :class:`DQNTrainer` runs RNP's alternating schedule: phases of decision-network training on the
  native batched :class:`~prune_gym.envs.rnp.RNPVectorEnv` (hundreds of images per step), then a
  phase of backbone fine-tuning under the current greedy policy (``env.finetune_backbone``).
* Checkpoints hold networks, optimiser, replay, RNG states, counters, the fine-tuned backbone and
  the metrics so far; a resumed run reaches the same final weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from torch import nn

# ----------------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------------


@dataclass
class DQNConfig:
    """Everything that determines a run besides the env and the seed (stored in ``config.json``).

    Units: ``timesteps`` and ``buffer_size``/``learning_starts`` count transitions (one image at one
    decided layer for RNP); ``finetune_every`` and ``checkpoint_every`` count iterations (RNP: one
    batch of ``num_envs`` episodes; other envs: one env step).
    """

    timesteps: int = 200_000
    num_envs: int = 256
    gamma: float = 1.0  # RNP episodes are a few decisions long and end with the loss: no discounting
    lr: float = 5e-4
    batch_size: int = 256
    buffer_size: int = 100_000
    learning_starts: int = 5_000
    updates_per_iteration: int = 4  # RNP: gradient steps per batch of episodes; others: env steps per update
    hidden_size: int = 128
    double_dqn: bool = True
    tau: float = 0.01
    target_update_interval: int = 1
    max_grad_norm: float = 10.0
    eps_start: float = 1.0
    eps_min: float = 0.05
    exploration_fraction: float = 0.3
    finetune_every: int = 20
    finetune_steps: int = 200
    finetune_lr: float = 3e-4
    finetune_batch_size: int = 128
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps_min <= self.eps_start <= 1.0:
            raise ValueError(f"Need 0 ≤ eps_min ≤ eps_start ≤ 1, got eps_min={self.eps_min}, "
                             f"eps_start={self.eps_start}.")
        if not 0.0 < self.exploration_fraction <= 1.0:
            raise ValueError(f"exploration_fraction must be in (0, 1], got {self.exploration_fraction}.")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1] (1 = hard copy), got {self.tau}.")
        for name in ("timesteps", "num_envs", "batch_size", "buffer_size", "updates_per_iteration",
                     "hidden_size", "target_update_interval", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DQNConfig:
        """A config from ``values``; unknown names are an error listing the valid ones."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown rnp-dqn hyperparameters {unknown}; valid: {sorted(names)}.")
        return cls(**values)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------


class RNPQNetwork(nn.Module):
    """Per-layer encoders → one shared GRU cell → one decoder of ``k`` Q-values.

    The observation layout is :class:`~prune_gym.pruning.runtime.RuntimePrunedNet`'s: pooled
    features zero-padded to ``max_width``, the one-hot decision index, the MAC fraction used so
    far. Encoder ``t`` reads the ``input_widths[t]`` features that layer can have plus the MAC
    fraction, so no encoder wastes weights on padding.
    """

    def __init__(self, input_widths: list[int], k: int, hidden_size: int = 128):
        super().__init__()
        self.input_widths = list(input_widths)
        self.encoders = nn.ModuleList(nn.Linear(width + 1, hidden_size) for width in input_widths)
        self.gru = nn.GRUCell(hidden_size, hidden_size)
        self.decoder = nn.Linear(hidden_size, k)

    @property
    def num_decisions(self) -> int:
        return len(self.input_widths)

    def step(self, obs: torch.Tensor, index: int, hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-values (B×k) for decision ``index`` and the new GRU state (B×hidden)."""
        features = torch.cat([obs[:, : self.input_widths[index]], obs[:, -1:]], dim=1)
        hidden = self.gru(F.relu(self.encoders[index](features)), hidden)
        return self.decoder(hidden), hidden

    def forward(self, obs_sequence: torch.Tensor) -> torch.Tensor:
        """Q-values (B×D×k) for whole episodes of observations (B×D×obs_dim)."""
        hidden = None
        q_values = []
        for index in range(self.num_decisions):
            q, hidden = self.step(obs_sequence[:, index], index, hidden)
            q_values.append(q)
        return torch.stack(q_values, dim=1)


class MLPQNetwork(nn.Module):
    """Two hidden ReLU layers from a flat observation to one Q-value per action."""

    def __init__(self, obs_size: int, num_actions: int, hidden_size: int = 128):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(obs_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size),
                                    nn.ReLU(), nn.Linear(hidden_size, num_actions))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.layers(obs)


# ----------------------------------------------------------------------------------------------
# Replay
# ----------------------------------------------------------------------------------------------


class EpisodeReplay:
    """Whole fixed-length episodes (RNP: ``D`` decisions), so the recurrent network is trained on
    sequences it would see. A ring buffer of numpy arrays; ``capacity`` in episodes."""

    def __init__(self, capacity: int, length: int, obs_size: int):
        self.obs = np.zeros((capacity, length, obs_size), dtype=np.float32)
        self.actions = np.zeros((capacity, length), dtype=np.int64)
        self.rewards = np.zeros((capacity, length), dtype=np.float32)
        self.position = 0
        self.size = 0

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Store a batch of episodes (N×D×obs, N×D, N×D)."""
        capacity = len(self.obs)
        rows = (self.position + np.arange(len(obs))) % capacity
        self.obs[rows], self.actions[rows], self.rewards[rows] = obs, actions, rewards
        self.position = int((self.position + len(obs)) % capacity)
        self.size = min(capacity, self.size + len(obs))

    def sample(self, count: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        rows = rng.integers(self.size, size=count)
        return {"obs": torch.from_numpy(self.obs[rows]), "actions": torch.from_numpy(self.actions[rows]),
                "rewards": torch.from_numpy(self.rewards[rows])}

    def state_dict(self) -> dict[str, Any]:
        return {"obs": self.obs[: self.size].copy(), "actions": self.actions[: self.size].copy(),
                "rewards": self.rewards[: self.size].copy(), "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = state["size"]
        self.obs[:size], self.actions[:size], self.rewards[:size] = state["obs"], state["actions"], state["rewards"]
        self.position, self.size = state["position"], size


class TransitionReplay:
    """Single transitions ``(s, a, r, s', terminated)`` for the MLP network; ring buffer."""

    def __init__(self, capacity: int, obs_size: int):
        self.obs = np.zeros((capacity, obs_size), dtype=np.float32)
        self.next_obs = np.zeros((capacity, obs_size), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.position = 0
        self.size = 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        row = self.position
        self.obs[row], self.actions[row], self.rewards[row] = obs, action, reward
        self.next_obs[row], self.terminated[row] = next_obs, float(terminated)
        self.position = (row + 1) % len(self.obs)
        self.size = min(len(self.obs), self.size + 1)

    def sample(self, count: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        rows = rng.integers(self.size, size=count)
        return {name: torch.from_numpy(getattr(self, name)[rows])
                for name in ("obs", "actions", "rewards", "next_obs", "terminated")}

    def state_dict(self) -> dict[str, Any]:
        names = ("obs", "next_obs", "actions", "rewards", "terminated")
        return {**{name: getattr(self, name)[: self.size].copy() for name in names},
                "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = state["size"]
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name)[:size] = state[name]
        self.position, self.size = state["position"], size


# ----------------------------------------------------------------------------------------------
# Loss and update
# ----------------------------------------------------------------------------------------------


def bootstrap_values(next_q_online: torch.Tensor, next_q_target: torch.Tensor, double_dqn: bool) -> torch.Tensor:
    """max_a Q'(s', a), with the action chosen by the online network under Double DQN."""
    if double_dqn:
        return next_q_target.gather(-1, next_q_online.argmax(-1, keepdim=True)).squeeze(-1)
    return next_q_target.max(-1).values


def episode_td_loss(online: RNPQNetwork, target: RNPQNetwork, batch: dict[str, torch.Tensor],
                    gamma: float, double_dqn: bool) -> torch.Tensor:
    """Huber TD loss over every decision of a batch of episodes; the last decision is terminal."""
    q_all = online(batch["obs"])
    q_taken = q_all.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        next_values = bootstrap_values(q_all[:, 1:], target(batch["obs"])[:, 1:], double_dqn)
        next_values = torch.cat([next_values, torch.zeros_like(next_values[:, :1])], dim=1)
        targets = batch["rewards"] + gamma * next_values
    return F.smooth_l1_loss(q_taken, targets)


def transition_td_loss(online: MLPQNetwork, target: MLPQNetwork, batch: dict[str, torch.Tensor],
                       gamma: float, double_dqn: bool) -> torch.Tensor:
    """Huber TD loss of single transitions (truncation bootstraps, termination does not)."""
    q_taken = online(batch["obs"]).gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        next_values = bootstrap_values(online(batch["next_obs"]), target(batch["next_obs"]), double_dqn)
        targets = batch["rewards"] + gamma * (1.0 - batch["terminated"]) * next_values
    return F.smooth_l1_loss(q_taken, targets)


def update_target(online: nn.Module, target: nn.Module, tau: float) -> None:
    """θ' ← τ·θ + (1−τ)·θ' (τ = 1 copies)."""
    with torch.no_grad():
        for online_param, target_param in zip(online.parameters(), target.parameters()):
            target_param.lerp_(online_param, tau)


# ----------------------------------------------------------------------------------------------
# Exploration
# ----------------------------------------------------------------------------------------------


def epsilon_at(progress: float, config: DQNConfig) -> float:
    """ε after ``progress`` (0–1) of the run: linear from ``eps_start`` to ``eps_min`` over the first
    ``exploration_fraction``, then constant; clipped so it never leaves ``[eps_min, eps_start]``."""
    fraction = min(1.0, max(0.0, progress) / config.exploration_fraction)
    epsilon = config.eps_start + fraction * (config.eps_min - config.eps_start)
    return float(min(config.eps_start, max(config.eps_min, epsilon)))


def epsilon_greedy(q_values: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """Greedy actions of ``q_values`` (N×A), each replaced with probability ε by one drawn
    uniformly from *all* ``A`` actions."""
    actions = q_values.argmax(axis=1).astype(np.int64)
    explore = rng.random(len(actions)) < epsilon
    actions[explore] = rng.integers(q_values.shape[1], size=int(explore.sum()))
    return actions


# ----------------------------------------------------------------------------------------------
# Greedy policies of trained networks
# ----------------------------------------------------------------------------------------------


class RecurrentDecider:
    """A batched RNP decision function (numpy obs → actions) of a trained :class:`RNPQNetwork`.

    Keeps the GRU state between the calls of one forward pass and starts afresh whenever the
    observation's one-hot says "first decided layer"."""

    def __init__(self, network: RNPQNetwork, max_width: int, epsilon: float = 0.0,
                 rng: np.random.Generator | None = None):
        self.network, self.max_width, self.epsilon = network, max_width, epsilon
        self.rng = rng or np.random.default_rng(0)
        self.hidden: torch.Tensor | None = None

    def decision_index(self, obs: np.ndarray) -> int:
        one_hot = obs[0, self.max_width: self.max_width + self.network.num_decisions]
        if not one_hot.any():
            raise ValueError("Observation has no decision index (a final observation?); nothing to decide.")
        return int(one_hot.argmax())

    @torch.no_grad()
    def q_values(self, obs: np.ndarray) -> np.ndarray:
        index = self.decision_index(obs)
        if index == 0:
            self.hidden = None
        q, self.hidden = self.network.step(torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32)),
                                           index, self.hidden)
        return q.numpy()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return epsilon_greedy(self.q_values(obs), self.epsilon, self.rng)


def mlp_policy(network: MLPQNetwork) -> Callable[[np.ndarray, dict[str, Any]], int]:
    """``policy(obs, info) -> action``: the greedy action of a trained :class:`MLPQNetwork`."""

    @torch.no_grad()
    def policy(obs: np.ndarray, info: dict[str, Any]) -> int:
        return int(network(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)).argmax())

    return policy


def rnp_input_widths(env: Any) -> list[int]:
    """Channels that can reach each decided layer of an RNP env's backbone (its encoders' sizes)."""
    return list(env.runtime.backbone.spec.widths[:-1])


def build_q_network(env: Any, config: DQNConfig) -> nn.Module:
    """The RNP decision network for RNP envs, the MLP Q-network for any other ``Discrete`` env."""
    action_space = getattr(env, "single_action_space", env.action_space)
    if not isinstance(action_space, spaces.Discrete):
        raise ValueError(f"rnp-dqn needs a Discrete action space, got {action_space}; "
                         "use --algo sac or td3 for Box actions.")
    if is_rnp_env(env):
        return RNPQNetwork(rnp_input_widths(env), int(action_space.n), config.hidden_size)
    obs_space = env.observation_space
    if not isinstance(obs_space, spaces.Box):
        raise ValueError(f"rnp-dqn's MLP needs a Box observation space, got {obs_space}.")
    return MLPQNetwork(int(np.prod(obs_space.shape)), int(action_space.n), config.hidden_size)


def is_rnp_env(env: Any) -> bool:
    from prune_gym.envs.rnp import RNPEnv, RNPVectorEnv

    return isinstance(getattr(env, "unwrapped", env), (RNPEnv, RNPVectorEnv))


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------

# callback(iteration, metrics) -> False stops the run (used by tests to simulate a kill).
IterationCallback = Callable[[int, dict[str, float]], bool]


class DQNTrainer:
    """Trains :func:`build_q_network`'s network on ``env`` with ``config``; see the module docstring.

    Args:
        env: an :class:`~prune_gym.envs.rnp.RNPVectorEnv` (batched episodes, alternating fine-tune)
            or any single Gymnasium env with a ``Discrete`` action space and a Box observation.
        config: hyperparameters.
        seed: seeds the networks (torch), exploration, replay sampling and the env's resets (numpy).
    """

    def __init__(self, env: Any, config: DQNConfig, seed: int = 0):
        self.env, self.config, self.seed = env, config, seed
        self.recurrent = is_rnp_env(env)
        torch.manual_seed(seed)
        self.online = build_q_network(env, config)
        self.target = build_q_network(env, config)
        self.target.load_state_dict(self.online.state_dict())
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=config.lr)
        self.rng = np.random.default_rng(seed)
        obs_size = int(np.prod(getattr(env, "single_observation_space", env.observation_space).shape))
        if self.recurrent:
            self.decisions = env.runtime.num_decisions
            self.replay: EpisodeReplay | TransitionReplay = EpisodeReplay(
                max(1, config.buffer_size // self.decisions), self.decisions, obs_size)
            self.transitions_per_iteration = env.num_envs * self.decisions
        else:
            self.replay = TransitionReplay(config.buffer_size, obs_size)
            self.transitions_per_iteration = 1
        self.total_iterations = math.ceil(config.timesteps / self.transitions_per_iteration)
        self.iteration = 0
        self.updates = 0
        self.metrics: list[dict[str, float]] = []
        self._episode_obs: np.ndarray | None = None  # generic envs: observation carried across iterations
        self._episode_stats = {"return": 0.0, "length": 0}

    @property
    def transitions(self) -> int:
        return self.iteration * self.transitions_per_iteration

    def epsilon(self) -> float:
        return epsilon_at(self.iteration / self.total_iterations, self.config)

    def gradient_step(self) -> float:
        config = self.config
        batch = self.replay.sample(config.batch_size, self.rng)
        loss_fn = episode_td_loss if self.recurrent else transition_td_loss
        loss = loss_fn(self.online, self.target, batch, config.gamma, config.double_dqn)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % config.target_update_interval == 0:
            update_target(self.online, self.target, config.tau)
        return loss.item()

    def greedy_decider(self) -> RecurrentDecider:
        return RecurrentDecider(self.online, self.env.runtime.max_width)

    # -- one iteration ------------------------------------------------------------------------

    def _rnp_iteration(self) -> dict[str, float]:
        """One batch of ``num_envs`` episodes with ε-greedy actions, stored, then the updates."""
        env, config = self.env, self.config
        # Reset seeds come from the agent's generator, so the agent's RNG state alone fixes which
        # images come next (a resumed run draws the same ones).
        obs, _ = env.reset(seed=int(self.rng.integers(2**31)))
        decider = RecurrentDecider(self.online, env.runtime.max_width, self.epsilon(), self.rng)
        episode_obs = np.zeros((env.num_envs, self.decisions, obs.shape[1]), dtype=np.float32)
        actions = np.zeros((env.num_envs, self.decisions), dtype=np.int64)
        rewards = np.zeros((env.num_envs, self.decisions), dtype=np.float32)
        for index in range(self.decisions):
            episode_obs[:, index] = obs
            actions[:, index] = decider(obs)
            obs, rewards[:, index], _, _, info = env.step(actions[:, index])
        self.replay.add(episode_obs, actions, rewards)
        outcome = info["final_info"]
        losses = [self.gradient_step() for _ in range(config.updates_per_iteration)
                  if self.replay.size * self.decisions >= config.learning_starts]
        row = {"return": float(rewards.sum(1).mean()), "accuracy": float(outcome["correct"].mean()),
               "macs": float(outcome["macs"].mean()), "macs_fraction": float(outcome["macs"].mean()
                                                                              / outcome["macs_full"][0]),
               "loss": float(np.mean(losses)) if losses else math.nan}
        row.update({f"groups_layer{index + 1}": float(actions[:, index].mean() + 1) for index in range(self.decisions)})
        return row

    def _generic_iteration(self) -> dict[str, float]:
        """One env step with an ε-greedy action; an update every ``updates_per_iteration`` steps."""
        env, config = self.env, self.config
        if self._episode_obs is None:
            self._episode_obs, _ = env.reset(seed=int(self.rng.integers(2**31)))
            self._episode_stats = {"return": 0.0, "length": 0}
        obs = np.asarray(self._episode_obs, dtype=np.float32).reshape(-1)
        with torch.no_grad():
            q_values = self.online(torch.from_numpy(obs).unsqueeze(0)).numpy()
        action = int(epsilon_greedy(q_values, self.epsilon(), self.rng)[0])
        next_obs, reward, terminated, truncated, info = env.step(action)
        self.replay.add(obs, action, float(reward), np.asarray(next_obs, dtype=np.float32).reshape(-1), terminated)
        self._episode_stats["return"] += float(reward)
        self._episode_stats["length"] += 1
        row: dict[str, float] = {}
        if self.replay.size >= config.learning_starts and self.iteration % config.updates_per_iteration == 0:
            row["loss"] = self.gradient_step()
        self._episode_obs = next_obs
        if terminated or truncated:
            row.update({"return": self._episode_stats["return"], "length": self._episode_stats["length"]})
            row.update({key: float(info[key]) for key in ("test_accuracy", "val_accuracy", "macs", "macs_full")
                        if key in info and info[key] is not None})
            self._episode_obs = None
        return row

    # -- the loop ---------------------------------------------------------------------------

    def finetune_due(self) -> bool:
        every = self.config.finetune_every
        started = self.replay.size * (self.decisions if self.recurrent else 1) >= self.config.learning_starts
        return self.recurrent and every > 0 and started and self.iteration % every == 0

    def train(self, callback: IterationCallback | None = None,
              checkpoint: Callable[[DQNTrainer], None] | None = None) -> list[dict[str, float]]:
        """Run until ``config.timesteps`` transitions; returns the metrics rows (one per iteration
        for RNP, one per finished episode for other envs)."""
        from tqdm.auto import tqdm

        config = self.config
        bar = tqdm(total=self.total_iterations, initial=self.iteration, desc="rnp-dqn", unit="it",
                   dynamic_ncols=True)
        try:
            while self.iteration < self.total_iterations:
                row = self._rnp_iteration() if self.recurrent else self._generic_iteration()
                self.iteration += 1
                if self.finetune_due():
                    finetune = self.env.finetune_backbone(
                        self.greedy_decider(), config.finetune_steps, config.finetune_batch_size, config.finetune_lr,
                        seed=self.seed * 100_003 + self.iteration)
                    row.update({f"finetune_{key}": value for key, value in finetune.items() if key != "wall_s"})
                if "return" in row:
                    row.update({"iteration": self.iteration, "transitions": self.transitions,
                                "epsilon": self.epsilon(), "updates": self.updates})
                    self.metrics.append(row)
                    bar.set_postfix({name: f"{row[name]:.3g}" for name in ("return", "accuracy", "macs")
                                     if name in row})
                bar.update(1)
                last = self.iteration == self.total_iterations
                if checkpoint is not None and (self.iteration % config.checkpoint_every == 0 or last):
                    checkpoint(self)
                if callback is not None and callback(self.iteration, row) is False:
                    break
        finally:
            bar.close()
        return self.metrics

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is."""
        state = {
            "config": dataclasses.asdict(self.config), "seed": self.seed, "iteration": self.iteration,
            "updates": self.updates, "online": self.online.state_dict(), "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(), "replay": self.replay.state_dict(),
            "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "metrics": list(self.metrics),
            "backbone": self.env.backbone_state_dict() if self.recurrent else None,
        }
        if not self.recurrent:
            # A generic env cannot be restored mid-episode: checkpoints start a fresh episode.
            self._episode_obs = None
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration, self.updates = state["iteration"], state["updates"]
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.load_state_dict(state["replay"])
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        self.metrics = list(state["metrics"])
        if self.recurrent:
            self.env.load_backbone_state_dict(state["backbone"])
        self._episode_obs = None


def make_training_env(env_id: str, env_kwargs: dict[str, Any], num_envs: int) -> Any:
    """The env rnp-dqn trains on: the native vector env for RNP ids, a single env otherwise."""
    from prune_gym.registry import get_entry, is_family

    if is_family(env_id, "RNP"):
        entry = get_entry(env_id)
        from prune_gym.envs.rnp import RNPVectorEnv

        return RNPVectorEnv(num_envs=num_envs, **{**entry.kwargs, **env_kwargs})
    return gym.make(env_id, **env_kwargs)
