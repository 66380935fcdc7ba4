"""What prune-gym's two DQN agents share: hyperparameters, target, update, exploration, checkpoint, loop.

The agents themselves read top to bottom in their own files, as CleanRL's do:

* :mod:`prune_gym.agents.dqn` — an MLP Q-network on single transitions, for any ``Discrete`` env;
* :mod:`prune_gym.agents.rnp_dqn` — RNP's recurrent decision network on whole episodes of the
  native batched RNP env, alternating with backbone fine-tuning.

Here are only the pieces that are the same in both: the hyperparameters both have
(:class:`CommonDQNConfig`, which each agent's config extends), the Double-DQN bootstrap, the
Polyak target update and the gradient step (:class:`QLearner`), replay sampling and its checkpoint
(:class:`RingReplay`), the ε schedule, the RNG states a checkpoint holds, and the loop that drives
iterations, metrics, checkpoints and progress.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from prune_gym.progress import progress_counter

# ----------------------------------------------------------------------------------------------
# Hyperparameters both agents have
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommonDQNConfig:
    """Hyperparameters of both DQN agents; each agent's config adds its own (the only defaults there are).

    Units: ``timesteps``, ``buffer_size`` and ``learning_starts`` count transitions (RNP: one image
    at one decided layer); ``checkpoint_every`` counts iterations (see each agent's docstring).
    Values are checked on construction; integral floats (``2e5``) are accepted for integers.
    """

    agent_name: ClassVar[str] = "rnp-dqn"  # how errors name the agent
    # Fields added after runs were saved, with the value that matches how those runs were trained
    # (their config.json and final_model.pt lack the name); see from_saved.
    legacy_values: ClassVar[dict[str, Any]] = {}

    timesteps: int = 200_000
    gamma: float = 1.0  # RNP episodes are a few decisions long and end with the loss: no discounting
    lr: float = 5e-4  # Adam learning rate of the Q-network
    batch_size: int = 256
    buffer_size: int = 100_000
    learning_starts: int = 5_000
    hidden_size: int = 128
    double_dqn: bool = True
    tau: float = 0.01  # Polyak factor of the target update (1 = hard copy)
    target_update_interval: int = 1  # gradient steps between target updates
    max_grad_norm: float = 10.0
    eps_start: float = 1.0
    eps_min: float = 0.05
    exploration_fraction: float = 0.3  # fraction of the run over which ε falls from eps_start to eps_min
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        coerce_numbers(self)
        require_at_least(self, 1, "timesteps", "batch_size", "buffer_size", "hidden_size", "target_update_interval",
                         "checkpoint_every")
        require_at_least(self, 0, "learning_starts")
        require_positive(self, "lr", "max_grad_norm")
        require(0.0 <= self.gamma <= 1.0, f"gamma must lie in [0, 1], got {self.gamma}.")
        require(0.0 <= self.eps_min <= self.eps_start <= 1.0,
                f"Need 0 ≤ eps_min ≤ eps_start ≤ 1, got eps_min={self.eps_min}, eps_start={self.eps_start}.")
        require(0.0 < self.exploration_fraction <= 1.0,
                f"exploration_fraction must be in (0, 1], got {self.exploration_fraction}.")
        require(0.0 < self.tau <= 1.0, f"tau must be in (0, 1] (1 = hard copy), got {self.tau}.")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CommonDQNConfig:
        """A config from ``values`` (missing names take their defaults); unknown names are an error
        listing the valid ones."""
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"Unknown {cls.agent_name} hyperparameters {unknown}; valid: {sorted(names)}.")
        return cls(**values)

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> CommonDQNConfig:
        """The config a saved run (``config.json``'s hyperparams, ``final_model.pt``'s config) was
        trained with: as :meth:`CommonDQNConfig.from_dict`, but a field the run predates takes its
        ``legacy_values`` entry."""
        return cls.from_dict({**cls.legacy_values, **values})


class HyperparameterError(ValueError):
    """A hyperparameter has the wrong type or lies outside its range (the message names it)."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise HyperparameterError(f"{message} Set it with --hyperparams NAME=VALUE.")


def require_at_least(config: Any, minimum: int, *names: str) -> None:
    for name in names:
        require(getattr(config, name) >= minimum, f"{name} must be ≥ {minimum}, got {getattr(config, name)}.")


def require_positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        require(math.isfinite(value) and value > 0, f"{name} must be a positive number, got {value}.")


def coerce_numbers(config: Any) -> None:
    """Check every field against its declared type (``int``, ``float``, ``bool``), turning ``2e5``
    into ``200000`` and ``1`` into ``1.0``; a wrong type is an error naming the field."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value, kind = getattr(config, field.name), hints[field.name]
        if kind is bool:
            require(isinstance(value, bool), f"{field.name} must be true or false, got {value!r}.")
            continue
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int:
            require(is_number and float(value).is_integer(), f"{field.name} must be an integer, got {value!r}.")
            object.__setattr__(config, field.name, int(value))
        elif kind is float:
            require(is_number and not math.isnan(value), f"{field.name} must be a number, got {value!r}.")
            object.__setattr__(config, field.name, float(value))


# ----------------------------------------------------------------------------------------------
# Replay storage
# ----------------------------------------------------------------------------------------------


class RingReplay:
    """A ring buffer of numpy arrays, one per name in :attr:`fields`, whose first axis is the stored
    item (a transition, an episode). Each agent's replay allocates the arrays and adds items; here
    are sampling and the checkpoint (as tensors, which ``weights_only`` loading accepts)."""

    fields: ClassVar[tuple[str, ...]] = ()
    position: int = 0  # the row the next item goes to
    size: int = 0  # rows filled

    def sample(self, count: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``count`` stored items drawn uniformly with replacement, as tensors by field."""
        rows = rng.integers(self.size, size=count)
        return {name: torch.from_numpy(getattr(self, name)[rows]) for name in self.fields}

    def state_dict(self) -> dict[str, Any]:
        return {**{name: torch.from_numpy(getattr(self, name)[: self.size].copy()) for name in self.fields},
                "position": self.position, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        for name in self.fields:
            if name in state:  # a field added since the checkpoint was written keeps its initial rows
                getattr(self, name)[:size] = torch.as_tensor(state[name]).numpy()
        self.position, self.size = int(state["position"]), size


# ----------------------------------------------------------------------------------------------
# Target and update
# ----------------------------------------------------------------------------------------------


def bootstrap_values(next_q_online: torch.Tensor, next_q_target: torch.Tensor, double_dqn: bool,
                     next_masks: torch.Tensor | None = None) -> torch.Tensor:
    """max_a Q'(s', a), with the action chosen by the online network under Double DQN; with
    ``next_masks`` (bool, like the Q-values) the max runs over the valid actions of s' only."""
    if next_masks is not None:
        next_q_online = next_q_online.masked_fill(~next_masks, -torch.inf)
        next_q_target = next_q_target.masked_fill(~next_masks, -torch.inf)
    if double_dqn:
        return next_q_target.gather(-1, next_q_online.argmax(-1, keepdim=True)).squeeze(-1)
    return next_q_target.max(-1).values


def update_target(online: nn.Module, target: nn.Module, tau: float) -> None:
    """θ' ← τ·θ + (1−τ)·θ' (τ = 1 copies)."""
    with torch.no_grad():
        for online_param, target_param in zip(online.parameters(), target.parameters()):
            target_param.lerp_(online_param, tau)


class QLearner:
    """The online Q-network, its target copy, Adam and the count of gradient steps.

    :meth:`QLearner.learn` takes a TD loss of the online network: one clipped Adam step, then the target
    update every ``target_update_interval`` steps (Polyak with ``tau``, a copy with ``tau = 1``)."""

    def __init__(self, build_network: Callable[[], nn.Module], config: CommonDQNConfig):
        self.config = config
        self.online = build_network()
        self.target = build_network()
        self.target.load_state_dict(self.online.state_dict())
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=config.lr)
        self.updates = 0

    def learn(self, loss: torch.Tensor) -> float:
        """One gradient step on ``loss``; returns its value."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.config.target_update_interval == 0:
            update_target(self.online, self.target, self.config.tau)
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        return {"online": self.online.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])


# ----------------------------------------------------------------------------------------------
# Exploration
# ----------------------------------------------------------------------------------------------


def epsilon_at(progress: float, config: CommonDQNConfig) -> float:
    """ε after ``progress`` (0–1) of the run: linear from ``eps_start`` to ``eps_min`` over the first
    ``exploration_fraction``, then constant; clipped so it never leaves ``[eps_min, eps_start]``."""
    fraction = min(1.0, max(0.0, progress) / config.exploration_fraction)
    epsilon = config.eps_start + fraction * (config.eps_min - config.eps_start)
    return float(min(config.eps_start, max(config.eps_min, epsilon)))


def epsilon_greedy(q_values: np.ndarray, epsilon: float, rng: np.random.Generator,
                   masks: np.ndarray | None = None) -> np.ndarray:
    """Greedy actions of ``q_values`` (N×A), each replaced with probability ε by one drawn
    uniformly from *all* ``A`` actions (two public RNP reproductions left out "keep every group").

    With ``masks`` (N×A bool, the envs' ``action_masks()``), both the greedy and the random action
    are drawn from each row's valid actions only; every row needs at least one."""
    if masks is not None:
        q_values = np.where(masks, q_values, -np.inf)
    actions = q_values.argmax(axis=1).astype(np.int64)
    explore = rng.random(len(actions)) < epsilon
    if masks is None:
        actions[explore] = rng.integers(q_values.shape[1], size=int(explore.sum()))
    else:
        for row in np.flatnonzero(explore):
            valid = np.flatnonzero(masks[row])
            actions[row] = valid[rng.integers(len(valid))]
    return actions


# ----------------------------------------------------------------------------------------------
# Checkpoint: RNG states as plain data
# ----------------------------------------------------------------------------------------------


def rng_state_dict(rng: np.random.Generator) -> dict[str, Any]:
    """The agent's numpy generator and torch's global generator as plain data and a tensor, which
    ``torch.load(..., weights_only=True)`` reads back (no pickled numpy objects in a run file)."""
    return {"numpy": plain_data(rng.bit_generator.state), "torch": torch.get_rng_state()}


def load_rng_state_dict(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])


def trainer_state_dict(trainer: Trainer) -> dict[str, Any]:
    """What both agents' checkpoints hold: config, seed, counters, networks and optimiser, replay,
    RNG states and the metrics so far; an agent adds what is its own (RNP: the fine-tuned backbone)."""
    return {"config": dataclasses.asdict(trainer.config), "seed": trainer.seed, "iteration": trainer.iteration,
            **trainer.learner.state_dict(), "replay": trainer.replay.state_dict(), "rng": rng_state_dict(trainer.rng),
            "metrics": list(trainer.metrics)}


def load_trainer_state_dict(trainer: Trainer, state: dict[str, Any]) -> None:
    """Restore what :func:`trainer_state_dict` saved."""
    trainer.iteration = int(state["iteration"])
    trainer.learner.load_state_dict(state)
    trainer.replay.load_state_dict(state["replay"])
    load_rng_state_dict(trainer.rng, state["rng"])
    trainer.metrics = list(state["metrics"])


def plain_data(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python ints, floats and lists."""
    if isinstance(value, dict):
        return {key: plain_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain_data(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ----------------------------------------------------------------------------------------------
# The loop both agents run
# ----------------------------------------------------------------------------------------------

# callback(iteration, row) -> False stops the run (tests use it to simulate a kill).
IterationCallback = Callable[[int, dict[str, float]], bool]


class Trainer(Protocol):
    """What :func:`train_loop` needs of an agent's trainer."""

    config: CommonDQNConfig
    seed: int
    learner: QLearner
    replay: RingReplay
    rng: np.random.Generator
    iteration: int
    total_iterations: int
    metrics: list[dict[str, float]]
    description: str

    @property
    def transitions(self) -> int: ...

    def epsilon(self) -> float: ...

    def iterate(self) -> dict[str, float]: ...


def train_loop(trainer: Trainer, callback: IterationCallback | None = None,
               checkpoint: Callable[[Any], None] | None = None) -> list[dict[str, float]]:
    """Run ``trainer.iterate()`` until ``total_iterations``; returns the metrics rows.

    A row with a ``"return"`` finished something worth a metrics row (an RNP batch of episodes, an
    episode elsewhere) and gets the counters; ``checkpoint(trainer)`` runs every
    ``checkpoint_every`` iterations and after the last one."""
    config = trainer.config
    progress = progress_counter(trainer.total_iterations, trainer.description, "iteration", initial=trainer.iteration)
    try:
        while trainer.iteration < trainer.total_iterations:
            row = trainer.iterate()
            if "return" in row:
                row.update({"iteration": trainer.iteration, "transitions": trainer.transitions,
                            "epsilon": trainer.epsilon(), "updates": trainer.learner.updates})
                trainer.metrics.append(row)
                progress.set_postfix({name: f"{row[name]:.3g}" for name in ("return", "accuracy", "macs")
                                      if name in row})
            progress.update(1)
            last = trainer.iteration == trainer.total_iterations
            if checkpoint is not None and (trainer.iteration % config.checkpoint_every == 0 or last):
                checkpoint(trainer)
            if callback is not None and callback(trainer.iteration, row) is False:
                break
    finally:
        progress.close()
    return trainer.metrics
