"""RNP's decision network trained by deep Q-learning on the native batched RNP env (Lin et al., 2017).

What ``--algo rnp-dqn`` trains on every RNP id (other ``Discrete`` ids get the MLP agent of
:mod:`prune_gym.agents.dqn`). Reads top to bottom, as CleanRL's ``dqn.py`` does:

* hyperparameters (:class:`RNPDQNConfig`);
* the network (:class:`RNPQNetwork`): an encoder per decided conv layer turns that layer's pooled
  input features into a common size, one GRU shared across the layers carries what earlier layers
  saw, and one decoder gives ``k`` Q-values — one network for every layer, not one per layer;
* replay of whole episodes (:class:`EpisodeReplay`; one image = ``D`` decisions), so the
  recurrent network learns from the sequences it will see;
* the loss (:func:`episode_td_loss`): Huber TD over every decision, the last one terminal;
* the trainer (:class:`RNPDQNTrainer`): each iteration plays one batch of ``num_envs`` episodes
  on :class:`~prune_gym.envs.rnp.RNPVectorEnv` ε-greedily, stores them and takes
  ``updates_per_iteration`` gradient steps; every ``finetune_every`` iterations the backbone is
  fine-tuned under the current greedy policy (the paper's alternating training,
  ``env.finetune_backbone``);
* checkpoints (networks, optimiser, replay, RNG states, counters, fine-tuned backbone, metrics —
  a resumed run reaches the same final weights), and the greedy decision function of a trained
  network (:class:`RecurrentDecider`).

Double-DQN bootstrap, target update, ε schedule, RNG checkpoint and the loop are shared with the
MLP agent in :mod:`prune_gym.agents.dqn_common`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
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
    require_positive,
    train_loop,
    trainer_state_dict,
)
from prune_gym.models.linear import ONEDNN_MIN_ROWS, batched_linear
from prune_gym.pruning.counting import gru_cell_macs

# ----------------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RNPDQNConfig(CommonDQNConfig):
    """The RNP agent's hyperparameters (stored in ``config.json``); see :class:`CommonDQNConfig`.

    An iteration is one batch of ``num_envs`` episodes (``num_envs × D`` transitions), so
    ``finetune_every`` and ``checkpoint_every`` count batches. ``agents/hyperparams/rnp-dqn.yml``
    overrides these per env id."""

    agent_name: ClassVar[str] = "rnp-dqn (RNP agent)"

    num_envs: int = 256  # images per iteration, stepped as one batch
    updates_per_iteration: int = 4  # gradient steps after each batch of episodes
    finetune_every: int = 20  # iterations between backbone fine-tuning phases (0: never)
    finetune_steps: int = 200  # Adam steps per fine-tuning phase
    finetune_lr: float = 3e-4
    finetune_batch_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, 1, "num_envs", "updates_per_iteration", "finetune_batch_size")
        require_at_least(self, 0, "finetune_every", "finetune_steps")
        require_positive(self, "finetune_lr")


# ----------------------------------------------------------------------------------------------
# Network
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

    def macs_per_image(self) -> int:
        """MACs of one image's ``D`` decisions (the project counter's conventions): per decision
        ``t`` the encoder ``(input_widths[t] + 1) · hidden``, the GRU cell ``3 · (hidden·hidden +
        hidden·hidden)`` and the decoder ``hidden · k``; biases, ReLU and the gates' elementwise
        work are not counted."""
        hidden, k = self.gru.hidden_size, self.decoder.out_features
        per_decision = gru_cell_macs(self.gru.input_size, hidden) + hidden * k
        return sum((width + 1) * hidden + per_decision for width in self.input_widths)

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


def q_network_for(runtime: Any, hidden_size: int) -> RNPQNetwork:
    """An :class:`RNPQNetwork` for an RNP env's runtime: one encoder per decided layer, sized by the
    channels that can reach it, and ``k`` outputs."""
    return RNPQNetwork(list(runtime.backbone.spec.widths[:-1]), runtime.k, hidden_size)


# ----------------------------------------------------------------------------------------------
# Replay
# ----------------------------------------------------------------------------------------------


class EpisodeReplay(RingReplay):
    """Whole fixed-length episodes (``D`` decisions); ``capacity`` in episodes."""

    fields = ("obs", "actions", "rewards")

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


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# Acting: the decision function of a network
# ----------------------------------------------------------------------------------------------


class RecurrentDecider:
    """A batched RNP decision function (numpy obs → actions) of an :class:`RNPQNetwork`, ε-greedy.

    Keeps the GRU state between the calls of one forward pass and starts afresh whenever the
    observation's one-hot says "first decided layer"."""

    def __init__(self, network: RNPQNetwork, max_width: int, epsilon: float = 0.0,
                 rng: np.random.Generator | None = None):
        self.network, self.max_width, self.epsilon = network, max_width, epsilon
        self.rng = rng or np.random.default_rng(0)
        self.hidden: torch.Tensor | None = None

    @property
    def decision_macs(self) -> int:
        """MACs per image of the decision network (see :meth:`RNPQNetwork.macs_per_image`)."""
        return self.network.macs_per_image()

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

    @property
    def explores(self) -> bool:
        """Whether some choices are random (ε > 0): then only the numpy path draws them."""
        return bool(self.epsilon)

    def decision_cell(self) -> RNPDecisionCell:
        """The greedy network as a torch :class:`~prune_gym.pruning.deploy.DecisionCell` for the
        deployment paths (:class:`~prune_gym.pruning.deploy.SingleImagePath`, and
        :meth:`RuntimePrunedNet.forward <prune_gym.pruning.runtime.RuntimePrunedNet.forward>`,
        which decides in torch with it)."""
        if self.explores:
            raise ValueError(f"decision_cell() deploys the greedy policy; this decider explores (ε={self.epsilon}).")
        return RNPDecisionCell(self.network)

    def single_image_cell(self) -> SingleImageDecisionCell:
        """The greedy network for one image at a time, in numpy (see
        :class:`SingleImageDecisionCell` for why): what
        :class:`~prune_gym.pruning.deploy.SingleImagePath` runs when a decider offers it."""
        if self.explores:
            raise ValueError("single_image_cell() deploys the greedy policy; "
                             f"this decider explores (ε={self.epsilon}).")
        return SingleImageDecisionCell(self.network)


class RNPDecisionCell:
    """:meth:`RNPQNetwork.step` for one image without building its observation vector: encoder
    ``t`` reads the pooled features through the weight columns of the channels that are active (the
    observation's zero padding contributes nothing) and the MAC fraction through its last column,
    folded into the bias. Same Q-values as ``step`` up to float summation order."""

    def __init__(self, network: RNPQNetwork):
        self.network = network
        # (weight, bias, MAC-fraction column) per encoder, and the GRU's and decoder's tensors: the
        # step calls the functional ops on them directly, because at batch 1 the nn.Module calls'
        # own overhead is a measurable share of a decision (the ops and their bits are the same).
        self.encoders = [(encoder.weight.detach(), encoder.bias.detach(), encoder.weight[:, -1].detach().contiguous())
                         for encoder in network.encoders]
        gru = network.gru
        self.gru_tensors = tuple(tensor.detach() for tensor in (gru.weight_ih, gru.weight_hh, gru.bias_ih, gru.bias_hh))
        self.decoder = (network.decoder.weight.detach(), network.decoder.bias.detach())
        self._columns: dict[tuple[int, int], torch.Tensor] = {}

    def initial_state(self) -> torch.Tensor:
        return self.initial_states(1)

    def initial_states(self, count: int) -> torch.Tensor:
        """The state before the first decision for ``count`` images at once (on the network's device)."""
        return torch.zeros(count, self.network.gru.hidden_size, device=self.decoder[0].device)

    def step(self, pooled: torch.Tensor, index: int, macs_fraction: float | torch.Tensor,
             state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decision for B images: ``pooled`` B×w, ``macs_fraction`` a float (B = 1) or a B×1
        tensor, ``state`` B×hidden; returns B×k Q-values and the new state."""
        weight, bias, macs_column = self.encoders[index]
        key = (index, pooled.shape[1])
        columns = self._columns.get(key)
        if columns is None:
            columns = self._columns[key] = weight[:, : pooled.shape[1]].contiguous()
        if not isinstance(macs_fraction, torch.Tensor):
            encoded = F.relu_(F.linear(pooled, columns, torch.add(bias, macs_column, alpha=macs_fraction)))
        else:  # a batch: the MAC column times each image's fraction (a per-row bias)
            encoded = F.relu_(batched_linear(pooled, columns).add_(torch.addcmul(bias, macs_fraction, macs_column)))
        state = gru_cell_batched(encoded, state, *self.gru_tensors)
        return batched_linear(state, *self.decoder), state


class SingleImageDecisionCell:
    """:class:`RNPDecisionCell` for batch 1, in numpy: the same encoder (active channels' columns,
    MAC fraction folded into the bias), GRU cell and decoder on float32 vectors.

    Why numpy: at batch 1 a decision is about a dozen products and gate operations on vectors of
    at most 384 entries, so per-operation dispatch is the cost. On an AVX2-only AMD EPYC (one
    thread) torch's step took 50–53 µs per decision against 29–31 µs for these numpy operations
    (OpenBLAS matrix–vector products; best of 7 passes, ``benchmarks/single_image_decisions.py``),
    and cnn4's pruned path at batch 1 went from 0.99× to 1.13× the full backbone's speed, cnn6's
    from 1.29× to 1.56×. CPU only (the single-image path keeps the torch cell on a GPU). Same
    Q-values as :meth:`RNPQNetwork.step` up to float summation order (tested); the sigmoid is
    written as ½·tanh(x/2) + ½ (an identity that cannot overflow)."""

    def __init__(self, network: RNPQNetwork):
        def array(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().cpu().numpy().astype(np.float32, copy=True)

        # Weights stored transposed (input × output), so each product is ``vector @ matrix``.
        self.encoders = [(array(encoder.weight).T.copy(), array(encoder.bias), array(encoder.weight[:, -1]))
                         for encoder in network.encoders]
        gru = network.gru
        self.hidden_size = gru.hidden_size
        self.weight_ih, self.weight_hh = array(gru.weight_ih).T.copy(), array(gru.weight_hh).T.copy()
        self.bias_ih, self.bias_hh = array(gru.bias_ih), array(gru.bias_hh)
        self.decoder_weight, self.decoder_bias = array(network.decoder.weight).T.copy(), array(network.decoder.bias)

    def initial_state(self) -> np.ndarray:
        return np.zeros(self.hidden_size, dtype=np.float32)

    def step(self, pooled: torch.Tensor, index: int, macs_fraction: float,
             state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One decision: ``pooled`` the 1×w pooled features (a tensor), ``state`` the hidden vector;
        returns the k action values and the new state (numpy vectors)."""
        weight, bias, macs_column = self.encoders[index]
        features = pooled.numpy().reshape(-1)
        encoded = np.maximum(features @ weight[: features.shape[0]] + (bias + macs_fraction * macs_column), 0.0)
        hidden = self.hidden_size
        gates_input = encoded @ self.weight_ih + self.bias_ih
        gates_hidden = state @ self.weight_hh + self.bias_hh
        reset_update = np.tanh(0.5 * (gates_input[: 2 * hidden] + gates_hidden[: 2 * hidden])) * 0.5 + 0.5
        candidate = np.tanh(gates_input[2 * hidden:] + reset_update[:hidden] * gates_hidden[2 * hidden:])
        state = candidate + reset_update[hidden:] * (state - candidate)
        return state @ self.decoder_weight + self.decoder_bias, state


def gru_cell_batched(inputs: torch.Tensor, state: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor,
                     bias_ih: torch.Tensor, bias_hh: torch.Tensor) -> torch.Tensor:
    """``torch.gru_cell`` (nn.GRUCell's equations: r, z gates, n = tanh(W_in x + r ⊙ (W_hn h)))
    with its two products through :func:`~prune_gym.models.linear.batched_linear`, which is twice as
    fast as the BLAS at a batch's rows on this project's CPU; the same values up to float rounding
    (tested). tanh is computed as 2·σ(2x) − 1: on this CPU torch's tanh took 69 µs on a 256×128
    gate against 17 µs for that form (8 µs for one sigmoid), within 2e-7 of it. Below
    :data:`~prune_gym.models.linear.ONEDNN_MIN_ROWS` rows (batch 1: the single-image path) or with
    autograd (its in-place gate arithmetic is for inference) it is ``torch.gru_cell`` itself, what
    nn.GRUCell.forward runs."""
    if inputs.shape[0] < ONEDNN_MIN_ROWS or torch.is_grad_enabled():
        return torch.gru_cell(inputs, state, weight_ih, weight_hh, bias_ih, bias_hh)
    input_r, input_z, input_n = batched_linear(inputs, weight_ih, bias_ih).chunk(3, 1)
    hidden_r, hidden_z, hidden_n = batched_linear(state, weight_hh, bias_hh).chunk(3, 1)
    reset = torch.sigmoid_(input_r.add_(hidden_r))
    update = torch.sigmoid_(input_z.add_(hidden_z))
    candidate = torch.sigmoid_(input_n.addcmul_(reset, hidden_n).mul_(2.0)).mul_(2.0).sub_(1.0)  # tanh
    return torch.addcmul(candidate, update, state - candidate)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def make_training_env(env_id: str, env_kwargs: dict[str, Any], config: RNPDQNConfig) -> Any:
    """The native batched env of an RNP id: ``config.num_envs`` episodes per step."""
    from prune_gym.envs.rnp import RNPVectorEnv
    from prune_gym.registry import get_entry

    return RNPVectorEnv(num_envs=config.num_envs, **{**get_entry(env_id).kwargs, **env_kwargs})


class RNPDQNTrainer:
    """Trains an :class:`RNPQNetwork` on an :class:`~prune_gym.envs.rnp.RNPVectorEnv`; see the module docstring.

    Args:
        env: the batched RNP env (``config.num_envs`` episodes per iteration).
        config: hyperparameters.
        seed: seeds the networks (torch), exploration, replay sampling, the env's resets (numpy)
            and the fine-tuning phases.
    """

    description = "rnp-dqn"

    def __init__(self, env: Any, config: RNPDQNConfig, seed: int = 0):
        self.env, self.config, self.seed = env, config, seed
        # Loading the backbone seeds torch (and pretraining draws from it), so load it before
        # seeding: the networks' initial weights then depend on the seed alone, not on whether the
        # backbone came from this process, the disk cache or a fresh pretraining.
        runtime = env.runtime
        torch.manual_seed(seed)
        self.learner = QLearner(lambda: q_network_for(runtime, config.hidden_size), config)
        self.rng = np.random.default_rng(seed)
        self.decisions = runtime.num_decisions
        obs_size = int(np.prod(env.single_observation_space.shape))
        self.replay = EpisodeReplay(max(1, config.buffer_size // self.decisions), self.decisions, obs_size)
        self.transitions_per_iteration = env.num_envs * self.decisions
        self.total_iterations = math.ceil(config.timesteps / self.transitions_per_iteration)
        self.iteration = 0
        self.metrics: list[dict[str, float]] = []

    @property
    def transitions(self) -> int:
        return self.iteration * self.transitions_per_iteration

    def epsilon(self) -> float:
        return epsilon_at(self.iteration / self.total_iterations, self.config)

    def learning_started(self) -> bool:
        return self.replay.size * self.decisions >= self.config.learning_starts

    def iterate(self) -> dict[str, float]:
        """One batch of ``num_envs`` episodes with ε-greedy actions, stored; then the gradient steps
        and, when due, a backbone fine-tuning phase. Returns the batch's metrics row."""
        env, config = self.env, self.config
        # Reset seeds come from the agent's generator, so the agent's RNG state alone fixes which
        # images come next (a resumed run draws the same ones).
        obs, _ = env.reset(seed=int(self.rng.integers(2**31)))
        decider = RecurrentDecider(self.learner.online, env.runtime.max_width, self.epsilon(), self.rng)
        episode_obs = np.zeros((env.num_envs, self.decisions, obs.shape[1]), dtype=np.float32)
        actions = np.zeros((env.num_envs, self.decisions), dtype=np.int64)
        rewards = np.zeros((env.num_envs, self.decisions), dtype=np.float32)
        for index in range(self.decisions):
            episode_obs[:, index] = obs
            actions[:, index] = decider(obs)
            obs, rewards[:, index], _, _, info = env.step(actions[:, index])
        self.replay.add(episode_obs, actions, rewards)
        losses = [self.learn() for _ in range(config.updates_per_iteration) if self.learning_started()]
        outcome = info["final_info"]
        macs = float(outcome["macs"].mean())
        row = {"return": float(rewards.sum(1).mean()), "accuracy": float(outcome["correct"].mean()),
               "macs": macs, "macs_fraction": macs / float(outcome["macs_full"][0]),
               "loss": float(np.mean(losses)) if losses else math.nan}
        row.update({f"groups_layer{index + 1}": float(actions[:, index].mean() + 1) for index in range(self.decisions)})
        self.iteration += 1
        if config.finetune_every > 0 and self.learning_started() and self.iteration % config.finetune_every == 0:
            row.update(self.finetune())
        return row

    def learn(self) -> float:
        """One gradient step on a sampled batch of episodes."""
        batch = self.replay.sample(self.config.batch_size, self.rng)
        online, target = self.learner.online, self.learner.target
        return self.learner.learn(episode_td_loss(online, target, batch, self.config.gamma, self.config.double_dqn))

    def finetune(self) -> dict[str, float]:
        """Fine-tune the backbone under the current greedy policy; its validation figures as ``finetune_*``."""
        config = self.config
        decider = RecurrentDecider(self.learner.online, self.env.runtime.max_width)
        figures = self.env.finetune_backbone(decider, config.finetune_steps, config.finetune_batch_size,
                                             config.finetune_lr, seed=self.seed * 100_003 + self.iteration)
        return {f"finetune_{key}": float(value) for key, value in figures.items() if key != "wall_s"}

    def train(self, callback: IterationCallback | None = None,
              checkpoint: Callable[[RNPDQNTrainer], None] | None = None) -> list[dict[str, float]]:
        """Run until ``config.timesteps`` transitions; returns one metrics row per iteration."""
        return train_loop(self, callback, checkpoint)

    # -- checkpoint ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly where this one is (tensors and plain data)."""
        return {**trainer_state_dict(self), "backbone": self.env.backbone_state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_trainer_state_dict(self, state)
        self.env.load_backbone_state_dict(state["backbone"])

    def final_model(self) -> dict[str, Any]:
        """What ``final_model.pt`` holds: the online network, the config and the fine-tuned backbone."""
        return {"online": self.learner.online.state_dict(), "config": asdict(self.config),
                "backbone": self.env.backbone_state_dict()}


# ----------------------------------------------------------------------------------------------
# The greedy decision function of a trained network
# ----------------------------------------------------------------------------------------------


def decider_from_final_model(final: dict[str, Any], env: Any, hidden_size: int) -> RecurrentDecider:
    """The greedy decision function of a ``final_model.pt`` (already loaded); also loads the run's
    fine-tuned backbone into ``env``, whose runtime then classifies as the run's did."""
    network = q_network_for(env.runtime, hidden_size)
    network.load_state_dict(final["online"])
    env.load_backbone_state_dict(final["backbone"])
    return RecurrentDecider(network.eval(), env.runtime.max_width)


def narrowest_width_decider(runtime: Any, hidden_size: int = 128, seed: int = 0) -> RecurrentDecider:
    """``prune-gym bench``'s default policy when no run is given: a decision network of the default
    architecture and size (random weights from ``seed``) whose decoder bias favours action 0 by 1000,
    so it always picks 1 group: the narrowest paths, with a real decision network's time and MACs."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    network = q_network_for(runtime, hidden_size).eval()
    torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        network.decoder.bias[0] += 1000.0
    return RecurrentDecider(network, runtime.max_width)

